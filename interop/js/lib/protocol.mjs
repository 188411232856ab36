// The threshold-vote protocol, written from docs/protocol.md alone (no code shared with the Python
// implementation): votes and their signing bytes (R2), the gossip batch, message ids, peer ids, the
// consensus certificate, the author's pubsub envelope (R7 evidence), and the log's row hash and writer
// signature (R13). tests/vectors/*.json pins every function here (interop/js/vectors.mjs checks them).

import * as ed from '@noble/ed25519'
import { blake3 } from '@noble/hashes/blake3.js'
import { sha512 } from '@noble/hashes/sha2.js'
import { canonical, canonicalBytes, codePointCompare, JsonError, parse } from './json.mjs'

ed.hashes.sha512 = sha512

export const TOPIC = 'tvote/votes/1'
export const WIRE_VERSION = 1n
export const MAX_BATCH = 1024
export const MAX_BYTES = 512 * 1024
export const MAX_DEPTH = 8
export const DOMAIN_TAG = 'threshold-vote/v1/vote'
export const CERTIFICATE_TAG = DOMAIN_TAG + '/certificate'
export const LOG_DOMAIN = 'threshold-vote/v1/log-batch'
export const PUBSUB_PREFIX = 'libp2p-pubsub:'
export const MAX_VOTE_AGE_MS = 300_000n
export const MAX_VOTE_FUTURE_MS = 30_000n
export const U64_MAX = (1n << 64n) - 1n
const TX_ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/
const NODE_ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/
const HEX_SIG_RE = /^[0-9a-f]{128}$/
const enc = new TextEncoder()

export class ProtocolError extends Error {}

// --- bytes -----------------------------------------------------------------------------------------

export const hex = (b) => Buffer.from(b).toString('hex')
export const unhex = (s) => {
  if (typeof s !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(s)) throw new ProtocolError('not hex')
  return new Uint8Array(Buffer.from(s, 'hex'))
}
export const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) { out.set(p, o); o += p.length }
  return out
}
export const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i])
export const u32 = (n) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n); return b }
export const u64 = (n) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n)); return b }
export const i64 = (n) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigInt64(0, BigInt(n)); return b }
export const i32 = (n) => { const b = new Uint8Array(4); new DataView(b.buffer).setInt32(0, n); return b }
export const u16 = (n) => { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, n); return b }
/** A length-prefixed field: 4-byte big-endian length, then the bytes. */
export const field = (b) => concat(u32(b.length), typeof b === 'string' ? enc.encode(b) : b)

// --- Ed25519 (RFC 8032, with libsodium's strict acceptance rules) ------------------------------------

const L = (1n << 252n) + 27742317777372353535851937790883648493n
const le = (b) => b.reduceRight((acc, x) => (acc << 8n) | BigInt(x), 0n)

/**
 * true when `sig` is `pub`'s signature over `msg`, by the rules of docs/protocol.md "Signatures": S < L,
 * A and R canonical and not of small order, and the cofactorless equation encode([S]B - [k]A) == R.
 * These are libsodium's rules (crypto_sign_verify_detached), which the Python nodes use; a ZIP-215
 * verifier accepts more (tests/vectors/signatures.json has a vote only such a verifier accepts).
 */
export function verify(sig, msg, pub) {
  if (!(sig instanceof Uint8Array) || sig.length !== 64 || !(pub instanceof Uint8Array) || pub.length !== 32) {
    return false
  }
  const Rb = sig.subarray(0, 32)
  const S = le(sig.subarray(32))
  if (S >= L) return false
  let A, R
  try {
    A = ed.Point.fromBytes(pub, false)
    R = ed.Point.fromBytes(Rb, false)
  } catch {
    return false
  }
  if (A.isSmallOrder() || R.isSmallOrder()) return false
  const k = le(sha512(concat(Rb, pub, msg))) % L
  const sB = S === 0n ? ed.Point.ZERO : ed.Point.BASE.multiply(S) // precomputed tables: public data, speed matters
  const check = sB.subtract(A.multiplyUnsafe(k))
  return equal(check.toBytes(), Rb)
}

export const publicKey = (seed) => ed.getPublicKey(seed)
export const sign = (msg, seed) => ed.sign(msg, seed)

// --- identities --------------------------------------------------------------------------------------

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'

export function base58btc(bytes) {
  let n = bytes.reduce((acc, x) => (acc << 8n) | BigInt(x), 0n)
  let out = ''
  while (n > 0n) { out = B58[Number(n % 58n)] + out; n /= 58n }
  for (const x of bytes) { if (x !== 0) break; out = '1' + out }
  return out
}

