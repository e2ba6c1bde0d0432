// Blocks workers hold below the GPU: pinned host memory, disk, external
// stores (Dynamo's StorageTier host_pinned / disk / external). One small
// index per tier, keyed like the primary index by our sequence hash, so a
// tier's blocks answer "does worker w hold prompt block i here?".
//
// Lookups follow Dynamo's lower-tier walk (lib/kv-router/src/indexer/
// lower_tier_indexers.rs, query_lower_tiers): a worker's host hits continue
// where its device match ended, its disk hits where its host hits ended,
// external after disk; a worker with no device hit may start on a lower tier
// at block 0. So each tier counts only blocks beyond every faster tier.
//
// A stored event's parent is looked up on the same worker's lower tiers (a
// block offloaded after its parent), then on its GPU blocks (the usual
// offload: a prompt's tail goes to host memory while its head stays on the
// GPU). Dynamo accepts that too: its lower tiers key edges by (parent
// external hash, local hash) and continue from the GPU's last match. Only a
// parent the worker holds nowhere is parent_block_not_found.
// Event ids are ordered by the primary index (the router passes it a no-op
// for every lower-tier event), so this module does not track them.
import { sequenceHash } from "../hashing/blockHash.js";
import type { EventOutcome, HeldBlock, Overlaps } from "./types.js";
import { type IndexEvent, LOWER_TIERS, type LowerTier, type WorkerKey, workerKeyString } from "../protocols/events.js";


interface TierWorker {
  key: WorkerKey;
  /** External hash -> block, in insertion order (parents before children). */
  blocks: Map<bigint, HeldBlock>;
  /** Sequence hash -> how many of this worker's external hashes map to it. */
  refs: Map<bigint, number>;
}

class TierStore {
  readonly workers = new Map<string, TierWorker>();
  /** Sequence hash -> keys of the workers holding it on this tier. */
  readonly holders = new Map<bigint, Set<string>>();
  entries = 0;

  worker(key: WorkerKey): TierWorker {
    const k = workerKeyString(key);
    let w = this.workers.get(k);
    if (w === undefined) {
      w = { key: { workerId: key.workerId, dpRank: key.dpRank }, blocks: new Map(), refs: new Map() };
      this.workers.set(k, w);
    }
    return w;
  }

  hold(w: TierWorker, ext: bigint, block: HeldBlock): boolean {
    if (w.blocks.has(ext)) return false; // duplicate store: idempotent
    w.blocks.set(ext, block);
    this.entries++;
    const n = w.refs.get(block.sequenceHash) ?? 0;
    w.refs.set(block.sequenceHash, n + 1);
    if (n === 0) {
      let set = this.holders.get(block.sequenceHash);
      if (set === undefined) this.holders.set(block.sequenceHash, (set = new Set()));
      set.add(workerKeyString(w.key));
    }
    return true;
  }

  release(w: TierWorker, ext: bigint): boolean {
    const block = w.blocks.get(ext);
    if (block === undefined) return false;
    w.blocks.delete(ext);
    this.entries--;
    const n = w.refs.get(block.sequenceHash)!;
    if (n > 1) {
      w.refs.set(block.sequenceHash, n - 1);
      return true;
    }
    w.refs.delete(block.sequenceHash);
    const set = this.holders.get(block.sequenceHash)!;
    set.delete(workerKeyString(w.key));
    if (set.size === 0) this.holders.delete(block.sequenceHash);
    return true;
  }

  drop(k: string): number {
    const w = this.workers.get(k);
    if (w === undefined) return 0;
    const count = w.blocks.size;
    for (const seq of w.refs.keys()) {
      const set = this.holders.get(seq)!;
      set.delete(k);
      if (set.size === 0) this.holders.delete(seq);
    }
    this.entries -= count;
    this.workers.delete(k);
    return count;
  }
}

/** A stored or removed event on a lower tier (a "cleared" acts on a rank: clearRank). */
export type LowerTierEvent = Exclude<IndexEvent, { kind: "cleared" }> & { tier: LowerTier };

/** Per worker key, prompt blocks found on each lower tier beyond the faster tiers. */
export type TierOverlaps = Map<string, Record<LowerTier, number>>;

export class LowerTiers {
  private readonly tiers = new Map<LowerTier, TierStore>(LOWER_TIERS.map((t) => [t, new TierStore()]));
  /** Oldest-stored first, for the --max-blocks bound: tier, worker key, external hash. */
  private readonly age = new Map<string, [LowerTier, string, bigint]>();
  private evicted = 0;

  /**
   * maxBlocks: most (block, worker, tier) entries held over all lower tiers; 0 = unbounded.
   * gpuSequenceOf: the sequence hash of a block the worker holds on the GPU (the primary index).
   */
  constructor(
    private readonly maxBlocks = 0,
    private readonly gpuSequenceOf: (worker: WorkerKey, externalHash: bigint) => bigint | undefined = () => undefined,
  ) {}

