// Control batches with KafkaJS's consumer (it always joins a group): subscribe to TOPIC from
// the beginning, read until the partition's end (it ends with a control batch), then produce
// one record and read on until it arrives — a consumer stuck at the trailing control batch
// (tulios/kafkajs#403) never sees it. Driven by tests/tests/control_batches.rs.
//
// Prints `RECORD <offset> <value>` per record, `POSITION <n>` when a processed batch reaches
// the end (the offset after its last message, control records included) and `PRODUCED
// <offset>`; exits 1 with `STALLED ...` if that does not happen in time.
//
// Usage: node tests/clients/js/control_batches_kafkajs.js HOST:PORT TOPIC END
'use strict'

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const { Kafka, logLevel } = require('kafkajs')
const { version } = require('kafkajs/package.json')

const TIMEOUT_MS = 30000
const [bootstrap, topic, endArg] = process.argv.slice(2)
const end = Number(endArg)

async function main() {
  console.log(`[kafkajs ${version}] bootstrap ${bootstrap}, topic ${topic}, end ${end}`)
  const kafka = new Kafka({
    clientId: 'runnel-control-batches-kafkajs',
    brokers: [bootstrap],
    logLevel: logLevel.NOTHING,
  })
  const consumer = kafka.consumer({
    groupId: `runnel-control-batches-${topic}`,
    maxWaitTimeInMs: 100,
  })
  let position = 0
  const waiters = []
  const reached = target =>
    new Promise((resolve, reject) => {
      if (position >= target) return resolve()
      const timer = setTimeout(
        () => reject(new Error(`STALLED at position ${position}, end ${target}`)),
        TIMEOUT_MS
      )
      waiters.push({ target, resolve, timer })
    })
  const advance = to => {
    if (to <= position) return
    position = to
    for (const w of waiters.filter(w => position >= w.target)) {
      clearTimeout(w.timer)
      waiters.splice(waiters.indexOf(w), 1)
      w.resolve()
    }
  }
  consumer.on(consumer.events.END_BATCH_PROCESS, e => {
    if (e.payload.topic === topic && e.payload.partition === 0) {
      advance(Number(e.payload.lastOffset) + 1)
    }
  })

  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      console.log(`RECORD ${message.offset} ${message.value.toString()}`)
      if (partition === 0) advance(Number(message.offset) + 1)
    },
  })

  await reached(end)
  console.log(`POSITION ${position}`)
  const producer = kafka.producer()
  await producer.connect()
  const [md] = await producer.send({ topic, acks: -1, messages: [{ value: 'after', partition: 0 }] })
  await producer.disconnect()
  const produced = Number(md.baseOffset)
  console.log(`PRODUCED ${produced}`)
  await reached(produced + 1)
  console.log(`POSITION ${position}`)
  await consumer.disconnect()
}

main().then(
  () => process.exit(0),
  e => {
    console.log(e.message.startsWith('STALLED') ? e.message : `ERROR ${e.stack || e}`)
    process.exit(1)
  }
)
