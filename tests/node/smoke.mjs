// A real npm `iii-sdk` 0.22.x worker, driven by tests/node_sdk.rs.
//
// Environment:
//   III_URL            engine URL (ws://127.0.0.1:PORT)
//   III_SDK_ENV        directory whose node_modules holds iii-sdk (target/sdk-envs/node)
//   NODE_WORKER_NAME   this worker's name
//   RUST_GREET         id of a sync function served by the Rust worker
//   RUST_SINK          id of a function served by the Rust worker, called with a void action
//   RUN_TOKEN          a value unique to this run, echoed through the calls
//
// Prints `READY {json}` once the engine lists node::echo, then `RESULT {json}` with what
// the calls returned, keeps serving node::echo until standard input ends, then shuts the
// worker down, prints `DONE {}` and exits 0. Only these lines go to stdout.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const CALL_TIMEOUT_MS = 10_000
const LISTED_TIMEOUT_MS = 15_000
const WATCHDOG_MS = 50_000

// The script must never outlive a test that forgot it.
const watchdog = setTimeout(() => {
  process.stderr.write(`smoke.mjs: watchdog fired after ${WATCHDOG_MS}ms\n`)
  process.exit(3)
}, WATCHDOG_MS)

function emit(tag, value) {
  process.stdout.write(`${tag} ${JSON.stringify(value)}\n`)
}

// The SDK lives in the test's environment directory, not beside this file: resolve its
// ESM entry from the installed package's own `exports`.
async function loadSdk(envDir) {
  const pkgDir = join(envDir, 'node_modules', 'iii-sdk')
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'))
  const entry = pkg.exports?.['.']?.import ?? pkg.module ?? pkg.main
  const sdk = await import(pathToFileURL(join(pkgDir, entry)).href)
  return { sdk, version: pkg.version }
}

async function main() {
  const env = process.env
  const token = env.RUN_TOKEN ?? ''
  const { sdk, version } = await loadSdk(env.III_SDK_ENV)
  const { registerWorker, TriggerAction, InvocationError } = sdk

  const iii = registerWorker(env.III_URL, { workerName: env.NODE_WORKER_NAME })
  const call = (function_id, payload, extra = {}) =>
    iii.trigger({ function_id, payload, timeoutMs: CALL_TIMEOUT_MS, ...extra })

  iii.registerFunction(
    'node::echo',
    async (data) => ({ echo: data, marker: 'node-iii-sdk' }),
    { description: 'Echoes its input' },
  )

  // The engine has no push for "registered": poll its function list, bounded.
  const listFunctions = async () =>
    (await call('engine::functions::list', { include_internal: true })).functions
  const deadline = Date.now() + LISTED_TIMEOUT_MS
  for (;;) {
    const rows = await listFunctions()
    if (rows.some((row) => row.function_id === 'node::echo')) break
    if (Date.now() > deadline) throw new Error(`node::echo not listed after ${LISTED_TIMEOUT_MS}ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  emit('READY', { sdk_version: version })

  const results = { sdk_version: version }
  try {
    results.greet = await call(env.RUST_GREET, { name: 'node', token })
    results.void_returned =
      (await call(env.RUST_SINK, { from: 'node', token }, { action: TriggerAction.Void() })) ?? null
    results.self_call = await call('node::echo', { self: token })
    const wanted = new Set([env.RUST_GREET, env.RUST_SINK, 'node::echo'])
    results.functions = (await listFunctions())
      .filter((row) => wanted.has(row.function_id))
      .map(({ function_id, namespace, worker_name }) => ({ function_id, namespace, worker_name }))
    try {
      results.missing = { unexpected_result: await call(`node::missing_${token}`, {}) }
    } catch (err) {
      results.missing = {
        code: err.code,
        message: err.message,
        function_id: err.function_id,
        is_invocation_error: err instanceof InvocationError,
      }
    }
    try {
      results.rust_error = { unexpected_result: await call(env.RUST_GREET, { fail: true }) }
    } catch (err) {
      results.rust_error = { code: err.code, message: err.message }
    }
  } catch (err) {
    results.exception = String(err?.stack ?? err)
  }
  emit('RESULT', results)

  // Keep serving node::echo until the test closes our stdin.
  process.stdin.resume()
  await new Promise((resolve) => process.stdin.on('end', resolve))
  await iii.shutdown()
  clearTimeout(watchdog)
  emit('DONE', {})
  // Telemetry may still hold timers or sockets: do not wait for them.
  process.exit(0)
}

main().catch((err) => {
  process.stderr.write(`smoke.mjs failed: ${err?.stack ?? err}\n`)
  process.exit(2)
})
