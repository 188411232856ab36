// Check tests/vectors/*.json against this independent implementation (lib/protocol.mjs, lib/edge.mjs).
//   node vectors.mjs [path/to/tests/vectors]     prints one line per file, exit 0 when every check holds
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import * as ed from '@noble/ed25519'
import { judge } from './lib/edge.mjs'
import { parse } from './lib/json.mjs'
import * as p from './lib/protocol.mjs'

const dir = resolve(process.argv[2] ?? new URL('../../tests/vectors', import.meta.url).pathname)
const load = (name) => parse(readFileSync(join(dir, name), 'utf8'))
const enc = new TextEncoder()
let checks = 0
const failures = []
const expect = (cond, what) => { checks++; if (!cond) failures.push(what) }
const threw = (fn) => { try { fn(); return null } catch (e) { return e } }

const keys = load('keys.json').keys
const seedOf = Object.fromEntries(keys.map((k) => [k.name, p.unhex(k.seed)]))
const pubOf = Object.fromEntries(keys.map((k) => [k.name, p.unhex(k.public_key)]))
for (const k of keys) {
  expect(p.hex(p.publicKey(seedOf[k.name])) === k.public_key, `keys: public key of ${k.name}`)
  expect(p.hex(p.peerIdBytes(pubOf[k.name])) === k.peer_id_bytes, `keys: peer id bytes of ${k.name}`)
  expect(p.peerId(pubOf[k.name]) === k.peer_id, `keys: peer id of ${k.name}`)
  expect(p.equal(p.base58btcDecode(k.peer_id), p.peerIdBytes(pubOf[k.name])), `keys: peer id of ${k.name} decodes`)
}

const votes = load('votes.json')
for (const v of votes.valid) {
  const vote = p.voteFromJson(v.vote)
  expect(p.hex(p.signingBytes(vote)) === v.signing_bytes, `votes: signing bytes of ${v.name}`)
  expect(p.voteVerifies(vote, pubOf[v.signer]), `votes: ${v.name} verifies`)
  expect(p.hex(p.sign(p.signingBytes(vote), seedOf[v.signer])) === vote.signature, `votes: ${v.name} signs the same`)
  expect(p.voteJson(vote) === v.json, `votes: json of ${v.name}`)
}
for (const b of votes.invalid_signatures) {
  const vote = p.voteFromJson(b.vote)
  const key = b.verify_under_key ? p.unhex(b.verify_under_key) : pubOf[b.verify_under]
  expect(!p.voteVerifies(vote, key), `votes: ${b.name} must not verify`)
  if (b.name === 'small_order_key') { // the reason the strict rules are spelled out
    expect(ed.verify(p.unhex(vote.signature), p.signingBytes(vote), key), 'votes: ZIP-215 accepts small_order_key')
  }
}
for (const b of votes.invalid_fields) {
  const f = { tx_id: 'tx_001', value: 1n, node_id: 'trustee-1', timestamp_ms: 1n, ...b.fields }
  expect(threw(() => p.checkVoteFields(f)) instanceof p.ProtocolError, `votes: ${b.name} must be refused`)
}

const wire = load('wire.json')
expect(wire.topic === p.TOPIC, 'wire: topic')
for (const b of wire.batches) {
  const payload = enc.encode(b.payload)
  expect(p.hex(payload) === b.payload_hex, `wire: ${b.name} is UTF-8`)
  expect(p.equal(p.encodeBatch(p.decodeBatch(payload)), payload), `wire: ${b.name} re-encodes byte for byte`)
  expect(p.equal(p.encodeBatch(b.votes.map(p.voteFromJson)), payload), `wire: ${b.name} encodes from its votes`)
  expect(p.hex(p.messageId(payload)) === b.message_id, `wire: message id of ${b.name}`)
}

const edge = load('edge.json')
const members = new Map(edge.members.map((m) => [m.node_id, { peerId: p.peerId(pubOf[m.key]), key: pubOf[m.key],
  banned: m.banned, active: true }]))
