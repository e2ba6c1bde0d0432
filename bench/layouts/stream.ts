// The record stream every layout of the experiment is fed (bench/layouts.run.ts):
// the index bench's Mooncake events for 64 workers (slot = worker id - 1),
// encoded once as src/indexer/records.ts op records, then a churn phase that
// exercises removals (mid-chain and tail), re-stores under surviving parents
// and a clear of one worker.
import { RecordWriter, stampsOf } from "../../src/indexer/records.js";
import { toEventBatch } from "../../src/protocols/eventBatch.js";
import type { IndexEvent } from "../../src/protocols/events.js";
import { seededRandom } from "../../src/util/random.js";
import { WORKERS } from "../workload.js";

export interface Chunk {
  words: Uint32Array;
  count: number;
}

/** Encodes events as records in chunks of up to 4,096 events; `clock` gives the store stamps. */
export function encode(events: readonly IndexEvent[], clock: { t: number }): Chunk[] {
  const writer = new RecordWriter();
  const chunks: Chunk[] = [];
  for (let i = 0; i < events.length; i += 4096) {
    const batch = toEventBatch(events.slice(i, i + 4096));
    writer.reset();
    for (let k = 0; k < batch.count; k++) {
      writer.batchEvent(batch, k, Number(events[i + k].workerId) - 1, clock.t, false);
      clock.t += stampsOf(batch, k);
    }
    chunks.push({ words: writer.words.slice(0, writer.length), count: writer.count });
  }
  return chunks;
}

/**
 * Churn after the fill: per worker, removals of some stored blocks (a chain's
 * tail, or one block in the middle of a chain: lookups must stop there while
 * the children's entries stay), then stores that continue a surviving block
 * (the parent must be found through its external hash), and a clear of the
 * last worker. Event ids continue each worker's.
 */
export function churn(fill: readonly IndexEvent[], seed: number): IndexEvent[] {
  const rnd = seededRandom(seed);
  const held = Array.from({ length: WORKERS }, () => [] as bigint[]);
  const nextId = new Array<bigint>(WORKERS).fill(1n);
  for (const e of fill) {
    const w = Number(e.workerId) - 1;
    if (e.eventId >= nextId[w]) nextId[w] = e.eventId + 1n;
    if (e.kind === "stored") for (const b of e.blocks) held[w].push(b.externalHash);
  }
  const out: IndexEvent[] = [];
  let fresh = 0x7e57_0000_0000_0000n;
  for (let round = 0; round < 8; round++) {
    for (let w = 0; w < WORKERS; w++) {
      const mine = held[w];
      if (mine.length === 0) continue;
      const removed: bigint[] = [];
      for (let k = 0; k < 24; k++) removed.push(mine[Math.floor(rnd() * mine.length)]);
      out.push({ kind: "removed", workerId: BigInt(w + 1), dpRank: 0, eventId: nextId[w]++, blockHashes: removed });
      // Continue a block this worker still holds (maybe one just removed: then the store is refused, as Dynamo does).
      const parent = mine[Math.floor(rnd() * mine.length)];
      const blocks = Array.from({ length: 1 + Math.floor(rnd() * 16) }, () => ({ externalHash: fresh++, localHash: BigInt(Math.floor(rnd() * 2 ** 32)) * 0x1_0000_0001n }));
      out.push({ kind: "stored", workerId: BigInt(w + 1), dpRank: 0, eventId: nextId[w]++, parentHash: parent, blocks });
    }
  }
  out.push({ kind: "cleared", workerId: BigInt(WORKERS), dpRank: 0, eventId: nextId[WORKERS - 1]++ });
  return out;
}
