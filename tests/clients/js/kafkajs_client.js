// Conformance run for KafkaJS: create a topic with the admin client, produce with every codec
// (gzip built in; snappy, lz4, zstd through the kafkajs-snappy, kafkajs-lz4 and @kafkajs/zstd
// plugins) to explicit partitions, fetch each partition from the beginning, and check
// admin.fetchTopicOffsets / fetchTopicOffsetsByTimestamp.
//
// KafkaJS has no manual partition assignment: its consumer always joins a group, which the
// broker does not support yet. So records are read with KafkaJS's own cluster/broker layer
// (its unmodified Fetch v11 encoder and record-batch decoder), filtering records before the
// fetch offset exactly as its consumer does.
//
// Usage: node tests/clients/js/kafkajs_client.js HOST:PORT [--topic T] [--no-create]
//        [--codecs none,gzip,...] [--timeout SECONDS]
'use strict'

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const LZ4Codec = require('kafkajs-lz4')
const ZstdCodec = require('@kafkajs/zstd')

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec
CompressionCodecs[CompressionTypes.ZSTD] = ZstdCodec()

const CODEC_TYPES = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
}
const PARTITIONS = 3
const PER_CODEC = 4
const T0 = (Math.floor(Date.now() / 1000) - 3600) * 1000

// The same plan as tests/clients/python/plan.py.
const tsOf = offset => T0 + offset * 1000
const keyOf = (codec, p, j) => Buffer.from(`key-${codec}-${p}-${j}`)
const valueOf = (codec, p, j) =>
  Buffer.concat([
    Buffer.from(`value-${codec}-${p}-${j}|`),
    Buffer.from('0123456789abcdef'.repeat(8 * j)),
    Buffer.from([j, 0, 255]),
  ])
// KafkaJS represents headers as an object; a repeated key becomes an array, in order.
const headersOf = (codec, p, j) => ({
  codec: Buffer.from(codec),
  pj: Buffer.from(`${p}-${j}`),
  dup: [Buffer.from('first'), Buffer.from('second')],
  empty: Buffer.alloc(0),
})

function parseArgs(argv) {
  const args = {
    bootstrap: null,
    topic: `conf-js-${Date.now()}`,
    create: true,
    codecs: Object.keys(CODEC_TYPES),
    timeout: 60,
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--topic') args.topic = argv[++i]
    else if (a === '--no-create') args.create = false
    else if (a === '--codecs') args.codecs = argv[++i].split(',').filter(Boolean)
    else if (a === '--timeout') args.timeout = Number(argv[++i])
    else if (!a.startsWith('--') && args.bootstrap === null) args.bootstrap = a
    else throw new Error(`unknown argument ${a}`)
  }
  if (!args.bootstrap) throw new Error('usage: kafkajs_client.js HOST:PORT [--topic T] [--no-create]')
  for (const c of args.codecs) if (!(c in CODEC_TYPES)) throw new Error(`unknown codec ${c}`)
  return args
}

// Renders values for mismatch messages: buffers as strings when printable.
function show(v) {
  return JSON.stringify(v, (k, x) => {
    if (x && x.type === 'Buffer' && Array.isArray(x.data)) {
      const b = Buffer.from(x.data)
      return /^[\x20-\x7e]*$/.test(b.toString('latin1')) ? `b'${b.toString('latin1')}'` : `hex:${b.toString('hex')}`
    }
    return x
  })
}

class Report {
  constructor(client) {
    this.client = client
    this.errors = []
    this.checks = 0
  }
  check(ok, what) {
    this.checks++
    if (!ok) {
      this.errors.push(what)
      console.log(`MISMATCH ${what}`)
    }
    return ok
  }
  eq(what, expected, actual) {
    const e = show(expected)
    const a = show(actual)
    return this.check(e === a, `${what}: expected ${e}, got ${a}`)
  }
  step(msg) {
    console.log(`[${this.client}] ${msg}`)
  }
  finish() {
    if (this.errors.length) {
      console.log(`FAILED ${this.client}: ${this.errors.length} of ${this.checks} checks failed`)
      for (const e of this.errors) console.log(`  - ${e}`)
      process.exit(1)
    }
    console.log(`OK ${this.client}: ${this.checks} checks passed`)
  }
}

