// Approximate mode's capacity-bounded retention (--router-approximate-cache-policy lru),
// after Dynamo's router-owned LRU model (lib/kv-router/src/indexer, ApproximateLruLane):
// a rank whose size is known (RegisterWorker total_kv_blocks) holds every block routed
// to it until that size is exceeded; a routed request leases its prompt's blocks until
// it is freed, leased blocks are never evicted, and released ones go least recently
// released first, the deepest block of a prompt before its prefix. A rank of unknown
// size falls back to the TTL tracker, as in Dynamo.
import type { ApproximateTracker } from "./approximate.js";
import type { KvIndex } from "./types.js";
import { type WorkerKey, workerKeyString } from "../protocols/events.js";

export const APPROXIMATE_CACHE_POLICIES = ["ttl", "lru"] as const;
export type ApproximateCachePolicy = (typeof APPROXIMATE_CACHE_POLICIES)[number];

interface Copy {
  refs: number;
  position: number;
}

class RankLru {
  readonly copies = new Map<bigint, Copy>();
  /** Released copies in eviction order: older releases first, deeper blocks first within one. */
  readonly inactive = new Map<bigint, Copy>();
  readonly leases = new Map<string, bigint[]>();

  constructor(public capacity: number) {}

  acquire(lease: string, sequence: readonly bigint[]): bigint[] {
    sequence.forEach((seq, position) => {
      const copy = this.copies.get(seq);
      if (copy === undefined) {
        this.copies.set(seq, { refs: 1, position });
        return;
      }
      if (copy.refs === 0) this.inactive.delete(seq);
      copy.refs++;
      copy.position = position;
    });
    this.leases.set(lease, [...sequence]);
    return this.reconcile();
  }

  release(lease: string): bigint[] {
    const held = this.leases.get(lease);
    if (held === undefined) return [];
    this.leases.delete(lease);
    const freed = held.map((seq) => [seq, this.copies.get(seq)!] as const).filter(([, c]) => --c.refs === 0);
    freed.sort((a, b) => b[1].position - a[1].position);
    for (const [seq, copy] of freed) this.inactive.set(seq, copy);
    return this.reconcile();
  }

  /** Evicts released blocks while the rank holds more than its capacity; returns them. */
  reconcile(): bigint[] {
    const evicted: bigint[] = [];
    for (const seq of this.inactive.keys()) {
      if (this.copies.size <= this.capacity) break;
      this.inactive.delete(seq);
      this.copies.delete(seq);
      evicted.push(seq);
    }
    return evicted;
  }
}

export class ApproximateLru {
  private readonly ranks = new Map<string, { worker: WorkerKey; lru: RankLru }>();
  /** The rank each request's lease is on. */
  private readonly leaseRank = new Map<string, string>();
  private anonymous = 0;

  constructor(
    private readonly index: KvIndex,
    private readonly fallback: ApproximateTracker,
  ) {}

  /** A rank's size in blocks; 0 = unknown (the rank falls back to the TTL). */
  setCapacity(worker: WorkerKey, totalKvBlocks: number): void {
    const key = workerKeyString(worker);
    const rank = this.ranks.get(key);
    if (totalKvBlocks <= 0) {
      if (rank !== undefined) this.drop(rank.worker, [...rank.lru.copies.keys()]);
      this.ranks.delete(key);
      return;
    }
    if (rank === undefined) {
      this.ranks.set(key, { worker, lru: new RankLru(totalKvBlocks) });
      return;
    }
    rank.lru.capacity = totalKvBlocks;
    this.drop(worker, rank.lru.reconcile());
  }

  /** A prompt routed to `worker`: leased by the request until release(requestId); a query leases nothing. */
  routed(worker: WorkerKey, sequence: readonly bigint[], requestId?: string): void {
    const key = workerKeyString(worker);
    const rank = this.ranks.get(key);
    if (rank === undefined) return this.fallback.routed(worker, sequence);
    this.index.storeRouted(worker, sequence);
    if (requestId !== undefined) this.release(requestId); // routed again: the old lease goes
    const lease = requestId ?? `\u0000query:${this.anonymous++}`;
    this.drop(worker, rank.lru.acquire(lease, sequence));
    if (requestId === undefined) this.drop(worker, rank.lru.release(lease));
    else this.leaseRank.set(requestId, key);
  }

  release(requestId: string): void {
    const key = this.leaseRank.get(requestId);
    if (key === undefined) return;
    this.leaseRank.delete(requestId);
    const rank = this.ranks.get(key);
    if (rank !== undefined) this.drop(rank.worker, rank.lru.release(requestId));
  }

  forgetWorker(workerId: bigint): void {
    for (const [key, { worker }] of this.ranks) if (worker.workerId === workerId) this.ranks.delete(key);
    for (const [id, key] of this.leaseRank) if (!this.ranks.has(key)) this.leaseRank.delete(id);
  }

  /** Blocks held and leased on a rank (tests, metrics); undefined for a TTL rank. */
  stats(worker: WorkerKey): { resident: number; leased: number; capacity: number } | undefined {
    const rank = this.ranks.get(workerKeyString(worker));
    if (rank === undefined) return undefined;
    return { resident: rank.lru.copies.size, leased: rank.lru.copies.size - rank.lru.inactive.size, capacity: rank.lru.capacity };
  }

  private drop(worker: WorkerKey, seqs: bigint[]): void {
    if (seqs.length > 0) this.index.removeRouted(worker, seqs);
  }
}
