// The benchmark's callee written with the npm `iii-sdk` (0.22.x) and its default reconnect
// settings: serves `bench::echo` until it is killed.
//
// Environment:
//   III_URL      engine URL (the benchmark's worker proxy)
//   III_SDK_ENV  directory whose node_modules holds iii-sdk (target/sdk-envs/node)

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const pkgDir = join(process.env.III_SDK_ENV, 'node_modules', 'iii-sdk')
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'))
const entry = pkg.exports?.['.']?.import ?? pkg.module ?? pkg.main
const { registerWorker } = await import(pathToFileURL(join(pkgDir, entry)).href)

const iii = registerWorker(process.env.III_URL, { workerName: 'bench-callee-node' })
iii.registerFunction('bench::echo', async (data) => data)
process.stdout.write('READY\n')
