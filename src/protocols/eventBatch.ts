// A batch of worker events as flat typed arrays: what the gRPC ingest
// decoder produces and the index applies, with no object per block and no
// bigint (u64 values are (lo, hi) u32 halves). IndexEvent objects convert to
// and from it for the sources and callers that speak them.
import type { IndexEvent, StoredBlockData } from "./events.js";

export const KIND_STORED = 0;
export const KIND_REMOVED = 1;
export const KIND_CLEARED = 2;

/** Words per event in EventBatch.events. */
export const EVENT_WORDS = 11;
// Offsets within an event's words.
export const E_KIND = 0;
export const E_WORKER_LO = 1;
export const E_WORKER_HI = 2;
export const E_DP_RANK = 3;
export const E_ID_LO = 4;
export const E_ID_HI = 5;
export const E_HAS_PARENT = 6;
export const E_PARENT_LO = 7;
export const E_PARENT_HI = 8;
/** First item (block or removed hash) in EventBatch.items, and how many. */
export const E_FIRST = 9;
export const E_COUNT = 10;

/** Words per item: stored block (external lo/hi, local lo/hi); removed hash (lo/hi, 0, 0). */
export const ITEM_WORDS = 4;

export interface EventBatch {
  count: number;
  events: Uint32Array;
  items: Uint32Array;
  /**
   * Restore only (a dump states each block's sequence hash): explicit[i] = 1
   * when every block of stored event i has one, in sequences (lo, hi per item).
   */
  explicit?: Uint8Array;
  sequences?: Uint32Array;
}

const big = new BigUint64Array(1);
const halves = new Uint32Array(big.buffer);

/** The flat form of `events`. */
export function toEventBatch(events: readonly IndexEvent[]): EventBatch {
  let items = 0;
  for (const e of events) items += e.kind === "stored" ? e.blocks.length : e.kind === "removed" ? e.blockHashes.length : 0;
  const ev = new Uint32Array(events.length * EVENT_WORDS);
  const it = new Uint32Array(items * ITEM_WORDS);
  const withSequences = events.some(statesSequences);
  const explicit = withSequences ? new Uint8Array(events.length) : undefined;
  const sequences = withSequences ? new Uint32Array(items * 2) : undefined;
  let n = 0;
  events.forEach((e, i) => {
    const o = i * EVENT_WORDS;
    big[0] = e.workerId;
    ev[o + E_WORKER_LO] = halves[0];
    ev[o + E_WORKER_HI] = halves[1];
    ev[o + E_DP_RANK] = e.dpRank >>> 0;
    big[0] = e.eventId;
    ev[o + E_ID_LO] = halves[0];
    ev[o + E_ID_HI] = halves[1];
    ev[o + E_FIRST] = n;
    if (e.kind === "stored") {
      ev[o + E_KIND] = KIND_STORED;
      if (e.parentHash !== undefined) {
        ev[o + E_HAS_PARENT] = 1;
        big[0] = e.parentHash;
        ev[o + E_PARENT_LO] = halves[0];
        ev[o + E_PARENT_HI] = halves[1];
      }
      ev[o + E_COUNT] = e.blocks.length;
      if (explicit !== undefined && statesSequences(e)) {
        explicit[i] = 1;
        e.blocks.forEach((b, k) => {
          big[0] = b.sequenceHash!;
          sequences![(n + k) * 2] = halves[0];
          sequences![(n + k) * 2 + 1] = halves[1];
        });
      }
      for (const b of e.blocks) {
        big[0] = b.externalHash;
        it[n * ITEM_WORDS] = halves[0];
        it[n * ITEM_WORDS + 1] = halves[1];
        big[0] = b.localHash;
        it[n * ITEM_WORDS + 2] = halves[0];
        it[n * ITEM_WORDS + 3] = halves[1];
        n++;
      }
    } else if (e.kind === "removed") {
      ev[o + E_KIND] = KIND_REMOVED;
      ev[o + E_COUNT] = e.blockHashes.length;
      for (const h of e.blockHashes) {
        big[0] = h;
        it[n * ITEM_WORDS] = halves[0];
        it[n * ITEM_WORDS + 1] = halves[1];
        n++;
      }
    } else {
      ev[o + E_KIND] = KIND_CLEARED;
    }
  });
  return { count: events.length, events: ev, items: it, explicit, sequences };
}

/** A stored event whose every block states its sequence hash (a dumped entry). */
function statesSequences(e: IndexEvent): boolean {
  return e.kind === "stored" && e.blocks.length > 0 && e.blocks.every((b) => b.sequenceHash !== undefined);
}

/** Event `i` of a batch as an IndexEvent (for the reference index, logs and rejections). */
export function eventAt(batch: EventBatch, i: number): IndexEvent {
  const ev = batch.events;
  const it = batch.items;
  const o = i * EVENT_WORDS;
  const header = {
    workerId: u64(ev[o + E_WORKER_LO], ev[o + E_WORKER_HI]),
    dpRank: ev[o + E_DP_RANK],
    eventId: u64(ev[o + E_ID_LO], ev[o + E_ID_HI]),
  };
  const first = ev[o + E_FIRST];
  const count = ev[o + E_COUNT];
  switch (ev[o + E_KIND]) {
    case KIND_STORED: {
      const blocks: StoredBlockData[] = [];
      for (let k = first; k < first + count; k++) {
        const w = k * ITEM_WORDS;
        const block: StoredBlockData = { externalHash: u64(it[w], it[w + 1]), localHash: u64(it[w + 2], it[w + 3]) };
        if (batch.explicit?.[i] === 1) block.sequenceHash = u64(batch.sequences![k * 2], batch.sequences![k * 2 + 1]);
        blocks.push(block);
      }
      const parentHash = ev[o + E_HAS_PARENT] === 1 ? u64(ev[o + E_PARENT_LO], ev[o + E_PARENT_HI]) : undefined;
      return { ...header, kind: "stored", parentHash, blocks };
    }
    case KIND_REMOVED: {
      const blockHashes = [];
      for (let k = first; k < first + count; k++) blockHashes.push(u64(it[k * ITEM_WORDS], it[k * ITEM_WORDS + 1]));
      return { ...header, kind: "removed", blockHashes };
    }
    default:
      return { ...header, kind: "cleared" };
  }
}

/** All events of a batch as IndexEvents. */
export function eventsOf(batch: EventBatch): IndexEvent[] {
  return Array.from({ length: batch.count }, (_, i) => eventAt(batch, i));
}

const u64Word = new BigUint64Array(1);
const u64Halves = new Uint32Array(u64Word.buffer);

/** The u64 whose low and high u32 halves these are. */
export function u64(lo: number, hi: number): bigint {
  u64Halves[0] = lo;
  u64Halves[1] = hi;
  return u64Word[0];
}
