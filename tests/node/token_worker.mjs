// A npm `iii-sdk` 0.22.x worker that presents a worker token, driven by tests/node_sdk.rs.
//
// Environment:
//   III_URL            engine URL (ws://127.0.0.1:PORT)
//   III_SDK_ENV        directory whose node_modules holds iii-sdk (target/sdk-envs/node)
//   NODE_WORKER_NAME   this worker's name
//   WORKER_TOKEN       the worker token, sent with the `headers` option (may be unset)
//
// Calls `engine::functions::list` once (bounded, connecting included) and prints one line,
// `RESULT {"ok":true,"functions":N}` or `RESULT {"ok":false,"error":"..."}`, then exits 0.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const CALL_TIMEOUT_MS = 5_000
// A refused SDK keeps retrying; its call may wait for a connection: bound it here.
const CONNECT_BOUND_MS = 10_000
const WATCHDOG_MS = 30_000

const watchdog = setTimeout(() => {
  process.stderr.write(`token_worker.mjs: watchdog fired after ${WATCHDOG_MS}ms\n`)
  process.exit(3)
}, WATCHDOG_MS)

function emit(tag, value) {
  process.stdout.write(`${tag} ${JSON.stringify(value)}\n`)
}

async function loadSdk(envDir) {
  const pkgDir = join(envDir, 'node_modules', 'iii-sdk')
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'))
  const entry = pkg.exports?.['.']?.import ?? pkg.module ?? pkg.main
  return import(pathToFileURL(join(pkgDir, entry)).href)
}

async function main() {
  const env = process.env
  const { registerWorker } = await loadSdk(env.III_SDK_ENV)
  const headers = env.WORKER_TOKEN ? { Authorization: `Bearer ${env.WORKER_TOKEN}` } : undefined
  const iii = registerWorker(env.III_URL, { workerName: env.NODE_WORKER_NAME, headers })
  try {
    const bound = new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`no answer within ${CONNECT_BOUND_MS}ms`)), CONNECT_BOUND_MS),
    )
    const call = iii.trigger({
      function_id: 'engine::functions::list',
      payload: {},
      timeoutMs: CALL_TIMEOUT_MS,
    })
    const listed = await Promise.race([call, bound])
    emit('RESULT', { ok: true, functions: listed.functions.length })
  } catch (err) {
    emit('RESULT', { ok: false, error: String(err?.message ?? err) })
  }
  clearTimeout(watchdog)
  // The SDK keeps reconnecting when refused: do not wait for its sockets or timers.
  process.exit(0)
}

main().catch((err) => {
  process.stderr.write(`token_worker.mjs failed: ${err?.stack ?? err}\n`)
  process.exit(2)
})
