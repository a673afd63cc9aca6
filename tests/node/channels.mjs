// A real npm `iii-sdk` 0.22.x worker whose handlers stream through data channels, driven
// by tests/channels_sdks.rs.
//
// Environment:
//   III_URL            engine URL (ws://127.0.0.1:PORT), or a load balancer in front of nodes
//   III_SDK_ENV        directory whose node_modules holds iii-sdk (target/sdk-envs/node)
//   NODE_WORKER_NAME   this worker's name
//
// Functions (the SDK turns the channel refs in their input into a reader or a writer by
// itself, on the worker's engine URL):
//   node::chan::consume  {reader: <ref>}  reads the stream to its end, answers a summary
//   node::chan::produce  {writer: <ref>, plan: [{text} | {binary: n}, ...]}  writes the
//                        plan (random bytes), ends the stream, answers a summary of it
//
// A summary is {sha256, bytes, frames, max_frame, sequence} as in tests/python/channels.py.
// The SDK's reader hands binary data to a Node `Readable`, which may join chunks, and text
// to callbacks, so the consumer hashes what the SDK's stream yields and takes frames, kinds
// and order from the 'message' events of the socket the SDK opened; it adds the texts the
// SDK's callback saw and the close code the socket ended with. The producer reports its
// socket's close code too; it is always 1006: the SDK's `Writable` destroys itself once
// finished and its destroy terminates the socket right after the Close is sent.
//
// Prints `READY {json}` once the engine lists both functions, serves until standard input
// ends, then shuts the worker down, prints `DONE {}` and exits 0. Only these go to stdout.

import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const LISTED_TIMEOUT_MS = 15_000
const WATCHDOG_MS = 300_000
// Bytes handed to the writer at once; the SDK splits them into 64 KiB frames.
const PIECE = 1024 * 1024
const FRAME = 64 * 1024

// The script must never outlive a test that forgot it.
const watchdog = setTimeout(() => {
  process.stderr.write(`channels.mjs: watchdog fired after ${WATCHDOG_MS}ms\n`)
  process.exit(3)
}, WATCHDOG_MS)

function emit(tag, value) {
  process.stdout.write(`${tag} ${JSON.stringify(value)}\n`)
}

// The SDK lives in the test's environment directory, not beside this file: resolve an
// ESM entry from the installed package's own `exports`.
async function loadSdk(envDir, subpath) {
  const pkgDir = join(envDir, 'node_modules', 'iii-sdk')
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'))
  const entry = pkg.exports?.[subpath]?.import
  return import(pathToFileURL(join(pkgDir, entry)).href)
}

/** What went through one end of a channel, in the shape the Rust side compares. */
class Summary {
  constructor() {
    this.digest = createHash('sha256')
    this.bytes = 0
    this.frames = 0
    this.maxFrame = 0
    this.sequence = []
  }

  text(message) {
    this.sequence.push({ text: message })
  }

  binary(length, frames, largest) {
    this.bytes += length
    this.frames += frames
    this.maxFrame = Math.max(this.maxFrame, largest)
    const last = this.sequence[this.sequence.length - 1]
    if (last && 'binary' in last) last.binary += length
    else this.sequence.push({ binary: length })
  }

  report() {
    return {
      sha256: this.digest.digest('hex'),
      bytes: this.bytes,
      frames: this.frames,
      max_frame: this.maxFrame,
      sequence: this.sequence,
    }
  }
}

function consumer(ChannelReader) {
  return async (data) => {
    const reader = data.reader
    if (!(reader instanceof ChannelReader)) {
      throw new Error(`the SDK did not resolve the reader ref: ${reader?.constructor?.name}`)
    }
    const summary = new Summary()
    const sdkTexts = []
    reader.onMessage((message) => sdkTexts.push(message))
    // Open the SDK's socket now, so this listener sees every frame it receives.
    reader.ensureConnected()
    const ws = reader.ws
    const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)))
    ws.on('message', (message, isBinary) => {
      if (isBinary) summary.binary(message.length, 1, message.length)
      else summary.text(message.toString('utf-8'))
    })
    let error = null
    let all = Buffer.alloc(0)
    try {
      all = await reader.readAll()
    } catch (err) {
      error = String(err?.message ?? err)
    }
    summary.digest.update(all)
    const result = summary.report()
    result.sdk_bytes = all.length
    result.sdk_texts = sdkTexts
    result.close_code = await closed
    result.error = error
    return result
  }
}

function producer(ChannelWriter) {
  return async (data) => {
    const writer = data.writer
    if (!(writer instanceof ChannelWriter)) {
      throw new Error(`the SDK did not resolve the writer ref: ${writer?.constructor?.name}`)
    }
    const summary = new Summary()
    const write = (buffer) =>
      new Promise((resolve, reject) =>
        writer.stream.write(buffer, (err) => (err ? reject(err) : resolve())),
      )
    for (const step of data.plan) {
      if ('text' in step) {
        writer.sendMessage(step.text)
        summary.text(step.text)
        continue
      }
      let remaining = step.binary
      while (remaining > 0) {
        const piece = randomBytes(Math.min(remaining, PIECE))
        await write(piece)
        summary.digest.update(piece)
        summary.binary(piece.length, Math.ceil(piece.length / FRAME), Math.min(piece.length, FRAME))
        remaining -= piece.length
      }
    }
    const closed = new Promise((resolve) => writer.ws.on('close', (code) => resolve(code)))
    await new Promise((resolve, reject) => writer.stream.end((err) => (err ? reject(err) : resolve())))
    const result = summary.report()
    result.close_code = await closed
    return result
  }
}

async function main() {
  const env = process.env
  const { registerWorker } = await loadSdk(env.III_SDK_ENV, '.')
  const { ChannelReader, ChannelWriter } = await loadSdk(env.III_SDK_ENV, './channel')

  const iii = registerWorker(env.III_URL, { workerName: env.NODE_WORKER_NAME })
  iii.registerFunction('node::chan::consume', consumer(ChannelReader), {
    description: 'Reads a channel',
  })
  iii.registerFunction('node::chan::produce', producer(ChannelWriter), {
    description: 'Writes a channel',
  })

  // The engine has no push for "registered": poll its function list, bounded.
  const wanted = ['node::chan::consume', 'node::chan::produce']
  const deadline = Date.now() + LISTED_TIMEOUT_MS
  for (;;) {
    const listed = await iii.trigger({
      function_id: 'engine::functions::list',
      payload: { include_internal: true },
      timeoutMs: 10_000,
    })
    const ids = new Set(listed.functions.map((row) => row.function_id))
    if (wanted.every((id) => ids.has(id))) break
    if (Date.now() > deadline) throw new Error(`${wanted} not listed after ${LISTED_TIMEOUT_MS}ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  emit('READY', {})

  process.stdin.resume()
  await new Promise((resolve) => process.stdin.on('end', resolve))
  await iii.shutdown()
  clearTimeout(watchdog)
  emit('DONE', {})
  // Telemetry may still hold timers or sockets: do not wait for them.
  process.exit(0)
}

main().catch((err) => {
  process.stderr.write(`channels.mjs failed: ${err?.stack ?? err}\n`)
  process.exit(2)
})
