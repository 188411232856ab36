// A trustee peer written in JavaScript (js-libp2p), speaking the protocol of docs/protocol.md with the
// Python trustees: TCP + Noise + yamux, GossipSub v1.1 on the topic tvote/votes/1, strict signing, message
// id = BLAKE3(data). Its libp2p identity is its vote key, so an operator admits it like any trustee
// (AdmitMember(node_id, vote_key, peer_id)).
//
//   node peer.mjs --key-file K --node-id js-1 --members members.json --connect /ip4/.../p2p/... [--connect ...]
//
// It verifies every vote it receives (lib/edge.mjs: the same edge rules as a trustee; @noble/ed25519) and
// takes commands as JSON lines on stdin, answering each with one JSON line on stdout (events too):
//   {"cmd":"status"}                                   connections, topic subscribers, mesh
//   {"cmd":"dial","addr":"/ip4/.../p2p/..."}            connect to one more peer
//   {"cmd":"vote","tx_id":"t","value":1}               sign (R2) and publish one vote in a batch (a value beyond
//                                                      2^53 as a string of digits)
//       "offset_ms": -400000                           ... signed with a timestamp that far from now
//       "as": "trustee-1"                              ... in another member's name (a forgery, R7)
//   {"cmd":"votes","ballots":[["t",1],...]}             several of our votes in one batch
//   {"cmd":"raw","hex":"..."}                          publish these bytes as they are
//   {"cmd":"many","count":1025}                        one batch of count copies of a fresh vote
//   {"cmd":"pad","bytes":600000}                       one vote, the batch padded with spaces to over that size
//   {"cmd":"flood","count":100,"rate":20,"per_batch":5,"prefix":"lat"}   a paced stream of batches
//       "judge": false                                 ... meanwhile accepting what arrives unchecked (a pure sender)
//   {"cmd":"rpc","hex":"...","from":"12D3...","sign":true}   a hand-made pubsub RPC on a stream of its own to each
//                                                      trustee: these bytes as data, `from` that peer id (default
//                                                      ours), signed by OUR key (or not): what GossipSub would never send
//   {"cmd":"received"}                                 what we received: per author and node, verified or not
//   {"cmd":"quit"}
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { gossipsub, TopicValidatorResult } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { judge } from './lib/edge.mjs'
import * as p from './lib/protocol.mjs'

const { values: opt } = parseArgs({
  options: {
    'key-file': { type: 'string' },
    'node-id': { type: 'string' },
    members: { type: 'string' },
    connect: { type: 'string', multiple: true, default: [] },
    topic: { type: 'string', default: p.TOPIC },
    'dial-timeout': { type: 'string', default: '30' },
  },
})
// BigInt as its exact digits (a u64 value is beyond a JavaScript number)
const out = (obj) => process.stdout.write(JSON.stringify(obj, (_, v) => (typeof v === 'bigint' ? JSON.rawJSON(v.toString()) : v)) + '\n')

const seedText = readFileSync(opt['key-file'], 'utf8').trim()
const seed = p.unhex(seedText)
if (seed.length !== 32) throw new Error('a key file holds a 32-byte Ed25519 seed in hex')
const nodeId = opt['node-id']
const myKey = p.publicKey(seed)
// node_id -> { peerId, key, banned, active }: who the edge rules consider a member
const members = new Map()
for (const m of opt.members ? JSON.parse(readFileSync(opt.members, 'utf8')) : []) {
  const key = p.unhex(m.public_key)
  members.set(m.node_id, { peerId: p.peerId(key), key, banned: !!m.banned, active: true })
}

const node = await createLibp2p({
  privateKey: await generateKeyPairFromSeed('Ed25519', seed),
  addresses: { listen: [] }, // we dial the trustees; they never need to dial us
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    pubsub: gossipsub({
      globalSignaturePolicy: 'StrictSign',
      msgIdFn: (msg) => p.messageId(msg.data), // docs/protocol.md: BLAKE3(data), whoever sent it
      fallbackToFloodsub: false,
      floodPublish: true, // our own messages go to every subscribed peer, not only the mesh
      emitSelf: false,
      allowPublishToZeroTopicPeers: false,
      D: 6, Dlo: 4, Dhi: 12, heartbeatInterval: 1000,
    }),
  },
})
if (node.peerId.toString() !== p.peerId(myKey)) throw new Error('libp2p derived another peer id than the protocol')
const pubsub = node.services.pubsub

