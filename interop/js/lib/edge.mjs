// What a receiving trustee does with one gossip message (docs/protocol.md, "The edge"), as a pure function:
// the js peer runs it on everything it receives, and vectors.mjs checks it against tests/vectors/edge.json.

import { decodeBatch, isCanonicalBatch, MAX_VOTE_AGE_MS, MAX_VOTE_FUTURE_MS, ProtocolError, voteVerifies } from './protocol.mjs'

/**
 * members: Map node_id -> { peerId, key (Uint8Array), banned, active }.
 * Returns { accepted, counters: {name: n}, forged: [vote] (R7: to hand on with the author's envelope), votes }.
 */
export function judge(members, authorPeer, payload, nowMs, { maxAge = MAX_VOTE_AGE_MS, maxFuture = MAX_VOTE_FUTURE_MS,
  requireCanonical = true } = {}) {
  const counters = {}
  const add = (k, n = 1) => { counters[k] = (counters[k] ?? 0) + n }
  let votes
  try {
    votes = decodeBatch(payload)
    if (requireCanonical && !isCanonicalBatch(payload)) throw new ProtocolError('not the canonical encoding')
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e
    add('dropped_garbage')
    return { accepted: false, counters, forged: [], votes: [], why: e.message }
  }
  const author = [...members.values()].find((m) => m.peerId === authorPeer && m.active !== false)
  if (!author) { add('dropped_outsider', votes.length); return { accepted: false, counters, forged: [], votes } }
  if (author.banned) { add('dropped_banned', votes.length); return { accepted: false, counters, forged: [], votes } }
  const now = BigInt(nowMs)
  let ok = true
  const forged = []
  for (const v of votes) {
    const age = now - v.timestamp_ms
    if (age > maxAge || -age > maxFuture) { add('dropped_stale'); ok = false; continue }
    const voter = members.get(v.node_id)
    if (!voter || voter.active === false) { add('dropped_outsider'); ok = false } else if (!voteVerifies(v, voter.key)) {
      add('invalid_signature'); forged.push(v); ok = false
    }
  }
  return { accepted: ok, counters, forged, votes }
}
