// `node --import tsx bench/query.run.ts [entries] [prompts] [passes]`: the
// query path with prompt hashing (issue 21), now against the bigint path and
// the path before issue 21, on the index bench's Mooncake index (64 workers,
// block 64) and 8,192-token prompts, from token arrays and from FindBestWorker's
// wire bytes (bench/query.bench.ts). Prompts are distinct arrays, read from
// memory rather than cache, as in the index bench.
import { availableParallelism, cpus } from "node:os";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import { type Compared, runQueryComparison } from "./query.bench.js";
import { BLOCK, mooncake } from "./workload.js";

const entries = Number(process.argv[2] ?? 1_000_000);
const count = Number(process.argv[3] ?? 2000);
const passes = Number(process.argv[4] ?? 6);
console.log(`${availableParallelism()} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}; Mooncake index of ${entries} entries, ${count} prompts of 8,192 tokens, ${passes} passes`);
const w = mooncake(entries);
const index = await CompactIndex.create({ shards: 0, maxBlocks: w.storedBlocks });
for (let i = 0; i < w.events.length; i += 16) index.applyBatch(toEventBatch(w.events.slice(i, i + 16)));
const prompts = w.prompts(8192, count);
// Warm-up (V8 tiers the WebAssembly and the decoders up), then the figures.
runQueryComparison(index, prompts.slice(0, 200), BLOCK, 2);
const r = runQueryComparison(index, prompts, BLOCK, passes);
const f = (x: number) => x.toFixed(2).padStart(6);
const row = (name: string, c: Compared) =>
  console.log(`${name.padEnd(52)} ${f(c.now.p50)} | ${f(c.baseline.p50)} us  ${c.ratioP50.toFixed(2)}x (passes ${c.ratioMin.toFixed(2)}-${c.ratioMax.toFixed(2)})`);
console.log("p50: now | baseline");
for (const [k, c] of Object.entries(r.findMatchesWithHashing)) row(`find_matches with hashing, ${k}`, c);
for (const [k, c] of Object.entries(r.hashing)) row(`hashing 8,192 tokens, ${k}`, c);
console.log("p50 / p99 of every variant (us):");
for (const [group, rows] of Object.entries(r.latency)) {
  for (const [k, l] of Object.entries(rows)) console.log(`  ${group}: ${k.padEnd(44)} ${f(l.p50)} / ${f(l.p99)}`);
}
await index.close();
