// Approximate mode (--no-kv-events): with no events to go on, assume a worker
// holds the full blocks of every prompt routed to it, for a TTL refreshed
// whenever the prefix is routed again; bound the total by pruning the
// earliest-expiring blocks down to 80% of the cap.
import type { KvIndex } from "./types.js";
import { type WorkerKey, workerKeyString } from "../protocols/events.js";

export const PRUNE_TARGET_RATIO = 0.8;

export class ApproximateTracker {
  /** Per worker: sequence hash -> expiry, kept in expiry order (refresh = move to end). */
  private readonly expiries = new Map<string, { worker: WorkerKey; blocks: Map<bigint, number> }>();
  private total = 0;

  constructor(
    private readonly index: KvIndex,
    private readonly ttlMs: number,
    private readonly maxBlocks: number,
    private readonly now: () => number = Date.now,
  ) {}

  get trackedBlocks(): number {
    return this.total;
  }

  routed(worker: WorkerKey, sequenceHashes: readonly bigint[]): void {
    // First, so an index that refuses (no slot for a new worker) leaves this tracker unchanged.
    this.index.storeRouted(worker, sequenceHashes);
    const key = workerKeyString(worker);
    let entry = this.expiries.get(key);
    if (entry === undefined) {
      entry = { worker, blocks: new Map() };
      this.expiries.set(key, entry);
    }
    const expiresAt = this.now() + this.ttlMs;
    for (const seq of sequenceHashes) {
      if (entry.blocks.delete(seq)) this.total--;
      entry.blocks.set(seq, expiresAt);
      this.total++;
    }
    if (this.total > this.maxBlocks) this.prune(Math.floor(this.maxBlocks * PRUNE_TARGET_RATIO));
  }

  /** Drops blocks whose TTL ran out; returns how many. */
  expire(): number {
    const now = this.now();
    let removed = 0;
    for (const entry of this.expiries.values()) {
      const gone: bigint[] = [];
      for (const [seq, expiresAt] of entry.blocks) {
        if (expiresAt > now) break;
        gone.push(seq);
      }
      removed += this.drop(entry, gone);
    }
    return removed;
  }

  forgetWorker(workerId: bigint): void {
    for (const [key, entry] of this.expiries) {
      if (entry.worker.workerId !== workerId) continue;
      this.total -= entry.blocks.size;
      this.expiries.delete(key);
    }
  }

  private prune(target: number): void {
    while (this.total > target) {
      // The worker whose oldest block expires first gives up that block.
      let oldest: { worker: WorkerKey; blocks: Map<bigint, number> } | undefined;
      let oldestAt = Infinity;
      for (const entry of this.expiries.values()) {
        const first = entry.blocks.values().next();
        if (!first.done && first.value < oldestAt) {
          oldestAt = first.value;
          oldest = entry;
        }
      }
      if (oldest === undefined) return;
      const batch: bigint[] = [];
      for (const [seq, expiresAt] of oldest.blocks) {
        if (expiresAt !== oldestAt || this.total - batch.length <= target) break;
        batch.push(seq);
      }
      this.drop(oldest, batch);
    }
  }

  private drop(entry: { worker: WorkerKey; blocks: Map<bigint, number> }, seqs: bigint[]): number {
    if (seqs.length === 0) return 0;
    for (const seq of seqs) entry.blocks.delete(seq);
    this.total -= seqs.length;
    this.index.removeRouted(entry.worker, seqs);
    return seqs.length;
  }
}
