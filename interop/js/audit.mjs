// An independent audit of a threshold-vote cluster, in JavaScript: the log (Postgres) and the chain, checked
// by the rules of docs/protocol.md alone. Shares no code with the Python audit (`tvote audit verify`,
// `tvote audit chain`); its verdict is meant to agree with theirs.
//
//   node audit.mjs --dsn "host=127.0.0.1 port=5432 dbname=tvote user=tvote_app" \
//                  [--rpc http://127.0.0.1:8545 --contract 0x... --chain-id 31337] [--json]
//
// The log: positions 1..n without a gap; each row chains to the one before (prev_hash) and hashes to its hash
// (BLAKE3 over the row as stored); every row is covered by its writer's Ed25519 signature over its append
// (first position + last hash), under the key the log itself admitted for that writer; the writer was entitled
// to write the unit's command (R13); every member's peer id derives from its key (R1); every accepted vote,
// double vote, minority vote verifies; every INVALID_SIGNATURE blames the author of a vote that does not verify,
// proven by the author's own signed pubsub envelope (R7); every consensus certificate is recomputed (BLAKE3)
// from the accepted votes it names, and has at least t of them.
// The chain: every Recorded event is for a tx id the log decided, with its value and certificate hash, written
// once (R11); a CONFIRMED transaction has exactly one record, written by the transaction hash the log confirmed;
// an aborted or expired one has none.
// Exit 0 when nothing is found, 1 otherwise (2: could not run).
import { parseArgs } from 'node:util'
import pg from 'pg'
import { createPublicClient, http, keccak256, parseAbi, parseAbiItem, toBytes } from 'viem'
import * as p from './lib/protocol.mjs'

const { values: opt } = parseArgs({
  options: {
    dsn: { type: 'string' },
    rpc: { type: 'string' },
    contract: { type: 'string' },
    'chain-id': { type: 'string', default: '31337' },
    json: { type: 'boolean', default: false },
    page: { type: 'string', default: '5000' },
  },
})
if (!opt.dsn) { console.error('usage: node audit.mjs --dsn DSN [--rpc URL --contract ADDRESS]'); process.exit(2) }