export function base58btcDecode(text) {
  let n = 0n
  for (const ch of text) {
    const d = B58.indexOf(ch)
    if (d < 0) throw new ProtocolError(`not base58btc: ${ch}`)
    n = n * 58n + BigInt(d)
  }
  const bytes = []
  while (n > 0n) { bytes.unshift(Number(n & 0xffn)); n >>= 8n }
  for (const ch of text) { if (ch !== '1') break; bytes.unshift(0) }
  return Uint8Array.from(bytes)
}

/** The binary peer id of an Ed25519 key: identity multihash of the protobuf PublicKey{Type=1, Data=key}. */
export function peerIdBytes(pub) {
  if (pub.length !== 32) throw new ProtocolError('an Ed25519 public key is 32 bytes')
  return concat(Uint8Array.of(0x00, 0x24, 0x08, 0x01, 0x12, 0x20), pub)
}
export const peerId = (pub) => base58btc(peerIdBytes(pub))

// --- votes (R2) ----------------------------------------------------------------------------------------

/** Check a vote's fields (a plain object with BigInt integers); throws ProtocolError with the reason. */
export function checkVoteFields(v) {
  if (typeof v.tx_id !== 'string' || !TX_ID_RE.test(v.tx_id)) {
    throw new ProtocolError('tx_id must be 1..128 characters of [A-Za-z0-9_.:-]')
  }
  if (typeof v.node_id !== 'string' || !NODE_ID_RE.test(v.node_id)) {
    throw new ProtocolError('node_id must be 1..64 characters of [A-Za-z0-9_.:-]')
  }
  for (const f of ['value', 'timestamp_ms']) {
    if (typeof v[f] !== 'bigint' || v[f] < 0n || v[f] > U64_MAX) {
      throw new ProtocolError(`${f} must be an integer in 0..2^64-1`)
    }
  }
}

/** The bytes a trustee signs: field(tag) field(tx_id) u64(value) field(node_id) u64(timestamp_ms). */
export function signingBytes(v) {
  checkVoteFields(v)
  return concat(field(DOMAIN_TAG), field(v.tx_id), u64(v.value), field(v.node_id), u64(v.timestamp_ms))
}

export function signVote(fields, seed) {
  const v = { tx_id: fields.tx_id, value: BigInt(fields.value), node_id: fields.node_id,
    timestamp_ms: BigInt(fields.timestamp_ms) }
  return { ...v, signature: hex(sign(signingBytes(v), seed)) }
}

export const voteVerifies = (vote, pub) => verify(unhex(vote.signature), signingBytes(vote), pub)

/** A signed vote as JSON: canonical, the five fields (how it sits in a batch, and in the log). */
export const voteJson = (vote) => canonical({
  node_id: vote.node_id, signature: vote.signature, timestamp_ms: vote.timestamp_ms, tx_id: vote.tx_id,
  value: vote.value,
})

/** A signed vote from parsed JSON, checked as strictly as docs/protocol.md says a receiver must. */
export function voteFromJson(o) {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new ProtocolError('a vote is a JSON object')
  for (const f of ['tx_id', 'value', 'node_id', 'timestamp_ms', 'signature']) {
    if (!(f in o)) throw new ProtocolError(`a vote lacks ${f}`)
  }
  const v = { tx_id: o.tx_id, value: o.value, node_id: o.node_id, timestamp_ms: o.timestamp_ms, signature: o.signature }
  checkVoteFields(v)
  if (typeof v.signature !== 'string' || !HEX_SIG_RE.test(v.signature)) {
    throw new ProtocolError('signature must be 128 lower-case hex digits')
  }
  return v
}

// --- the gossip batch -----------------------------------------------------------------------------------

export const encodeBatch = (votes) => enc.encode(canonical({
  v: WIRE_VERSION,
  votes: votes.map((v) => ({ node_id: v.node_id, signature: v.signature, timestamp_ms: v.timestamp_ms,
    tx_id: v.tx_id, value: v.value })),
}))

/** Votes of a batch, or ProtocolError with why the batch is dropped. */
export function decodeBatch(payload) {
  if (payload.length > MAX_BYTES) throw new ProtocolError(`a batch is at most ${MAX_BYTES} bytes`)
  let doc
  try {
    doc = parse(new TextDecoder('utf-8', { fatal: true }).decode(payload), { maxDepth: MAX_DEPTH })
  } catch (e) {
    throw new ProtocolError(`not acceptable JSON: ${e.message}`)
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc) || doc.v !== WIRE_VERSION ||
      !Array.isArray(doc.votes)) {
    throw new ProtocolError('not a vote batch of version 1')
  }
  if (doc.votes.length < 1 || doc.votes.length > MAX_BATCH) {
    throw new ProtocolError(`a batch holds 1..${MAX_BATCH} votes`)
  }
  return doc.votes.map(voteFromJson)
}

