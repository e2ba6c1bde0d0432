// `node --expose-gc --import tsx bench/steadyBound.run.ts [reps] [bound,bound,...]`: the steady gRPC
// ingest rounds (bench/ingest.bench.ts, steadyTraffic: 6 rounds of 204,800 fresh tokens_hash blocks, 64
// fresh workers each) decoded once, then applied in this thread to fresh indexes with each --max-blocks
// bound ("0": unbounded), the bounds alternating; per round, the median rate over the repetitions. It
// shows which round an index's arrays grow in (the transport and the decoder stay out of it).
import { availableParallelism, loadavg } from "node:os";
import { IngestDecoder } from "../src/decoding/ingestDecoder.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { steadyTraffic } from "./ingest.bench.js";
import { gc, median } from "./stats.js";

const reps = Number(process.argv[2] ?? 4);
const bounds = (process.argv[3] ?? "1228800,1638400,4000000,0").split(",").map(Number);
const BLOCKS = 204_800;
const decoder = new IngestDecoder(64);
const rounds = steadyTraffic(BLOCKS, false, 6).map((r) => r.messages.map((m) => decoder.decode(m)!.batch));
const rates = new Map<number, number[][]>(bounds.map((b) => [b, []]));
for (let rep = 0; rep < reps; rep++) {
  for (const bound of bounds) {
    const index = CompactIndex.local({ maxBlocks: bound || undefined });
    gc();
    const perRound: number[] = [];
    for (const batches of rounds) {
      const t0 = performance.now();
      for (const b of batches) index.applyBatch(b);
      perRound.push(BLOCKS / ((performance.now() - t0) / 1000));
    }
    rates.get(bound)!.push(perRound);
    await index.close();
  }
}
console.log(`apply in this thread, M blocks/s per round of ${BLOCKS} (median of ${reps}); ${availableParallelism()} cores, load ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
for (const [bound, rs] of rates) {
  const byRound = rs[0].map((_, i) => median(rs.map((r) => r[i])));
  const timed = median(rs.flatMap((r) => r.slice(1)));
  console.log(`  --max-blocks ${String(bound || "unbounded").padEnd(10)} ${byRound.map((x) => (x / 1e6).toFixed(2)).join("  ")}   rounds 1-5: ${(timed / 1e6).toFixed(2)}`);
}