// --- receiving: every message is judged by the edge rules before GossipSub forwards it ---------------------
const received = new Map() // `${author} ${node_id}` -> { author, node_id, verified, rejected, latencies }
const counters = {}
let judging = true // off only while a flood with "judge": false runs (a sender that does nothing else, for timing)
pubsub.topicValidators.set(opt.topic, (from, msg) => {
  if (!judging) return TopicValidatorResult.Accept
  const author = from.toString()
  const now = Date.now()
  const verdict = judge(members, author, msg.data, now)
  for (const [k, n] of Object.entries(verdict.counters)) counters[k] = (counters[k] ?? 0) + n
  for (const v of verdict.votes) {
    const who = `${author} ${v.node_id}`
    const r = received.get(who) ?? { author, node_id: v.node_id, verified: 0, rejected: 0, latencies: [] }
    const voter = members.get(v.node_id)
    if (voter && p.voteVerifies(v, voter.key)) {
      r.verified++
      r.latencies.push(now - Number(v.timestamp_ms))
    } else {
      r.rejected++
    }
    received.set(who, r)
  }
  return verdict.accepted ? TopicValidatorResult.Accept : TopicValidatorResult.Reject
})
pubsub.subscribe(opt.topic)

node.addEventListener('peer:disconnect', (e) => out({ event: 'disconnected', peer: e.detail.toString() }))

// --- joining: dial every trustee given until connected (the trustees admit us once the log does) -------------
const targets = opt.connect.map((a) => multiaddr(a))
const deadline = Date.now() + Number(opt['dial-timeout']) * 1000
const refusals = {}
for (;;) {
  const open = new Set(node.getConnections().map((c) => c.remotePeer.toString()))
  const missing = targets.filter((t) => !open.has(t.getComponents().find((c) => c.name === 'p2p')?.value))
  if (!missing.length) break
  if (Date.now() > deadline) break
  await Promise.all(missing.map(async (t) => {
    try {
      await node.dial(t, { signal: AbortSignal.timeout(5000) })
    } catch (e) {
      refusals[t.toString()] = e.message
    }
  }))
  await new Promise((r) => setTimeout(r, 300))
}
const connected = () => node.getConnections().map((c) => c.remotePeer.toString())
for (const t of targets) { // keep the refusals of the trustees that never let us in
  if (connected().includes(t.getComponents().find((c) => c.name === 'p2p')?.value)) delete refusals[t.toString()]
}
// The mesh: wait until every trustee we are connected to is subscribed to the topic, then one heartbeat.
while (Date.now() < deadline && connected().length &&
       !connected().every((id) => pubsub.getSubscribers(opt.topic).some((s) => s.toString() === id))) {
  await new Promise((r) => setTimeout(r, 100))
}
await new Promise((r) => setTimeout(r, 1200))
out({ event: 'ready', node_id: nodeId, peer_id: node.peerId.toString(), connected: connected(),
  subscribers: pubsub.getSubscribers(opt.topic).map(String), refusals })

// --- publishing -----------------------------------------------------------------------------------------
let counter = 0
const fresh = (txId, value, offsetMs = 0, as = nodeId) => {
  const v = { tx_id: txId, value: BigInt(value), node_id: as, timestamp_ms: BigInt(Date.now() + offsetMs) }
  return { ...v, signature: p.hex(p.sign(p.signingBytes(v), seed)) } // with OUR key, whatever node_id says
}
async function publish(payload) {
  try {
    const r = await pubsub.publish(opt.topic, payload)
    return { recipients: r.recipients.map(String), msg_id: p.hex(p.messageId(payload)), bytes: payload.length }
  } catch (e) {
    return { error: e.message, msg_id: p.hex(p.messageId(payload)), bytes: payload.length }
  }
}

