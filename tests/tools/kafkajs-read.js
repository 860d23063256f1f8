// Reads every record of the given topics with kafkajs and its default settings (no codec
// added: what a Node team gets from `npm install kafkajs`), and prints one JSON line per
// record: topic, partition, offset, key, headers and value as text. A record served twice
// (same topic, partition and offset) is printed once. Exits once COUNT records were read,
// or with status 1 after SECONDS_LIMIT (default 60) or on the first error.
//
//   NODE_PATH=<dir with node_modules> node tests/tools/kafkajs-read.js BROKERS COUNT TOPIC...
const { Kafka, logLevel } = require("kafkajs");

const [brokers, count, ...topics] = process.argv.slice(2);
const wanted = Number(count);
const seconds = Number(process.env.SECONDS_LIMIT || 60);

async function main() {
  const kafka = new Kafka({ clientId: "kafkajs-read", brokers: brokers.split(","), logLevel: logLevel.WARN });
  const consumer = kafka.consumer({ groupId: `kafkajs-read-${process.pid}` });
  await consumer.connect();
  for (const topic of topics) {
    await consumer.subscribe({ topic, fromBeginning: true });
  }
  let read = 0;
  const positions = new Set();
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${read} of ${wanted} records in ${seconds} s`)), seconds * 1000);
    consumer
      .run({
        eachMessage: async ({ topic, partition, message }) => {
          const position = `${topic}/${partition}/${message.offset}`;
          if (positions.has(position)) {
            return;
          }
          positions.add(position);
          const headers = {};
          for (const [name, value] of Object.entries(message.headers || {})) {
            headers[name] = value === null || value === undefined ? null : value.toString("utf8");
          }
          process.stdout.write(
            JSON.stringify({
              topic,
              partition,
              offset: message.offset,
              key: message.key === null ? null : message.key.toString("utf8"),
              headers,
              value: message.value.toString("utf8"),
            }) + "\n",
          );
          read += 1;
          if (read >= wanted) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
    consumer.on(consumer.events.CRASH, (event) => reject(event.payload.error));
  });
  try {
    await done;
  } finally {
    await consumer.disconnect();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`kafkajs-read: ${error && error.stack ? error.stack : error}\n`);
    process.exit(1);
  },
);
