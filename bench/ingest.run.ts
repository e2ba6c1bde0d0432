// `node --import tsx bench/ingest.run.ts [out.json]`: the gRPC ingest benchmarks alone
// (full sizes; BENCH_SMOKE=1 for small ones), printed as JSON and optionally written to a file.
import { writeFileSync } from "node:fs";
import { runIngestBench } from "./ingest.bench.js";

const smoke = process.env.BENCH_SMOKE === "1";
const t0 = performance.now();
const result = await runIngestBench(
  { blocks: smoke ? 4096 : 204_800, rounds: smoke ? 1 : 3, phaseMs: smoke ? 300 : 3000, threads: smoke ? [1] : [1, 2, 4, 8], queryCalls: smoke ? 64 : 2000, underIngest: smoke ? [[0, 1]] : [[0, 0], [0, 1], [1, 0, "asked"], [1, 0], [2, 0]], steady: smoke ? { timedRounds: 2, servers: 1 } : { timedRounds: 5, servers: 3 } },
  (m) => console.error(`[ingest bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${m}`),
);
const out = JSON.stringify({ date: new Date().toISOString(), ...result }, null, 2);
console.log(out);
if (process.argv[2]) writeFileSync(process.argv[2], out + "\n");
