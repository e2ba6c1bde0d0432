// Where the index's cores run: in this thread (one core) or in worker
// threads (one core per shard). Both answer the same synchronous calls, so
// the CompactIndex front-end does not care which one it has.
import { CompactCore, type CoreOptions, SlotTable } from "./compactCore.js";
import { u64 } from "../protocols/eventBatch.js";

export interface ShardStats {
  entries: number;
  nodes: number;
  arrayBytes: number;
  evicted: number;
  /** V8 heap used by the thread that runs the shard (0 for the in-thread core). */
  heapUsed: number;
}

export interface ShardBackend {
  readonly shards: number;
  readonly slots: SlotTable;
  /** Applies each shard's records (shards work in parallel); outs[s][i] = result of record i. */
  apply(batches: readonly ({ words: Uint32Array; length: number; count: number } | undefined)[]): Int32Array[];
  /** Fans a query out to every shard and calls `hit` for each (slot, depth) answer. */
  find(hashes: Uint32Array, n: number, hit: (slot: number, depth: number) => void): void;
  oldestStamps(shard: number, max: number): Float64Array;
  evictThrough(stamp: number): number;
  dumpSlot(shard: number, slot: number): Uint32Array;
  /** The sequence hash of a slot's entry with external hash (xLo, xHi), or undefined. */
  sequenceOf(shard: number, slot: number, xLo: number, xHi: number): bigint | undefined;
  /** Distinct sequence hashes held across shards. */
  distinctNodes(): number;
  stats(): ShardStats[];
  /** Shard answers to queries so far, read from shared memory and asked of the shard threads (no round trip; 0 in this thread). */
  queryAnswers(): { read: number; asked: number };
  close(): Promise<void>;
}

/** The whole index in the calling thread: no copies, no waits. */
export class LocalBackend implements ShardBackend {
  readonly shards = 1;
  readonly slots: SlotTable;
  readonly core: CompactCore;
  private out = new Int32Array(64);

  constructor(maxSlots: number, initialEntries: number, core?: CoreOptions) {
    this.slots = new SlotTable(new ArrayBuffer(SlotTable.bytes(maxSlots)), maxSlots);
    this.core = new CompactCore(this.slots, initialEntries, core);
  }

  apply(batches: readonly ({ words: Uint32Array; length: number; count: number } | undefined)[]): Int32Array[] {
    const b = batches[0];
    if (b === undefined) return [new Int32Array(0)];
    if (this.out.length < b.count) this.out = new Int32Array(b.count * 2);
    this.core.applyRecords(b.words, b.count, this.out);
    return [this.out];
  }

  find(hashes: Uint32Array, n: number, hit: (slot: number, depth: number) => void): void {
    const found = this.core.findMatches(hashes, n);
    const slot = this.core.foundSlot;
    const depth = this.core.foundDepth;
    for (let i = 0; i < found; i++) hit(slot[i], depth[i]);
  }

  oldestStamps(_shard: number, max: number): Float64Array {
    const out = new Float64Array(max);
    return out.subarray(0, this.core.oldestStamps(max, out));
  }

  evictThrough(stamp: number): number {
    return this.core.evictThrough(stamp);
  }

  dumpSlot(_shard: number, slot: number): Uint32Array {
    return this.core.dumpSlot(slot);
  }

  private readonly found = new Uint32Array(2);

  sequenceOf(_shard: number, slot: number, xLo: number, xHi: number): bigint | undefined {
    return this.core.sequenceOf(slot, xLo, xHi, this.found) ? u64(this.found[0], this.found[1]) : undefined;
  }

  distinctNodes(): number {
    return this.core.nodes;
  }

  stats(): ShardStats[] {
    const c = this.core;
    return [{ entries: c.entries, nodes: c.nodes, arrayBytes: c.arrayBytes(), evicted: c.evicted, heapUsed: 0 }];
  }

  queryAnswers(): { read: number; asked: number } {
    return { read: 0, asked: 0 };
  }

  async close(): Promise<void> {}
}
