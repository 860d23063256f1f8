// Parses each AsyncAPI document named on the command line with the AsyncAPI project's
// parser, resolving its relative $refs (the JSON Schemas beside it). Prints every
// diagnostic; exits 1 when any is an error or a warning, or a document does not parse.
//
//   NODE_PATH=<node_modules with @asyncapi/parser> node asyncapi-check.cjs DOC.json...
const { Parser, fromFile } = require('@asyncapi/parser');
const SEVERITY = ['error', 'warning', 'info', 'hint'];

(async () => {
  const parser = new Parser();
  let failed = false;
  for (const path of process.argv.slice(2)) {
    const { document, diagnostics } = await fromFile(parser, path).parse();
    for (const d of diagnostics) {
      console.log(`${path}: ${SEVERITY[d.severity]} ${d.code}: ${d.message} at /${d.path.join('/')}`);
      if (d.severity <= 1) failed = true;
    }
    if (!document) failed = true;
    const channels = document ? document.channels().length : 0;
    const messages = document ? document.components().messages().length : 0;
    console.log(`${path}: ${document ? 'parsed' : 'NOT parsed'}, ${channels} channels, ${messages} messages`);
  }
  process.exit(failed ? 1 : 0);
})();
