// A managed worker for tests/managed_workers.rs (npm `iii-sdk`).
//
// quorum starts it with III_URL (its node's worker port) and III_WORKER_NAME; III_SDK_ENV
// names the directory whose node_modules holds the SDK. It serves `<name>::echo`, which
// answers with its input, its pid and the engine URL it uses. SIGTERM shuts it down.

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

async function loadSdk(envDir) {
  const pkgDir = join(envDir, 'node_modules', 'iii-sdk')
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'))
  const entry = pkg.exports?.['.']?.import ?? pkg.module ?? pkg.main
  return import(pathToFileURL(join(pkgDir, entry)).href)
}

const env = process.env
const name = env.III_WORKER_NAME
const { registerWorker } = await loadSdk(env.III_SDK_ENV)
const iii = registerWorker(env.III_URL, { workerName: name })
iii.registerFunction(
  `${name}::echo`,
  async (data) => ({ echo: data, pid: process.pid, url: env.III_URL, marker: env.ECHO_MARKER }),
  { description: 'Echoes its input' },
)
process.on('SIGTERM', async () => {
  await iii.shutdown()
  process.exit(0)
})