const recipe = (c) => {
  if (c.recipe.repeat_vote) return p.encodeBatch(Array(Number(c.recipe.count)).fill(p.voteFromJson(c.recipe.repeat_vote)))
  return enc.encode(c.recipe.prefix + ' '.repeat(Number(c.recipe.spaces)) + p.voteJson(p.voteFromJson(c.recipe.then_vote)) +
    c.recipe.suffix)
}
for (const c of edge.cases) {
  const payload = c.payload_hex !== undefined ? p.unhex(c.payload_hex) : recipe(c)
  const got = judge(members, p.peerId(pubOf[c.author]), payload, edge.now_ms,
    { maxAge: edge.max_vote_age_ms, maxFuture: edge.max_vote_future_ms })
  if (c.name === 'forged_non_canonical') {
    // docs/protocol.md, known gap G1: a conforming receiver drops a non-canonical batch as garbage
    expect(!got.accepted && got.counters.dropped_garbage === 1, 'edge: forged_non_canonical is garbage here')
    continue
  }
  const want = Object.fromEntries(Object.entries(c.counters).map(([k, v]) => [k, Number(v)]))
  expect(got.accepted === c.accepted, `edge: ${c.name} accepted=${c.accepted}`)
  expect(JSON.stringify(Object.entries(got.counters).sort()) === JSON.stringify(Object.entries(want).sort()),
    `edge: ${c.name} counters ${JSON.stringify(got.counters)} != ${JSON.stringify(want)}`)
  const handed = (c.decider ?? []).map((d) => d.vote.signature)
  expect(JSON.stringify(got.forged.map((v) => v.signature)) === JSON.stringify(handed), `edge: ${c.name} R7 hand-on`)
  for (const d of c.decider ?? []) {
    if (!d.events) continue
    const blamed = d.events.find((e) => e.type === 'ViolationDetected')
    const author = edge.members.find((m) => p.peerId(pubOf[m.key]) === p.peerId(pubOf[c.author]))
    expect(blamed.kind === 'INVALID_SIGNATURE' && blamed.node_id === author.node_id, `edge: ${c.name} blames the author`)
  }
}

const cert = load('certificate.json')
const cv = cert.votes.map(p.voteFromJson)
expect(p.hex(p.certificateBytes(cv)) === cert.certificate_bytes, 'certificate: bytes')
expect(p.certificateHash(cv) === cert.certificate_hash, 'certificate: hash')
expect(cert.on_chain.certificate_hash === '0x' + cert.certificate_hash, 'certificate: on-chain bytes32')

const env = load('envelope.json')
const built = p.buildEnvelope(seedOf.mallory, enc.encode(env.data), p.unhex(env.seqno), env.topic)
expect(built.signed === env.envelope.signed && built.signature === env.envelope.signature, 'envelope: built the same')
const fields = p.envelopeFields(p.unhex(env.envelope.signed))
expect(p.hex(fields[1][0]) === env.fields.from && p.hex(fields[2][0]) === env.fields.data &&
  p.hex(fields[3][0]) === env.fields.seqno && new TextDecoder().decode(fields[4][0]) === env.fields.topic,
'envelope: fields')
for (const c of env.checks) {
  const vote = p.voteFromJson(c.other_vote ?? env.forged_vote)
  expect(p.authored(env.envelope, pubOf[c.author], vote) === c.verdict, `envelope: verdict for ${c.author}`)
}
expect(!p.voteVerifies(p.voteFromJson(env.forged_vote), pubOf.alice), 'envelope: the forged vote does not verify')

const log = load('log.json')
let prev = new Uint8Array(32)
for (const r of log.rows) {
  const row = { ...r, position: r.position, stream_version: Number(r.stream_version),
    schema_version: Number(r.schema_version), prev_hash: p.unhex(r.prev_hash) }
  expect(p.equal(row.prev_hash, prev), `log: row ${r.position} chains`)
  expect(p.canonical(r.payload) === r.canonical_payload, `log: canonical payload of row ${r.position}`)
  const h = p.rowHash(row)
  expect(p.hex(h) === r.hash, `log: hash of row ${r.position}`)
  prev = h
}
for (const b of log.batches) {
  const bytes = p.logBatchBytes(b.first_position, p.unhex(b.last_hash))
  expect(p.hex(bytes) === b.signed_bytes, `log: batch bytes from ${b.first_position}`)
  expect(p.verify(p.unhex(b.signature), bytes, p.unhex(b.public_key)), `log: batch signature from ${b.first_position}`)
  const last = log.rows.find((r) => r.position === b.last_position)
  expect(last.signature === b.signature && last.signed_from === b.first_position, `log: signature stored on ${b.last_position}`)
}

for (const f of failures) console.log(`FAIL ${f}`)
console.log(`vectors: ${checks - failures.length} passed, ${failures.length} failed`)
process.exit(failures.length ? 1 : 0)
