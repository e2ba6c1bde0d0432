// `node --import tsx bench/findBestWorker.run.ts [entries] [calls] [rounds]`:
// end-to-end FindBestWorker over real gRPC (bench/findBestWorker.bench.ts)
// alone: the router with its index in the main thread, the same router with
// prompts decoded into a token array the router hashes (hashOnDecode off: the
// baseline of hashing as the request is decoded), and the bare grpc-js echo.
import { availableParallelism, cpus } from "node:os";
import { runE2eBench } from "./findBestWorker.bench.js";
import { mooncake } from "./workload.js";

const entries = Number(process.argv[2] ?? 1_000_000);
const calls = Number(process.argv[3] ?? 2000);
const rounds = Number(process.argv[4] ?? 3);
console.log(`${availableParallelism()} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}; Mooncake index of ${entries} entries, ${calls} calls x ${rounds} rounds, 4,096-token prompts`);
const r = (await runE2eBench(mooncake(entries), { calls, concurrency: 64, rounds, shardVariants: [0], decodeBaseline: true })) as Record<string, any>;
for (const mode of ["sequential", "concurrent-64"]) {
  for (const [k, v] of Object.entries(r[mode] as Record<string, any>)) {
    const vs = k === "echo" ? "floor" : `${v.p50VsEcho.toFixed(2)}x echo p50, ${v.p99VsEcho.toFixed(2)}x p99, ${v.throughputVsEcho.toFixed(2)}x calls/s`;
    console.log(`${mode.padEnd(14)} ${k.padEnd(58)} ${Math.round(v.callsPerSec).toString().padStart(6)} calls/s  p50 ${v.latencyUs.p50.toFixed(0).padStart(5)} us  p99 ${v.latencyUs.p99.toFixed(0).padStart(6)} us  ${vs}`);
  }
}
process.exit(0);