function normalizeHeaders(h) {
  const out = {}
  for (const k of Object.keys(h || {}).sort()) out[k] = h[k]
  return out
}

async function main() {
  const args = parseArgs(process.argv.slice(2))
  const version = require('kafkajs/package.json').version
  const report = new Report(`kafkajs ${version}`)
  report.step(`bootstrap ${args.bootstrap}, topic ${args.topic}`)
  const total = args.codecs.length * PER_CODEC
  const kafka = new Kafka({
    clientId: 'runnel-conformance-kafkajs',
    brokers: [args.bootstrap],
    logLevel: logLevel.WARN,
    requestTimeout: args.timeout * 1000,
    retry: { retries: 3 },
  })

  const admin = kafka.admin()
  await admin.connect()
  if (args.create) {
    report.step('create topic with 3 partitions')
    const created = await admin.createTopics({
      topics: [{ topic: args.topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
      waitForLeaders: true,
      timeout: args.timeout * 1000,
    })
    report.eq('createTopics returned', true, created)
  }
  const producer = kafka.producer({ idempotent: false, allowAutoTopicCreation: !args.create })
  await producer.connect()
  for (const [ci, codec] of args.codecs.entries()) {
    report.step(`produce ${PER_CODEC} records to each partition with compression ${codec}`)
    const messages = []
    for (let p = 0; p < PARTITIONS; p++) {
      for (let j = 0; j < PER_CODEC; j++) {
        messages.push({
          partition: p,
          key: keyOf(codec, p, j),
          value: valueOf(codec, p, j),
          headers: headersOf(codec, p, j),
          timestamp: String(tsOf(ci * PER_CODEC + j)),
        })
      }
    }
    const result = await producer.send({
      topic: args.topic,
      acks: -1,
      compression: CODEC_TYPES[codec],
      messages,
    })
    const byPartition = {}
    for (const r of result) byPartition[r.partition] = r
    for (let p = 0; p < PARTITIONS; p++) {
      const r = byPartition[p]
      if (!report.check(r !== undefined, `${codec}: no produce result for partition ${p}`)) continue
      report.eq(`${codec}: produce errorCode, partition ${p}`, 0, r.errorCode)
      report.eq(`${codec}: produce baseOffset, partition ${p}`, String(ci * PER_CODEC), String(r.baseOffset))
    }
  }
  await producer.disconnect()

  const md = await admin.fetchTopicMetadata({ topics: [args.topic] })
  report.check(
    md.topics[0].partitions.length >= PARTITIONS,
    `metadata: expected >= ${PARTITIONS} partitions, got ${md.topics[0].partitions.length}`
  )


  // Fetch through KafkaJS's own cluster layer (see the header comment).
  const createCluster = Object.getOwnPropertySymbols(kafka).find(
    s => s.description === 'private:Kafka:createCluster'
  )
  const cluster = kafka[createCluster]({ isolationLevel: 1 })
  await cluster.connect()
  await cluster.addTargetTopic(args.topic)
  await cluster.refreshMetadata()

  async function consume(p, start) {
    const leaders = cluster.findLeaderForPartitions(args.topic, [p])
    const nodeId = Object.keys(leaders)[0]
    const broker = await cluster.findBroker({ nodeId })
    const got = []
    let offset = start
    const deadline = Date.now() + args.timeout * 1000
    while (offset < total && Date.now() < deadline) {
      const resp = await broker.fetch({
        replicaId: -1,
        isolationLevel: 1, // READ_COMMITTED, as the KafkaJS consumer sends
        maxWaitTime: 100,
        minBytes: 1,
        maxBytes: 1 << 20,
        topics: [{ topic: args.topic, partitions: [{ partition: p, fetchOffset: String(offset), maxBytes: 1 << 20 }] }],
      })
      const part = resp.responses[0].partitions[0]
      if (!report.eq(`partition ${p}: fetch errorCode at offset ${offset}`, 0, part.errorCode)) break
      report.eq(`partition ${p}: fetch high watermark`, String(total), String(part.highWatermark))
      report.eq(`partition ${p}: last stable offset`, String(total), String(part.lastStableOffset))
      for (const m of part.messages) {
        if (BigInt(m.offset) < BigInt(offset)) continue // the consumer skips a batch's head too
        got.push({
          offset: Number(m.offset),
          key: m.key,
          value: m.value,
          headers: normalizeHeaders(m.headers),
          timestamp: String(m.timestamp),
        })
      }
      if (got.length) offset = got[got.length - 1].offset + 1
    }
    return got
  }

  function checkRecords(p, got, start) {
    report.eq(`partition ${p}: number of records from offset ${start}`, total - start, got.length)
    for (let i = 0; i < got.length && start + i < total; i++) {
      const off = start + i
      const ci = Math.floor(off / PER_CODEC)
      const j = off % PER_CODEC
      const codec = args.codecs[ci]
      const g = got[i]
      const where = `partition ${p} record #${off} (${codec}, j=${j})`
      report.eq(`${where} offset`, off, g.offset)
      report.eq(`${where} key`, keyOf(codec, p, j), g.key)
      report.eq(`${where} value`, valueOf(codec, p, j), g.value)
      report.eq(`${where} headers`, normalizeHeaders(headersOf(codec, p, j)), g.headers)
      report.eq(`${where} timestamp`, String(tsOf(off)), g.timestamp)
    }
  }

  for (let p = 0; p < PARTITIONS; p++) {
    report.step(`fetch partition ${p} from the beginning`)
    checkRecords(p, await consume(p, 0), 0)
    const mid = PER_CODEC + 1
    if (mid < total) {
      report.step(`fetch partition ${p} from offset ${mid} (inside a compressed batch)`)
      checkRecords(p, await consume(p, mid), mid)
    }
  }
  await cluster.disconnect()

  report.step('fetchTopicOffsets / fetchTopicOffsetsByTimestamp')
  const offsets = await admin.fetchTopicOffsets(args.topic)
  for (let p = 0; p < PARTITIONS; p++) {
    const o = offsets.find(x => x.partition === p)
    if (!report.check(o !== undefined, `fetchTopicOffsets: no partition ${p}`)) continue
    report.eq(`partition ${p}: low`, '0', String(o.low))
    report.eq(`partition ${p}: high`, String(total), String(o.high))
  }
  // Kafka answers the first offset with timestamp >= the one asked for; past the last record
  // KafkaJS substitutes the high watermark for the broker's -1.
  const cases = [[tsOf(0) - 10000, 0], [tsOf(0), 0]]
  for (const k of [...new Set([1, PER_CODEC, PER_CODEC + 1, total - 1])].sort((a, b) => a - b)) {
    if (k > 0 && k < total) {
      cases.push([tsOf(k), k])
      cases.push([tsOf(k) - 500, k])
    }
  }
  cases.push([tsOf(total - 1) + 500, total])
  for (const [ts, want] of cases) {
    const res = await admin.fetchTopicOffsetsByTimestamp(args.topic, ts)
    for (let p = 0; p < PARTITIONS; p++) {
      const o = res.find(x => x.partition === p)
      report.eq(`partition ${p}: offset for timestamp ${ts} (T0+${ts - T0}ms)`, String(want), o && String(o.offset))
    }
  }
  if (args.create) {
    report.step('DeleteTopics: create and delete a second topic')
    const doomed = `${args.topic}-deleted`
    await admin.createTopics({ topics: [{ topic: doomed, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true })
    try {
      await admin.deleteTopics({ topics: [doomed], timeout: args.timeout * 1000 })
    } catch (e) {
      report.check(false, `deleteTopics(${doomed}) threw ${e}`)
    }
    const deadline = Date.now() + args.timeout * 1000
    let topics = await admin.listTopics()
    while (topics.includes(doomed) && Date.now() < deadline) {
      await new Promise(r => setTimeout(r, 100))
      topics = await admin.listTopics()
    }
    report.check(!topics.includes(doomed), `${doomed} still listed after delete`)
    report.check(topics.includes(args.topic), `${args.topic} gone after deleting another topic`)
  }
  await admin.disconnect()
  report.finish()
}

main().catch(e => {
  console.log(`FAILED kafkajs: ${e && e.stack ? e.stack : e}`)
  process.exit(1)
})
