// Consumer-group member and idempotent producer for KafkaJS, driven by tests/tests/groups.rs.
// Implements the `member` and `produce` sub-commands and the stdout line protocol of
// tests/clients/GROUPS.md (READY / ASSIGN / REC / COMMIT / CLOSED, and ACKED); KafkaJS's own
// logs go to stderr.
//
// member: consumer.run with eachBatch, auto-resolve and auto-commit off. KafkaJS hands over one
// partition's batch at a time; after printing its records the member commits the next offset of
// that partition once (no retries, so a commit failing during a rebalance does not hold up the
// rejoin) and prints COMMIT only on success. ASSIGN comes from the GROUP_JOIN instrumentation
// event, i.e. after every join/sync; KafkaJS only has eager assignors, so --strategy cooperative
// is rejected (exit 2).
//
// produce: an idempotent producer (acks -1, one request in flight) sends the records in chunks,
// each send() carrying several records per partition, and prints ACKED from the returned
// RecordMetadata (base offset + position of the record among that partition's records of the
// call).
//
// Usage: node tests/clients/js/kafkajs_group.js member --bootstrap HOST:PORT --topic T --group G
//          --name NAME [--session-timeout-ms 6000] [--strategy default|cooperative]
//        node tests/clients/js/kafkajs_group.js produce --bootstrap HOST:PORT --topic T
//          --count N --partitions P [--prefix S]
'use strict'

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const { Kafka, logLevel } = require('kafkajs')

const CHUNK = 40 // records per producer.send() call

// One protocol line on stdout. process.stdout is synchronous for files and pipes on Linux,
// so the line is out before the next statement runs.
function out(line) {
  process.stdout.write(line + '\n')
}

function log(msg) {
  process.stderr.write(`[kafkajs_group] ${msg}\n`)
}

// KafkaJS's default logger writes to stdout (console.info); send everything to stderr.
const stderrLogCreator = () => ({ namespace, level, label, log: entry }) => {
  const { message, timestamp, logger, ...extra } = entry
  const rest = Object.keys(extra).length ? ` ${JSON.stringify(extra)}` : ''
  process.stderr.write(`${timestamp} ${label} [${namespace}] ${message}${rest}\n`)
}

function usage(msg) {
  process.stderr.write(
    `${msg}\n` +
      'usage: kafkajs_group.js member --bootstrap HOST:PORT --topic T --group G --name NAME ' +
      '[--session-timeout-ms MS] [--strategy default|cooperative]\n' +
      '       kafkajs_group.js produce --bootstrap HOST:PORT --topic T --count N --partitions P ' +
      '[--prefix S]\n'
  )
  process.exit(2)
}

function parseArgs(argv) {
  const command = argv[0]
  const known = {
    member: ['bootstrap', 'topic', 'group', 'name', 'session-timeout-ms', 'strategy'],
    produce: ['bootstrap', 'topic', 'count', 'partitions', 'prefix', 'name'],
  }
  if (!(command in known)) usage(`unknown sub-command ${command}`)
  const args = { command, 'session-timeout-ms': '6000', strategy: 'default', prefix: 'idem' }
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]
    const name = a.startsWith('--') ? a.slice(2) : null
    if (!name || !known[command].includes(name) || i + 1 >= argv.length) usage(`bad argument ${a}`)
    args[name] = argv[++i]
  }
  const required =
    command === 'member' ? ['bootstrap', 'topic', 'group', 'name'] : ['bootstrap', 'topic', 'count', 'partitions']
  for (const r of required) if (args[r] === undefined) usage(`--${r} is required`)
  return args
}