  /** Applies a stored or removed event of a lower tier (`restore`: a dump's, whose blocks may state their sequence hashes). */
  apply(e: LowerTierEvent, restore = false): { outcome: EventOutcome; unknownRemovals: number } {
    const store = this.tiers.get(e.tier)!;
    if (e.kind === "removed") {
      const w = store.workers.get(workerKeyString(e));
      let unknown = 0;
      for (const ext of e.blockHashes) {
        if (w !== undefined && store.release(w, ext)) this.age.delete(ageKey(e.tier, w.key, ext));
        else unknown++;
      }
      return { outcome: "applied", unknownRemovals: unknown };
    }
    // A restored dump states each block's sequence hash: no parent to resolve.
    const explicit = restore && e.blocks.length > 0 && e.blocks.every((b) => b.sequenceHash !== undefined);
    let parentSeq: bigint | undefined;
    if (e.parentHash !== undefined && !explicit) {
      parentSeq = this.parentSequence(e, e.parentHash);
      if (parentSeq === undefined) return { outcome: "parent_block_not_found", unknownRemovals: 0 };
    }
    const w = store.worker(e);
    let parentExternal = e.parentHash;
    for (const b of e.blocks) {
      const seq = explicit ? b.sequenceHash! : sequenceHash(parentSeq, b.localHash);
      if (store.hold(w, b.externalHash, { sequenceHash: seq, localHash: b.localHash, parentExternal })) {
        if (this.maxBlocks > 0) this.age.set(ageKey(e.tier, w.key, b.externalHash), [e.tier, workerKeyString(w.key), b.externalHash]);
      }
      parentSeq = seq;
      parentExternal = b.externalHash;
    }
    this.evictOverBound();
    return { outcome: "applied", unknownRemovals: 0 };
  }

  /** Drops every lower-tier block of one (worker, dp_rank); returns how many. */
  clearRank(worker: WorkerKey): number {
    const k = workerKeyString(worker);
    let dropped = 0;
    for (const [tier, store] of this.tiers) {
      const w = store.workers.get(k);
      if (w === undefined) continue;
      if (this.maxBlocks > 0) for (const ext of w.blocks.keys()) this.age.delete(ageKey(tier, w.key, ext));
      dropped += store.drop(k);
    }
    return dropped;
  }

  /** Drops every lower-tier block of every dp rank of a worker. */
  removeWorker(workerId: bigint): number {
    let dropped = 0;
    for (const w of this.workers()) if (w.workerId === workerId) dropped += this.clearRank(w);
    return dropped;
  }

  /**
   * Continues each worker's device match down the tiers (Dynamo's walk):
   * `device` holds leading device blocks per worker key.
   */
  continueMatches(sequenceHashes: readonly bigint[], device: Overlaps): TierOverlaps {
    const out: TierOverlaps = new Map();
    if (sequenceHashes.length === 0 || this.size() === 0) return out;
    // Where each worker's walk stands: the first prompt block not yet found.
    const next = new Map(device);
    for (const tier of LOWER_TIERS) {
      const store = this.tiers.get(tier)!;
      if (store.entries === 0) continue;
      for (const k of store.holders.get(sequenceHashes[0]) ?? []) if (!next.has(k)) next.set(k, 0);
      for (const [k, start] of next) {
        const w = store.workers.get(k);
        if (w === undefined) continue;
        let end = start;
        while (end < sequenceHashes.length && w.refs.has(sequenceHashes[end])) end++;
        if (end === start) continue;
        let counts = out.get(k);
        if (counts === undefined) out.set(k, (counts = { host_pinned: 0, disk: 0, external: 0 }));
        counts[tier] = end - start;
        next.set(k, end);
      }
    }
    return out;
  }

  /** Blocks per worker key and tier. */
  blockCounts(): TierOverlaps {
    const out: TierOverlaps = new Map();
    for (const [tier, store] of this.tiers) {
      for (const [k, w] of store.workers) {
        if (w.blocks.size === 0) continue;
        let counts = out.get(k);
        if (counts === undefined) out.set(k, (counts = { host_pinned: 0, disk: 0, external: 0 }));
        counts[tier] = w.blocks.size;
      }
    }
    return out;
  }

  workers(): WorkerKey[] {
    const seen = new Map<string, WorkerKey>();
    for (const store of this.tiers.values()) for (const [k, w] of store.workers) seen.set(k, w.key);
    return [...seen.values()];
  }

  /** (block, worker, tier) entries held. */
  size(): number {
    let n = 0;
    for (const store of this.tiers.values()) n += store.entries;
    return n;
  }

  get evictions(): number {
    return this.evicted;
  }

  /**
   * Stored events that rebuild the lower tiers exactly: every block with its
   * sequence hash, so one whose parent left (or was stored again after it)
   * is restored too.
   */
  *dump(eventIds: ReadonlyMap<string, bigint>): Iterable<IndexEvent> {
    for (const [tier, store] of this.tiers) {
      for (const [k, w] of store.workers) {
        const eventId = eventIds.get(k) ?? 0n;
        for (const [ext, block] of w.blocks) {
          yield {
            ...w.key,
            eventId,
            tier,
            kind: "stored",
            parentHash: block.parentExternal,
            blocks: [{ externalHash: ext, localHash: block.localHash, sequenceHash: block.sequenceHash }],
          };
        }
      }
    }
  }

  /** The sequence hash of a worker's block on any lower tier (its own tier first), else on its GPU. */
  private parentSequence(e: WorkerKey & { tier: LowerTier }, parent: bigint): bigint | undefined {
    const k = workerKeyString(e);
    const own = this.tiers.get(e.tier)!.workers.get(k)?.blocks.get(parent);
    if (own !== undefined) return own.sequenceHash;
    for (const store of this.tiers.values()) {
      const held = store.workers.get(k)?.blocks.get(parent);
      if (held !== undefined) return held.sequenceHash;
    }
    return this.gpuSequenceOf(e, parent);
  }

  private evictOverBound(): void {
    if (this.maxBlocks <= 0) return;
    for (const [key, [tier, k, ext]] of this.age) {
      if (this.size() <= this.maxBlocks) break;
      this.age.delete(key);
      const store = this.tiers.get(tier)!;
      const w = store.workers.get(k);
      if (w !== undefined && store.release(w, ext)) this.evicted++;
    }
  }
}

function ageKey(tier: LowerTier, w: WorkerKey, ext: bigint): string {
  return `${tier}/${w.workerId}:${w.dpRank}/${ext}`;
}