async function handle(c) {
  switch (c.cmd) {
    case 'dial':
      await node.dial(multiaddr(c.addr), { signal: AbortSignal.timeout(5000) })
      return { connected: connected() }
    case 'rpc':
      return rawRpc(c)
    case 'status':
      return { connected: connected(), subscribers: pubsub.getSubscribers(opt.topic).map(String),
        mesh: pubsub.getMeshPeers(opt.topic).map(String), counters }
    case 'vote': {
      const v = fresh(c.tx_id, c.value, c.offset_ms ?? 0, c.as ?? nodeId)
      return { vote: p.parse(p.voteJson(v)), ...(await publish(p.encodeBatch([v]))) }
    }
    case 'votes': {
      const vs = c.ballots.map(([tx, value]) => fresh(tx, value))
      return { votes: vs.map((v) => p.parse(p.voteJson(v))), ...(await publish(p.encodeBatch(vs))) }
    }
    case 'raw':
      return publish(p.unhex(c.hex))
    case 'many':
      return publish(p.encodeBatch(Array(c.count).fill(fresh(c.tx_id ?? `many-${++counter}`, 1))))
    case 'pad': {
      const vote = p.voteJson(fresh(c.tx_id ?? `pad-${++counter}`, 1))
      return publish(new TextEncoder().encode('{"v":1,"votes":[' + ' '.repeat(c.bytes) + vote + ']}'))
    }
    case 'flood': {
      judging = c.judge !== false
      const interval = 1000 / c.rate
      const start = performance.now()
      const results = { sent: 0, errors: 0 }
      for (let i = 0; i < c.count; i++) {
        const wait = start + i * interval - performance.now()
        if (wait > 0) await new Promise((r) => setTimeout(r, wait))
        const vs = Array.from({ length: c.per_batch }, (_, j) => fresh(`${c.prefix}-${i}-${j}`, 1))
        const r = await publish(p.encodeBatch(vs))
        if (r.error) results.errors++
        else results.sent++
      }
      await new Promise((r) => setTimeout(r, 1000))
      judging = true
      return { ...results, seconds: (performance.now() - start) / 1000 }
    }
    case 'received':
      return { received: [...received.values()].map((r) => ({ ...r, latencies: undefined, ...stats(r.latencies) })),
        counters }
    case 'quit':
      await node.stop()
      process.exit(0)
    // eslint-disable-next-line no-fallthrough
    default:
      return { error: `unknown command ${c.cmd}` }
  }
}

// A pubsub RPC written by hand (docs/protocol.md, "The author's envelope"): RPC{2 publish: Message{1 from, 2 data,
// 3 seqno, 4 topic, 5 signature}}, length-prefixed on a /meshsub/1.1.0 stream of its own. The streams stay open:
// py-libp2p forgets a peer whose pubsub stream ends.
const rawStreams = []
const varintBytes = (n) => {
  const out = []
  do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; out.push(b) } while (n)
  return Uint8Array.from(out)
}
const pb = (num, bytes) => p.concat(varintBytes((num << 3) | 2), varintBytes(bytes.length), bytes)
async function rawRpc(c) {
  const from = c.from ? p.base58btcDecode(c.from) : p.peerIdBytes(myKey)
  const seqno = crypto.getRandomValues(new Uint8Array(8))
  const data = p.unhex(c.hex)
  const unsigned = p.concat(pb(1, from), pb(2, data), pb(3, seqno), pb(4, new TextEncoder().encode(opt.topic)))
  const signature = p.sign(p.concat(new TextEncoder().encode(p.PUBSUB_PREFIX), unsigned), seed)
  const msg = c.sign === false ? unsigned : p.concat(unsigned, pb(5, signature))
  const rpc = pb(2, msg)
  const sent = []
  for (const conn of node.getConnections()) {
    const stream = await conn.newStream('/meshsub/1.1.0')
    stream.send(p.concat(varintBytes(rpc.length), rpc))
    rawStreams.push(stream)
    sent.push(conn.remotePeer.toString())
  }
  return { recipients: sent, msg_id: p.hex(p.messageId(data)) }
}

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b)
  if (!s.length) return { samples: 0 }
  return { samples: s.length, p50_ms: s[Math.floor(s.length / 2)], p99_ms: s[Math.min(s.length - 1, Math.floor(s.length * 0.99))] }
}

const lines = createInterface({ input: process.stdin })
let queue = Promise.resolve()
lines.on('line', (line) => {
  if (!line.trim()) return
  queue = queue.then(async () => {
    let c
    try {
      c = JSON.parse(line)
      out({ event: 'reply', cmd: c.cmd, ...(await handle(c)) })
    } catch (e) {
      out({ event: 'reply', cmd: c?.cmd, error: String(e?.stack ?? e) })
    }
  })
})
lines.on('close', () => queue.then(() => node.stop()).then(() => process.exit(0)))
