// The peer the gateway is compared with (benches/before-after.sh, PEER=1): a WhatsApp
// webhook receiver as a Node team writes one with Express and kafkajs. It checks
// X-Hub-Signature-256 over the raw body (timing-safe), parses the JSON, produces one record
// per change to `whatsapp.<field>` (key: the entry id, acks from all replicas, kafkajs's
// default producer: its idempotent one fails on tansu's InitProducerId answer) and answers
// 200 once Kafka has them: the gateway's `kafka` ack mode, done the usual Node way. Topics
// are created at start (the broker creates none).
//
//   NODE_PATH=<express node_modules>:<kafkajs node_modules> \
//     node benches/peer/express.js PORT BROKERS SECRET
const crypto = require("crypto");
const express = require("express");
const { Kafka, logLevel } = require("kafkajs");

const [port, brokers, secret] = process.argv.slice(2);
const FIELDS = ["messages", "message_template_status_update", "other"];

async function main() {
  const kafka = new Kafka({ clientId: "express-peer", brokers: brokers.split(","), logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: FIELDS.map((field) => ({ topic: `whatsapp.${field}`, numPartitions: 3 })),
  });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();

  const app = express();
  app.post("/webhook", express.raw({ type: "*/*", limit: "3mb" }), async (req, res) => {
    const header = req.get("x-hub-signature-256") || "";
    const expected = "sha256=" + crypto.createHmac("sha256", secret).update(req.body).digest("hex");
    if (header.length !== expected.length || !crypto.timingSafeEqual(Buffer.from(header), Buffer.from(expected))) {
      return res.sendStatus(401);
    }
    let body;
    try {
      body = JSON.parse(req.body.toString("utf8"));
    } catch {
      return res.sendStatus(200); // authentic but not JSON: acknowledged, as Meta expects
    }
    const byTopic = new Map();
    for (const entry of body.entry || []) {
      for (const change of entry.changes || []) {
        const field = FIELDS.includes(change.field) ? change.field : "other";
        const topic = `whatsapp.${field}`;
        if (!byTopic.has(topic)) byTopic.set(topic, []);
        byTopic.get(topic).push({ key: String(entry.id), value: JSON.stringify({ entry_id: entry.id, field: change.field, value: change.value }) });
      }
    }
    try {
      await producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
      res.sendStatus(200);
    } catch (error) {
      res.sendStatus(503);
    }
  });
  app.listen(Number(port), "127.0.0.1");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
