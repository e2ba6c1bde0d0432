// `node --import tsx bench/queryUnderIngest.run.ts [phaseMs]`: FindBestWorker p50/p99 over gRPC, idle and while
// IngestKvEvents runs at 50% and 90% of each router's measured capacity (bench/ingest.bench.ts), for the index in
// the main thread and with 1 and 2 shard threads whose queries read shared memory or ask the shards (the baseline).
import { availableParallelism, cpus } from "node:os";
import { runQueryUnderIngest } from "./ingest.bench.js";

const phaseMs = Number(process.argv[2] ?? 3000);
const t0 = performance.now();
console.log(`${availableParallelism()} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}`);
const rows = await runQueryUnderIngest(
  { blocks: 204_800, phaseMs, underIngest: [[0, 0], [1, 0, "asked"], [1, 0], [2, 0, "asked"], [2, 0]] },
  (m) => console.error(`[${((performance.now() - t0) / 1000).toFixed(1)}s] ${m}`),
);
const f = (x: number) => x.toFixed(0).padStart(7);
console.log(`${"".padEnd(44)} capacity blocks/s   idle p50/p99 us   50%: p50/p99   90%: p50/p99   90% p99 / idle p99`);
for (const [name, r] of Object.entries(rows) as [string, any][]) {
  console.log(
    `${name.padEnd(44)} ${f(r.capacityBlocksPerSec)}   ${f(r.idle.p50)} / ${f(r.idle.p99)}   ${f(r["50%"].p50)} / ${f(r["50%"].p99)}   ${f(r["90%"].p50)} / ${f(r["90%"].p99)}   ${(r["90%"].p99 / r.idle.p99).toFixed(2)}x`,
  );
}
