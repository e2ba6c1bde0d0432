// `node --expose-gc --import tsx bench/indexBytes.run.ts`: where the bytes of
// a (block, worker) entry go, on the index benchmark's 1 M-entry workloads
// (64 workers, block 64). Per workload: the CompactIndex figure that
// bench/indexer.bench.ts reports (sized by --max-blocks, V8 heap + array
// buffers, the slot table included) and its arrays (stats().arrayBytes), then
// a core built from the same events split by array (CompactCore.arrayBreakdown).
import { existsSync } from "node:fs";
import { CompactCore, MAX_SLOTS, SlotTable } from "../src/indexer/compactCore.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { RecordWriter, stampsOf } from "../src/indexer/records.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import { gc } from "./stats.js";
import { TRACE, type Workload, mooncake, randomPrefix } from "./workload.js";

function heapBytes(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** Bytes per entry through CompactIndex, as the index benchmark measures them. */
function throughIndex(w: Workload): { heap: number; arrays: number } {
  const before = heapBytes();
  const c = CompactIndex.local({ maxBlocks: w.storedBlocks });
  for (let i = 0; i < w.events.length; i += 16) c.applyBatch(toEventBatch(w.events.slice(i, i + 16)));
  const heap = heapBytes() - before;
  return { heap: heap / w.storedBlocks, arrays: c.stats().arrayBytes / w.storedBlocks };
}

/** A core (slot = worker id - 1) fed the workload's events as records, sized as --max-blocks sizes it. */
function core(w: Workload): CompactCore {
  const c = new CompactCore(new SlotTable(new ArrayBuffer(SlotTable.bytes(MAX_SLOTS)), MAX_SLOTS), w.storedBlocks);
  const writer = new RecordWriter();
  let out = new Int32Array(0);
  let clock = 1;
  for (let i = 0; i < w.events.length; i += 4096) {
    const batch = toEventBatch(w.events.slice(i, i + 4096));
    writer.reset();
    for (let k = 0; k < batch.count; k++) {
      writer.batchEvent(batch, k, Number(w.events[i + k].workerId) - 1, clock, false);
      clock += stampsOf(batch, k);
    }
    if (out.length < writer.count) out = new Int32Array(writer.count);
    c.applyRecords(writer.words, writer.count, out);
  }
  return c;
}

const out: Record<string, unknown> = {};
for (const make of existsSync(TRACE) ? [mooncake, randomPrefix] : [randomPrefix]) {
  const w = make(1_000_000);
  const index = throughIndex(w);
  const c = core(w);
  const perEntry = (b: number) => Math.round((b / w.storedBlocks) * 100) / 100;
  out[w.name] = {
    entries: w.storedBlocks,
    nodes: c.nodes,
    compactIndexBytesPerEntry: { heapAndArrayBuffers: perEntry(index.heap * w.storedBlocks), arrays: perEntry(index.arrays * w.storedBlocks) },
    slotTable: perEntry(SlotTable.bytes(MAX_SLOTS)),
    core: Object.fromEntries([...c.arrayBreakdown().map(([k, b]) => [k, perEntry(b)]), ["total", perEntry(c.arrayBytes())]]),
  };
}
console.log(JSON.stringify(out, null, 2));