async function member(args) {
  if (args.strategy === 'cooperative') {
    log('KafkaJS has no cooperative-sticky assignor (only eager assignors): --strategy cooperative is not supported')
    process.exit(2)
  }
  if (args.strategy !== 'default') usage(`unknown strategy ${args.strategy}`)
  const topic = args.topic
  const kafka = new Kafka({
    clientId: args.name,
    brokers: [args.bootstrap],
    logLevel: logLevel.INFO,
    logCreator: stderrLogCreator,
  })
  const consumer = kafka.consumer({
    groupId: args.group,
    sessionTimeout: Number(args['session-timeout-ms']),
    heartbeatInterval: 1000,
    // KafkaJS heartbeats between fetches; a short fetch wait keeps an idle member heartbeating
    // (and noticing rebalances) about once a second instead of every 5 s.
    maxWaitTimeInMs: 1000,
  })

  let stopping = false
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    const parts = ((payload.memberAssignment || {})[topic] || []).slice().sort((a, b) => a - b)
    log(`joined group ${payload.groupId} as ${payload.memberId} (leader ${payload.isLeader}, ${payload.duration} ms)`)
    out(`ASSIGN ${parts.length ? parts.join(',') : '-'}`)
  })
  consumer.on(consumer.events.REBALANCING, ({ payload }) => {
    log(`group ${payload.groupId} is rebalancing, rejoining`)
  })
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    log(`consumer crashed: ${payload.error && payload.error.stack ? payload.error.stack : payload.error} (restart: ${payload.restart})`)
    if (!payload.restart && !stopping) process.exit(1)
  })

  const stop = async () => {
    if (stopping) return
    stopping = true
    log('SIGTERM: disconnecting (leaves the group)')
    try {
      await consumer.disconnect()
    } catch (e) {
      log(`disconnect failed: ${e && e.stack ? e.stack : e}`)
      process.exit(1)
    }
    out('CLOSED')
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)

  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  out('READY')
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, commitOffsetsIfNecessary }) => {
      if (batch.messages.length === 0) return
      for (const m of batch.messages) {
        out(`REC ${batch.partition} ${m.offset} ${m.value === null ? '' : m.value.toString('utf8')}`)
        resolveOffset(m.offset)
      }
      const next = (BigInt(batch.messages[batch.messages.length - 1].offset) + 1n).toString()
      try {
        await commitOffsetsIfNecessary({
          topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next }] }],
        })
        out(`COMMIT ${batch.partition} ${next}`)
      } catch (e) {
        log(`commit of partition ${batch.partition} at ${next} failed: ${e.type || e.name}: ${e.message}`)
      }
    },
  })
}

async function produce(args) {
  const count = Number(args.count)
  const partitions = Number(args.partitions)
  if (!(count >= 0 && partitions > 0)) usage('--count and --partitions must be numbers')
  const kafka = new Kafka({
    clientId: args.name || 'runnel-group-kafkajs-producer',
    brokers: [args.bootstrap],
    logLevel: logLevel.INFO,
    logCreator: stderrLogCreator,
    requestTimeout: 5000,
  })
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    retry: { retries: 100, initialRetryTime: 100, maxRetryTime: 1000 },
  })
  await producer.connect()
  for (let start = 0; start < count; start += CHUNK) {
    const end = Math.min(count, start + CHUNK)
    const messages = []
    const valuesPerPartition = new Map()
    for (let i = start; i < end; i++) {
      const p = i % partitions
      const value = `${args.prefix}-${i}`
      messages.push({ partition: p, key: `k-${i}`, value })
      if (!valuesPerPartition.has(p)) valuesPerPartition.set(p, [])
      valuesPerPartition.get(p).push(value)
    }
    const metadata = await producer.send({ topic: args.topic, acks: -1, messages })
    const byPartition = new Map(metadata.map(r => [r.partition, r]))
    for (const p of [...valuesPerPartition.keys()].sort((a, b) => a - b)) {
      const r = byPartition.get(p)
      if (!r || r.errorCode !== 0) {
        log(`no successful produce result for partition ${p}: ${JSON.stringify(r)}`)
        process.exit(1)
      }
      const base = BigInt(r.baseOffset)
      valuesPerPartition.get(p).forEach((value, j) => out(`ACKED ${p} ${base + BigInt(j)} ${value}`))
    }
  }
  await producer.disconnect()
}

const args = parseArgs(process.argv.slice(2))
;(args.command === 'member' ? member(args) : produce(args)).catch(e => {
  log(`failed: ${e && e.stack ? e.stack : e}`)
  process.exit(1)
})
