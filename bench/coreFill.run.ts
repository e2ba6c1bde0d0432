// `node --expose-gc --import tsx bench/coreFill.run.ts [today|grown|untuned] [fills] [entries]`:
// fills fresh cores with the Mooncake records of bench/layouts.run.ts, nothing
// else, so that a CPU profile of the run (`node --cpu-prof ...`) shows the
// store path's functions without the workload building or the queries around
// them: the profile taken for issue 21 §2 (docs/indexer.md). It prints the
// rate of each fill; it compares nothing (layouts.run.ts does).
import { availableParallelism } from "node:os";
import { CompactCore, MAX_SLOTS, SlotTable } from "../src/indexer/compactCore.js";
import { CompactCore as UntunedCore, SlotTable as UntunedSlots } from "./baseline/compactCoreUntuned.js";
import { encode } from "./layouts/stream.js";
import { gc } from "./stats.js";
import { mooncake } from "./workload.js";

const which = process.argv[2] ?? "today";
const fills = Number(process.argv[3] ?? 10);
const entries = Number(process.argv[4] ?? 1_000_000);
const w = mooncake(entries);
// Sized for the entries the fill makes (a few past `entries`), as --max-blocks sizes the index;
// "grown": today's core from the unbounded index's start (1,024 entries), growing as it fills.
const make =
  which === "untuned"
    ? () => new UntunedCore(new UntunedSlots(new ArrayBuffer(UntunedSlots.bytes(MAX_SLOTS)), MAX_SLOTS), w.storedBlocks)
    : () => new CompactCore(new SlotTable(new ArrayBuffer(SlotTable.bytes(MAX_SLOTS)), MAX_SLOTS), which === "grown" ? 1024 : w.storedBlocks);
const chunks = encode(w.events, { t: 1 });
const out = new Int32Array(Math.max(...chunks.map((c) => c.count)));
console.log(`${availableParallelism()} cores; ${which} CompactCore, ${w.storedBlocks} entries per fill`);
for (let i = 0; i < fills; i++) {
  const core = make();
  gc();
  const t0 = performance.now();
  for (const c of chunks) core.applyRecords(c.words, c.count, out);
  console.log(`fill ${i + 1}: ${((w.storedBlocks / (performance.now() - t0)) * 1e3 / 1e6).toFixed(2)} M blocks/s`);
}