/** libpq's key=value DSN (what the Python tools take) or a postgres:// URI, as pg's client config. */
function pgConfig(dsn) {
  if (/^postgres(ql)?:\/\//.test(dsn)) return { connectionString: dsn }
  const cfg = {}
  const names = { host: 'host', port: 'port', dbname: 'database', user: 'user', password: 'password' }
  for (const m of dsn.matchAll(/(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)/g)) {
    const v = m[2].startsWith("'") ? m[2].slice(1, -1).replace(/\\(.)/g, '$1') : m[2]
    if (names[m[1]]) cfg[names[m[1]]] = m[1] === 'port' ? Number(v) : v
  }
  return cfg
}

const findings = [] // { position, problem }
const find = (position, problem) => findings.push({ position: Number(position), problem })

// --- the state the log builds (only what the checks need) ----------------------------------------------------
const members = new Map() // node_id -> { key, peerId, active, banned }
const writers = new Map() // writer -> { role, key, active }
const txs = new Map() // tx_id -> { status, value, cert, votes: Map(node_id -> vote), signed: Set, confirmed }
let threshold = null

const keyOf = (writer) => {
  const m = members.get(writer)
  if (m?.active) return m.key
  const w = writers.get(writer)
  return w?.active ? w.key : null
}
const hasOperator = () => [...writers.values()].some((w) => w.active && w.role === 'operator')
const tx = (id) => {
  if (!txs.has(id)) txs.set(id, { status: 'COLLECTING', votes: new Map(), signed: new Set() })
  return txs.get(id)
}

/** R13: may `writer` write `cmd`? null, or why not. */
function entitled(writer, cmd) {
  const m = members.get(writer)
  const w = writers.get(writer)
  const isWriter = (role) => w && w.active && w.role === role
  switch (cmd.type) {
    case 'ReceiveVote': case 'CheckDeadline': case 'Reevaluate': case 'ReportInvalidEntry':
      if (!m || !m.active || m.banned) return `${writer} is not an eligible trustee: it may not record ${cmd.type}`
      if (cmd.type === 'ReportInvalidEntry' && cmd.writer === writer) return 'a writer does not report itself'
      return null
    case 'StartSubmission': case 'RecordSigned': case 'RecordBroadcast': case 'RecordConfirmed': case 'RecordFailed':
      if (!isWriter('submitter')) return `${writer} is not an admitted submitter`
      if (cmd.type === 'StartSubmission' && `submitter:${cmd.submitter}` !== writer) return `${writer} claims a submission as ${cmd.submitter}`
      return null
    case 'AdmitWriter':
      if (cmd.role === 'operator' && !hasOperator()) {
        return cmd.writer === writer ? null : 'the first operator admits itself, with the key it signs with'
      }
    // falls through: later admissions are operator commands
    case 'Configure': case 'AdmitMember': case 'RemoveMember': case 'Unban': case 'ApplyRetention': case 'RevokeWriter':
      if (!isWriter('operator')) return `${writer} is not an admitted operator`
      if (`operator:${cmd.operator}` !== writer) return `${writer} acts as operator ${cmd.operator}`
      return null
    default:
      return `unknown command ${cmd.type}`
  }
}

const voteOk = (vote, nodeId) => {
  const m = members.get(nodeId)
  return !!m && p.voteVerifies(vote, m.key)
}

/** Check one applied event's evidence, then fold it into the state. */
function apply(row) {
  const e = row.payload
  const at = row.position
  const vote = (o) => p.voteFromJson(o)
  switch (row.event_type) {
    case 'MemberAdmitted': {
      const key = p.unhex(e.vote_key)
      if (key.length !== 32 || p.peerId(key) !== e.peer_id) find(at, `${e.node_id}'s peer id is not the one its vote key derives (R1)`)
      members.set(e.node_id, { key, peerId: e.peer_id, active: true, banned: false })
      break
    }
    case 'MemberRemoved': members.get(e.node_id).active = false; break
    case 'NodeBanned': members.get(e.node_id).banned = true; break
    case 'NodeUnbanned': members.get(e.node_id).banned = false; break
    case 'WriterAdmitted': writers.set(e.writer, { role: e.role, key: p.unhex(e.public_key), active: true }); break
    case 'WriterRevoked': writers.get(e.writer).active = false; break
    case 'ClusterConfigured': threshold = Number(e.threshold); break
    case 'TransactionOpened': tx(e.tx_id); break
    case 'VoteAccepted': {
      const v = vote(e.vote)
      if (!voteOk(v, e.node_id) || v.tx_id !== e.tx_id || v.node_id !== e.node_id || v.value !== e.value) {
        find(at, `accepted vote of ${e.node_id} on ${e.tx_id} does not verify`)
      }
      tx(e.tx_id).votes.set(e.node_id, v)
      break
    }
    case 'ViolationDetected': {
      const ev = e.evidence
      if (e.kind === 'DOUBLE_VOTING') {
        const [a, b] = [vote(ev.first), vote(ev.second)]
        if (!(voteOk(a, e.node_id) && voteOk(b, e.node_id) && a.value !== b.value && a.node_id === e.node_id && b.node_id === e.node_id)) {
          find(at, `double-vote evidence against ${e.node_id} does not hold`)
        }
      } else if (e.kind === 'MINORITY_VOTE') {
        const v = vote(ev.vote)
        if (!voteOk(v, e.node_id) || v.value === ev.majority_value || v.node_id !== e.node_id) {
          find(at, `minority evidence against ${e.node_id} does not hold`)
        }
      } else if (e.kind === 'INVALID_SIGNATURE') {
        const v = vote(ev.vote)
        if (voteOk(v, v.node_id)) find(at, `${e.node_id} blamed for a signature that verifies`)
        const author = members.get(e.node_id)
        const why = !author ? 'the author is not a member' : p.authored(ev.envelope ?? {}, author.key, v)
        if (why) find(at, `${e.node_id} blamed for a forgery without proof: ${why}`)
        else if (author.peerId !== e.peer_id) find(at, `${e.node_id} blamed under another peer id`)
      } else if (e.kind !== 'SILENT_FAILURE') {
        find(at, `violation of unknown kind ${e.kind}`)
      }
      break
    }
    case 'ThresholdReached': {
      const t = tx(e.tx_id)
      const votes = e.voters.map((n) => t.votes.get(n))
      if (votes.some((v) => !v)) {
        find(at, `consensus on ${e.tx_id} names a vote not in the log`)
      } else if (p.certificateHash(votes) !== e.certificate_hash || votes.some((v) => v.value !== e.value)) {
        find(at, `consensus certificate of ${e.tx_id} does not match its votes`)
      } else if (threshold !== null && votes.length < threshold) {
        find(at, `consensus on ${e.tx_id} with ${votes.length} votes, the threshold is ${threshold}`)
      }
      Object.assign(t, { status: 'THRESHOLD_REACHED', value: e.value, cert: e.certificate_hash })
      break
    }
    case 'TransactionAborted': tx(e.tx_id).status = `ABORTED_${e.reason}`; break
    case 'TransactionExpired': tx(e.tx_id).status = 'EXPIRED'; break
    case 'SubmissionStarted': tx(e.tx_id).status = 'SUBMITTING'; break
    case 'SubmissionSigned': tx(e.tx_id).signed.add(e.tx_hash.toLowerCase()); break
    case 'SubmissionConfirmed': Object.assign(tx(e.tx_id), { status: 'CONFIRMED', confirmed: e.tx_hash.toLowerCase() }); break
    case 'ReputationChanged': case 'DeadlinePassed': case 'RetentionApplied': case 'SubmissionBroadcast':
    case 'SubmissionFailed': case 'InvalidEntryReported':
      break // nothing signed in them to check
    default:
      find(at, `unknown event type ${row.event_type}`)
  }
}

// --- the log ---------------------------------------------------------------------------------------------------
const SELECT = `SELECT position::text, stream_id, stream_version, event_type, schema_version, payload::text AS payload,
  ((extract(epoch FROM recorded_at) * 1000000)::bigint)::text AS recorded_at_us, idempotency_key, writer, prev_hash,
  hash, command::text AS command, signature, signed_from::text FROM events WHERE events.position > $1::bigint ORDER BY events.position LIMIT $2`

const db = new pg.Client(pgConfig(opt.dsn))
let events = 0
let head = new Uint8Array(32)
let lastPosition = 0n
let pending = [] // rows read, waiting for the signature of their append
try {
  await db.connect()
  for (;;) {
    const { rows } = await db.query(SELECT, [lastPosition.toString(), Number(opt.page)])
    for (const r of rows) readRow(r)
    if (rows.length < Number(opt.page)) break
  }
} catch (e) {
  console.error(`audit: cannot read the log: ${e.message}`)
  process.exit(2)
} finally {
  await db.end().catch(() => {})
}
if (pending.length) find(pending[0].position, `${pending.length} row(s) at the end of the log that no writer signature covers`)

function readRow(r) {
  const row = {
    position: BigInt(r.position), stream_id: r.stream_id, stream_version: r.stream_version, event_type: r.event_type,
    schema_version: r.schema_version, recorded_at_us: BigInt(r.recorded_at_us), idempotency_key: r.idempotency_key,
    writer: r.writer, prev_hash: new Uint8Array(r.prev_hash), hash: new Uint8Array(r.hash),
    signature: r.signature ? new Uint8Array(r.signature) : null, signed_from: r.signed_from === null ? null : BigInt(r.signed_from),
  }
  events++
  try {
    row.payload = p.parse(r.payload)
    row.command = r.command === null ? null : p.parse(r.command)
  } catch (e) {
    find(row.position, `unreadable row: ${e.message}`)
    row.unreadable = true
  }
  if (row.position !== lastPosition + 1n) find(lastPosition + 1n, `missing rows: the next stored is ${row.position}`)
  if (!p.equal(row.prev_hash, head)) find(row.position, 'prev_hash does not chain to the previous row')
  try {
    row.edited = row.unreadable || !p.equal(p.rowHash(row), row.hash)
  } catch (e) {
    row.edited = true
  }
  if (row.edited) find(row.position, 'edited after it was written (content does not match its hash)')
  head = row.hash
  lastPosition = row.position
  pending.push(row)
  if (row.signature) settle(row)
}

function settle(signed) {
  const first = signed.signed_from
  const uncovered = pending.filter((r) => r.position < first)
  const batch = pending.filter((r) => r.position >= first)
  pending = []
  for (const r of uncovered) find(r.position, `written as ${r.writer}: no writer signature covers this row`)
  const writer = signed.writer
  let key = keyOf(writer)
  const c0 = batch[0]?.command
  if (!key && !hasOperator() && c0?.type === 'AdmitWriter' && c0.role === 'operator' && c0.writer === writer) {
    key = p.unhex(c0.public_key) // the log's genesis: the first operator signs the batch that admits it
  }
  let problem = null
  if (!batch.length || batch[0].position !== first) problem = 'the signed range is not all in the log'
  else if (!key) problem = `${writer} is not a writer the log admitted`
  else if (!p.verify(signed.signature, p.logBatchBytes(first, signed.hash), key)) problem = `the signature is not ${writer}'s`
  else if (batch.some((r) => r.writer !== writer)) problem = 'rows of another writer inside a signed batch'
  if (problem) {
    for (const r of batch) find(r.position, `written as ${r.writer}: ${problem}`)
    return
  }
  // units: a row with a command starts one; its rows stand or fall together
  let unit = []
  for (const r of batch) {
    if (r.command !== null && unit.length) { applyUnit(writer, unit); unit = [] }
    unit.push(r)
  }
  applyUnit(writer, unit)
}

function applyUnit(writer, rows) {
  if (rows.some((r) => r.edited)) return // already named; an edited unit is applied by nobody
  if (rows[0].command === null) { for (const r of rows) find(r.position, `written as ${writer}: rows outside any unit (no command)`); return }
  const why = entitled(writer, rows[0].command)
  if (why) { for (const r of rows) find(r.position, `written as ${writer}: ${why}`); return }
  for (const r of rows) {
    try {
      apply(r)
    } catch (e) {
      find(r.position, `unreadable ${r.event_type}: ${e.message}`)
    }
  }
}

// --- the chain -------------------------------------------------------------------------------------------------
let chain = null
if (opt.rpc && opt.contract) {
  try {
    chain = await auditChain()
  } catch (e) {
    console.error(`audit: cannot read the chain: ${e.shortMessage ?? e.message}`)
    process.exit(2)
  }
}

async function auditChain() {
  const client = createPublicClient({ transport: http(opt.rpc) })
  const chainId = await client.getChainId()
  if (chainId !== Number(opt['chain-id'])) throw new Error(`chain id ${chainId}, expected ${opt['chain-id']}`)
  const event = parseAbiItem('event Recorded(bytes32 indexed txIdHash, string txId, uint64 value, bytes32 certificateHash, address submitter)')
  const logs = await client.getLogs({ address: opt.contract, event, fromBlock: 0n, toBlock: 'latest', strict: true })
  const count = await client.readContract({ address: opt.contract, abi: parseAbi(['function recordCount() view returns (uint256)']),
    functionName: 'recordCount' })
  const out = { records: logs.length, recordCount: Number(count), checked: 0, pending: 0, findings: [] }
  const bad = (s) => out.findings.push(s)
  if (Number(count) !== logs.length) bad(`recordCount() is ${count}, ${logs.length} Recorded events`)
  const byTx = new Map()
  for (const l of logs) {
    const a = l.args
    if (keccak256(toBytes(a.txId)) !== a.txIdHash) bad(`${a.txId}: the indexed hash is not keccak256 of the id`)
    if (!byTx.has(a.txId)) byTx.set(a.txId, [])
    byTx.get(a.txId).push({ value: a.value, cert: a.certificateHash.slice(2), txHash: l.transactionHash.toLowerCase() })
  }
  for (const [id, t] of [...txs].sort()) {
    if (t.cert === undefined) continue // never reached consensus: any record is named below
    const recs = byTx.get(id) ?? []
    byTx.delete(id)
    out.checked++
    if (recs.length > 1) bad(`${id}: ${recs.length} successful writes on chain (R11: at most one)`)
    if (t.status.startsWith('ABORTED') || t.status === 'EXPIRED') {
      if (recs.length) bad(`${id}: ${t.status} in the log but written on chain`)
      continue
    }
    if (t.status === 'CONFIRMED' && !recs.length) bad(`${id}: confirmed in the log but no record on chain`)
    if (!recs.length) { out.pending++; continue }
    const rec = recs[0]
    if (rec.value !== t.value || rec.cert !== t.cert) {
      bad(`${id}: on chain value ${rec.value} / certificate ${rec.cert.slice(0, 16)}..., the log decided ${t.value} / ${t.cert.slice(0, 16)}...`)
    }
    if (t.status === 'CONFIRMED' && rec.txHash !== t.confirmed) bad(`${id}: written by ${rec.txHash}, the log confirmed ${t.confirmed}`)
    if (t.status !== 'CONFIRMED' && !t.signed.has(rec.txHash)) bad(`${id}: written on chain by ${rec.txHash}, a transaction the log never recorded as signed`)
  }
  for (const [id, recs] of byTx) bad(`${id}: ${recs.length} record(s) on chain for a transaction the log never decided`)
  return out
}

// --- the verdict -------------------------------------------------------------------------------------------------
findings.sort((a, b) => a.position - b.position)
const consensus = [...txs.values()].filter((t) => t.cert !== undefined).length
const ok = !findings.length && (!chain || !chain.findings.length)
if (opt.json) {
  console.log(JSON.stringify({ ok, events, head: p.hex(head), consensus, findings, chain }))
} else {
  for (const f of findings) console.log(`position ${f.position}: ${f.problem}`)
  if (!findings.length) console.log(`OK: ${events} events, chain head ${p.hex(head)}, ${consensus} consensus certificates recomputed`)
  if (chain) {
    for (const f of chain.findings) console.log(`finding: ${f}`)
    if (!chain.findings.length) {
      console.log(`OK: ${chain.records} records on chain, each a consensus of the log, once` +
        (chain.pending ? ` (${chain.pending} consensus not on chain yet)` : ''))
    }
  }
}
process.exit(ok ? 0 : 1)
