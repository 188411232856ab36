// JSON as the protocol needs it (docs/protocol.md, "Canonical JSON"): integers of any size (a vote's value
// is a u64, beyond JavaScript's 2^53), and one canonical encoding: keys sorted by code point, no
// whitespace, every character outside ' '..'~' escaped as \uXXXX (lower-case hex, UTF-16 units).
// Written from the document, not from the Python code.

export class JsonError extends Error {}

/** A JSON number that is not an integer: kept as its text (the protocol's documents never hold one). */
export class NonInteger {
  constructor(raw) { this.raw = raw }
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d])

/** Parse strict JSON (RFC 8259). Integers come back as BigInt, objects as plain objects (last key wins). */
export function parse(text, { maxDepth = Infinity } = {}) {
  let i = 0
  let depth = 0
  const n = text.length
  const fail = (why) => { throw new JsonError(`${why} at offset ${i}`) }
  const ws = () => { while (i < n && WS.has(text.charCodeAt(i))) i++ }
  const value = () => {
    ws()
    if (i >= n) fail('unexpected end')
    const c = text[i]
    if (c === '{') {
      if (++depth > maxDepth) fail(`nesting deeper than ${maxDepth}`)
      i++
      const out = Object.create(null)
      ws()
      if (text[i] === '}') { i++; depth--; return out }
      for (;;) {
        ws()
        if (text[i] !== '"') fail('expected a key')
        const k = string()
        ws()
        if (text[i] !== ':') fail("expected ':'")
        i++
        out[k] = value()
        ws()
        if (text[i] === ',') { i++; continue }
        if (text[i] === '}') { i++; depth--; return out }
        fail("expected ',' or '}'")
      }
    }
    if (c === '[') {
      if (++depth > maxDepth) fail(`nesting deeper than ${maxDepth}`)
      i++
      const out = []
      ws()
      if (text[i] === ']') { i++; depth--; return out }
      for (;;) {
        out.push(value())
        ws()
        if (text[i] === ',') { i++; continue }
        if (text[i] === ']') { i++; depth--; return out }
        fail("expected ',' or ']'")
      }
    }
    if (c === '"') return string()
    if (text.startsWith('true', i)) { i += 4; return true }
    if (text.startsWith('false', i)) { i += 5; return false }
    if (text.startsWith('null', i)) { i += 4; return null }
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 4400))
    if (!m) fail('unexpected character')
    i += m[0].length
    return m[2] || m[3] ? new NonInteger(m[0]) : BigInt(m[0])
  }
  const string = () => {
    i++ // opening quote
    let out = ''
    for (;;) {
      if (i >= n) fail('unterminated string')
      const c = text.charCodeAt(i)
      if (c === 0x22) { i++; return out }
      if (c < 0x20) fail('control character in a string')
      if (c !== 0x5c) { out += text[i++]; continue }
      const e = text[i + 1]
      i += 2
      const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }[e]
      if (simple !== undefined) { out += simple; continue }
      if (e !== 'u' || !/^[0-9a-fA-F]{4}$/.test(text.slice(i, i + 4))) fail('bad escape')
      out += String.fromCharCode(parseInt(text.slice(i, i + 4), 16))
      i += 4
    }
  }
  const v = value()
  ws()
  if (i !== n) fail('trailing data')
  return v
}

/** Compare two strings by Unicode code point (what "sorted keys" means here), not by UTF-16 unit. */
export function codePointCompare(a, b) {
  const x = [...a]
  const y = [...b]
  for (let k = 0; k < Math.min(x.length, y.length); k++) {
    const d = x[k].codePointAt(0) - y[k].codePointAt(0)
    if (d !== 0) return d
  }
  return x.length - y.length
}

const SHORT = { 0x22: '\\"', 0x5c: '\\\\', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t', 0x08: '\\b', 0x0c: '\\f' }

export function quote(s) {
  let out = '"'
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k)
    if (SHORT[c] !== undefined) out += SHORT[c]
    else if (c >= 0x20 && c <= 0x7e) out += s[k]
    else out += '\\u' + c.toString(16).padStart(4, '0')
  }
  return out + '"'
}

/** The canonical encoding (a string of ASCII characters). */
export function canonical(v) {
  if (v === null) return 'null'
  if (v === true) return 'true'
  if (v === false) return 'false'
  if (typeof v === 'bigint') return v.toString()
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new JsonError(`not an integer the protocol can encode: ${v}`)
    return String(v)
  }
  if (typeof v === 'string') return quote(v)
  if (v instanceof NonInteger) throw new JsonError(`a non-integer number (${v.raw}) has no canonical form here`)
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']'
  if (typeof v === 'object') {
    const keys = Object.keys(v).sort(codePointCompare)
    return '{' + keys.map((k) => quote(k) + ':' + canonical(v[k])).join(',') + '}'
  }
  throw new JsonError(`cannot encode ${typeof v}`)
}

export const canonicalBytes = (v) => new TextEncoder().encode(canonical(v))