/** The canonical batch is the only encoding a sender may use (docs/protocol.md). */
export const isCanonicalBatch = (payload) => {
  try {
    return equal(encodeBatch(decodeBatch(payload)), payload)
  } catch {
    return false
  }
}

/** The GossipSub message id: BLAKE3-256 of the message's data (the batch bytes), nothing else. */
export const messageId = (data) => blake3(data)

// --- the consensus certificate (on chain) ------------------------------------------------------------

export function certificateBytes(votes) {
  const sorted = [...votes].sort((a, b) => codePointCompare(a.node_id, b.node_id))
  return concat(field(CERTIFICATE_TAG), ...sorted.flatMap((v) => [field(signingBytes(v)), field(unhex(v.signature))]))
}
export const certificateHash = (votes) => hex(blake3(certificateBytes(votes)))

// --- the author's pubsub envelope (R7 evidence) -----------------------------------------------------------

function varint(b, i) {
  let value = 0n
  let shift = 0n
  for (;;) {
    if (i >= b.length || shift > 63n) throw new ProtocolError('truncated varint')
    const c = b[i++]
    value |= BigInt(c & 0x7f) << shift
    if (!(c & 0x80)) return [value, i]
    shift += 7n
  }
}
const putVarint = (n) => {
  const out = []
  do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; out.push(b) } while (n)
  return Uint8Array.from(out)
}
const pbField = (num, bytes) => concat(putVarint((num << 3) | 2), putVarint(bytes.length), bytes)

/** The fields of a pubsub Message (1 from, 2 data, 3 seqno, 4 topic), each a list of byte strings. */
export function envelopeFields(signed) {
  const out = {}
  let i = 0
  while (i < signed.length) {
    let tag, size
    ;[tag, i] = varint(signed, i)
    if ((tag & 7n) !== 2n) throw new ProtocolError('only length-delimited fields are expected')
    ;[size, i] = varint(signed, i)
    if (BigInt(i) + size > BigInt(signed.length)) throw new ProtocolError('a field runs past the end')
    const n = Number(tag >> 3n)
    ;(out[n] ??= []).push(signed.subarray(i, i + Number(size)))
    i += Number(size)
  }
  return out
}

export function buildEnvelope(seed, data, seqno, topic = TOPIC) {
  const signed = concat(pbField(1, peerIdBytes(publicKey(seed))), pbField(2, data), pbField(3, seqno),
    pbField(4, enc.encode(topic)))
  return { signed: hex(signed), signature: hex(sign(concat(enc.encode(PUBSUB_PREFIX), signed), seed)) }
}

/** null when `envelope` ({signed, signature} in hex) proves the holder of `authorKey` sent `vote`; else why not. */
export function authored(envelope, authorKey, vote) {
  let signed, sig
  try {
    signed = unhex(envelope.signed)
    sig = unhex(envelope.signature)
  } catch {
    return 'the envelope is not hex'
  }
  if (!verify(sig, concat(enc.encode(PUBSUB_PREFIX), signed), authorKey)) return "the envelope's signature is not the author's"
  let fields
  try {
    fields = envelopeFields(signed)
  } catch (e) {
    return e.message
  }
  if (!equal((fields[1] ?? [new Uint8Array()])[0], peerIdBytes(authorKey))) return 'the envelope names another author'
  const data = Buffer.from((fields[2] ?? [new Uint8Array()])[0])
  if (!data.includes(Buffer.from(voteJson(vote)))) return 'the vote is not in the message the author signed'
  return null
}

// --- the log (R13) -------------------------------------------------------------------------------------------

/**
 * The hash of a log row: BLAKE3(prev_hash || i64 position || i32 stream_version || u16 schema_version ||
 * i64 recorded_at_us || field(stream_id) || field(event_type) || field(canonical payload) ||
 * field(idempotency_key) || field(writer) [|| field(canonical command), when the row has one]).
 */
export function rowHash(row) {
  const command = row.command === null || row.command === undefined ? null : canonicalBytes(row.command)
  return blake3(concat(
    row.prev_hash, i64(row.position), i32(row.stream_version), u16(row.schema_version), i64(row.recorded_at_us),
    field(row.stream_id), field(row.event_type), field(canonicalBytes(row.payload)), field(row.idempotency_key),
    field(row.writer), ...(command && command.length ? [field(command)] : []),
  ))
}

/** What a writer signs for the rows first_position .. the row whose hash is lastHash. */
export const logBatchBytes = (firstPosition, lastHash) => concat(field(LOG_DOMAIN), i64(firstPosition), lastHash)

export { canonical, canonicalBytes, JsonError, parse }
