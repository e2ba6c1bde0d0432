// `node --expose-gc --import tsx bench/holders.run.ts [out.json]`: the index
// memory and find_matches benchmark by known worker ranks (holders.bench.ts)
// alone, full sizes (BENCH_SMOKE=1 for small ones), printed as JSON and
// optionally written to a file.
import { existsSync, writeFileSync } from "node:fs";
import { runDefaultFleetAB, runFleetBench } from "./holders.bench.js";
import { TRACE, mooncake, randomPrefix } from "./workload.js";

const smoke = process.env.BENCH_SMOKE === "1";
const t0 = performance.now();
const log = (m: string) => console.error(`[holders bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${m}`);
const fleets = runFleetBench(
  { blocks: smoke ? 20_000 : 200_000, baselineMaxBytes: smoke ? 64 << 20 : 700 << 20, ranks: [64, 20_000, 100_000], baselineMaxRanks: smoke ? 20_000 : 100_000, queries: smoke ? 200 : 2000, rounds: smoke ? 1 : 3 },
  log,
);
const entries = smoke ? 20_000 : 1_000_000;
const defaultFleet: Record<string, unknown> = {};
for (const make of existsSync(TRACE) ? [mooncake, randomPrefix] : [randomPrefix]) {
  const w = make(entries);
  log(`64-rank fleet A/B: ${w.name}`);
  defaultFleet[w.name] = runDefaultFleetAB(w, smoke ? 200 : 2000, smoke ? 2 : 6);
}
const out = JSON.stringify({ date: new Date().toISOString(), fleets, defaultFleet }, null, 2);
console.log(out);
if (process.argv[2]) writeFileSync(process.argv[2], out + "\n");
