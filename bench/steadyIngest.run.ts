// `node --import tsx bench/steadyIngest.run.ts [timedRounds] [servers] [out.json]`: the gRPC ingest
// bench's steady-state rows alone (bench/ingest.bench.ts, runSteadyIngest): per target, fresh servers
// that each take one warm-up round of BENCH_BLOCKS (default 204,800) blocks, then the timed rounds;
// printed with the core count and the load average, and written to out.json if given. BENCH_MAX_BLOCKS
// (comma-separated): more --max-blocks bounds measured beside the one sized to the fleet.
import { writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg } from "node:os";
import { runSteadyIngest } from "./ingest.bench.js";

const timedRounds = Number(process.argv[2] ?? 5);
const servers = Number(process.argv[3] ?? 2);
const blocks = Number(process.env.BENCH_BLOCKS ?? 204_800);
const otherMaxBlocks = process.env.BENCH_MAX_BLOCKS?.split(",").map(Number);
const t0 = performance.now();
const load = () => loadavg().map((l) => l.toFixed(2)).join(" ");
const loadBefore = load();
const steady = await runSteadyIngest({ blocks, steady: { timedRounds, servers, otherMaxBlocks } }, (m) =>
  console.error(`[steady ingest ${((performance.now() - t0) / 1000).toFixed(1)}s, load ${load()}] ${m}`),
);
const result = { date: new Date().toISOString(), cpu: cpus()[0]?.model, loadBefore, loadAfter: load(), seconds: (performance.now() - t0) / 1000, ...steady };
console.log(`gRPC ingest, steady state, blocks/s: median of ${timedRounds} rounds x ${servers} servers (${availableParallelism()} cores, load ${loadBefore} -> ${result.loadAfter})`);
for (const payload of ["token_ids", "tokens_hash"]) {
  for (const [name, v] of Object.entries(steady[payload] as Record<string, any>)) {
    const rounds = (v.rounds as number[][]).map((r) => r.map((x) => (x / 1e6).toFixed(2)).join(" ")).join(" | ");
    console.log(`  ${payload.padEnd(12)} ${name.padEnd(52)} ${(v.blocksPerSec / 1e6).toFixed(2)} M  ${v.vsFloor.toFixed(2)}x floor (paired ${v.vsFloorPaired.toFixed(2)}x)  first round ${(v.firstRoundBlocksPerSec / 1e6).toFixed(2)} M  rounds ${rounds}`);
  }
}
if (process.argv[4]) writeFileSync(process.argv[4], JSON.stringify(result, null, 2) + "\n");
