// Single-threaded KV block index: a hash table keyed by sequence hash (the
// flat equivalent of a radix tree), plus per-worker maps from the engine's
// external block hash to our block, used to find parents and apply removals.
import { sequenceHash } from "../hashing/blockHash.js";
import type { ApplyResult, HeldBlock, KvIndex, Overlaps } from "./types.js";
import { type IndexEvent, type WorkerKey, workerKeyString } from "../protocols/events.js";
import { type EventBatch, eventsOf } from "../protocols/eventBatch.js";


interface WorkerState {
  key: WorkerKey;
  slot: number;
  /** External hash -> block, in insertion order (parents before children). */
  blocks: Map<bigint, HeldBlock>;
  /** Sequence hashes held through more than one external hash: extra reference counts. */
  extraRefs: Map<bigint, number>;
  lastEventId: bigint | undefined;
}

export class PrefixIndex implements KvIndex {
  /** Sequence hash -> slots of the workers holding that block. */
  private readonly holders = new Map<bigint, Set<number>>();
  private readonly byKey = new Map<string, WorkerState>();
  private readonly bySlot: (WorkerState | undefined)[] = [];
  private readonly freeSlots: number[] = [];
  /** No fixed limit: workers live in Maps. */
  readonly capacity = Infinity;
  /** Bumped whenever a worker is added or removed (KvIndex.workerSetVersion). */
  workerSetVersion = 0;

  applyBatch(batch: EventBatch, restore = false): ApplyResult[] {
    return eventsOf(batch).map((e) => this.apply(e, restore));
  }

  applyBatchAsync(batch: EventBatch, restore = false): Promise<ApplyResult[]> {
    return Promise.resolve(this.applyBatch(batch, restore));
  }

  /** One event, as applyBatch() applies it (the reference form tests and benchmarks call directly). */
  apply(event: IndexEvent, restore = false): ApplyResult {
    const notes = { unknownRemovals: 0, gap: false };
    // Checks first: a rejected event changes nothing, not even which workers are known.
    const existing = this.worker(event, false);
    const last = existing?.lastEventId;
    if (!restore && last !== undefined) {
      if (event.eventId <= last) return { outcome: "stale_event_id", notes };
      notes.gap = event.eventId > last + 1n;
    }
    let parentSeq: bigint | undefined;
    // A restored dump states each block's sequence hash: no parent to resolve.
    const explicit = restore && event.kind === "stored" && event.blocks.length > 0 && event.blocks.every((b) => b.sequenceHash !== undefined);
    if (event.kind === "stored" && event.parentHash !== undefined && !explicit) {
      const parent = existing?.blocks.get(event.parentHash);
      if (parent === undefined) return { outcome: "parent_block_not_found", notes };
      parentSeq = parent.sequenceHash;
    }

    const worker = existing ?? this.worker(event, true);
    // Dumped events (restore) all carry the worker's cursor; their order does not matter.
    if (!restore || last === undefined || event.eventId > last) worker.lastEventId = event.eventId;
    switch (event.kind) {
      case "stored": {
        let parentExternal = event.parentHash;
        for (const block of event.blocks) {
          const seq = explicit ? block.sequenceHash! : sequenceHash(parentSeq, block.localHash);
          this.hold(worker, block.externalHash, {
            sequenceHash: seq,
            localHash: block.localHash,
            parentExternal,
          });
          parentSeq = seq;
          parentExternal = block.externalHash;
        }
        break;
      }
      case "removed":
        for (const ext of event.blockHashes) {
          if (!this.release(worker, ext)) notes.unknownRemovals++;
        }
        break;
      case "cleared":
        // Scoped to the emitting (worker, dp_rank), as Dynamo does: other ranks keep their blocks.
        this.clear(worker);
        break;
    }
    return { outcome: "applied", notes };
  }

  findMatches(sequenceHashes: readonly bigint[]): Overlaps {
    const overlaps: Overlaps = new Map();
    if (sequenceHashes.length === 0) return overlaps;
    const first = this.holders.get(sequenceHashes[0]);
    if (first === undefined) return overlaps;
    // Slots still matching every block so far; the walk stops when none is left.
    let alive = [...first];
    let depth = 1;
    for (; depth < sequenceHashes.length; depth++) {
      const next = this.holders.get(sequenceHashes[depth]);
      if (next === undefined) break;
      const still: number[] = [];
      for (const slot of alive) {
        if (next.has(slot)) still.push(slot);
        else overlaps.set(workerKeyString(this.bySlot[slot]!.key), depth);
      }
      alive = still;
      if (alive.length === 0) break;
    }
    for (const slot of alive) overlaps.set(workerKeyString(this.bySlot[slot]!.key), depth);
    return overlaps;
  }

  /** The reference keeps bigint keys: the words become bigints here. */
  findMatchesWords(words: Uint32Array, n: number): Overlaps {
    const hashes = new Array<bigint>(n);
    for (let i = 0; i < n; i++) hashes[i] = (BigInt(words[2 * i + 1]) << 32n) | BigInt(words[2 * i]);
    return this.findMatches(hashes);
  }

  storeRouted(key: WorkerKey, sequenceHashes: readonly bigint[]): void {
    const worker = this.worker(key, true);
    let parentExternal: bigint | undefined;
    for (const seq of sequenceHashes) {
      // Routed blocks have no engine id: their sequence hash stands in for it.
      if (!worker.blocks.has(seq)) {
        this.hold(worker, seq, { sequenceHash: seq, localHash: seq, parentExternal });
      }
      parentExternal = seq;
    }
  }

  removeRouted(key: WorkerKey, sequenceHashes: readonly bigint[]): void {
    const worker = this.worker(key, false);
    if (worker === undefined) return;
    for (const seq of sequenceHashes) this.release(worker, seq);
  }

  removeWorker(workerId: bigint): number {
    let removed = 0;
    for (const state of this.ranksOf(workerId)) {
      removed += this.clear(state);
      this.byKey.delete(workerKeyString(state.key));
      this.workerSetVersion++;
      this.bySlot[state.slot] = undefined;
      this.freeSlots.push(state.slot);
    }
    return removed;
  }

  blockCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const [key, state] of this.byKey) counts.set(key, state.blocks.size);
    return counts;
  }

  lastEventIds(): Map<string, bigint> {
    const ids = new Map<string, bigint>();
    for (const [key, state] of this.byKey) {
      if (state.lastEventId !== undefined) ids.set(key, state.lastEventId);
    }
    return ids;
  }

  workers(): WorkerKey[] {
    return [...this.byKey.values()].map((s) => s.key);
  }

  size(): number {
    return this.holders.size;
  }

  sequenceHashOf(worker: WorkerKey, externalHash: bigint): bigint | undefined {
    return this.byKey.get(workerKeyString(worker))?.blocks.get(externalHash)?.sequenceHash;
  }

  *dump(): Iterable<IndexEvent> {
    for (const state of this.byKey.values()) {
      const eventId = state.lastEventId ?? 0n;
      const { workerId, dpRank } = state.key;
      // Every block with its sequence hash, in insertion order: restored, they
      // rebuild exactly this state, blocks whose parent is gone included.
      for (const [ext, block] of state.blocks) {
        yield {
          kind: "stored",
          workerId,
          dpRank,
          eventId,
          parentHash: block.parentExternal,
          blocks: [{ externalHash: ext, localHash: block.localHash, sequenceHash: block.sequenceHash }],
        };
      }
      if (state.blocks.size === 0 && state.lastEventId !== undefined) {
        // An empty removal keeps the worker and its cursor known.
        yield { kind: "removed", workerId, dpRank, eventId, blockHashes: [] };
      }
    }
  }

  private worker(key: WorkerKey, create: true): WorkerState;
  private worker(key: WorkerKey, create: false): WorkerState | undefined;
  private worker(key: WorkerKey, create: boolean): WorkerState | undefined {
    const k = workerKeyString(key);
    let state = this.byKey.get(k);
    if (state === undefined && create) {
      const slot = this.freeSlots.pop() ?? this.bySlot.length;
      state = {
        key: { workerId: key.workerId, dpRank: key.dpRank },
        slot,
        blocks: new Map(),
        extraRefs: new Map(),
        lastEventId: undefined,
      };
      this.byKey.set(k, state);
      this.workerSetVersion++;
      this.bySlot[slot] = state;
    }
    return state;
  }

  private ranksOf(workerId: bigint): WorkerState[] {
    return [...this.byKey.values()].filter((s) => s.key.workerId === workerId);
  }

  private hold(worker: WorkerState, ext: bigint, block: HeldBlock): void {
    if (worker.blocks.has(ext)) return; // duplicate store: idempotent
    worker.blocks.set(ext, block);
    let set = this.holders.get(block.sequenceHash);
    if (set === undefined) {
      set = new Set();
      this.holders.set(block.sequenceHash, set);
    }
    if (set.has(worker.slot)) {
      worker.extraRefs.set(block.sequenceHash, (worker.extraRefs.get(block.sequenceHash) ?? 0) + 1);
    } else {
      set.add(worker.slot);
    }
  }

  /** Drops one external block from a worker; false when the worker does not hold it. */
  private release(worker: WorkerState, ext: bigint): boolean {
    const block = worker.blocks.get(ext);
    if (block === undefined) return false;
    worker.blocks.delete(ext);
    const seq = block.sequenceHash;
    const extra = worker.extraRefs.get(seq);
    if (extra !== undefined) {
      if (extra === 1) worker.extraRefs.delete(seq);
      else worker.extraRefs.set(seq, extra - 1);
      return true;
    }
    const set = this.holders.get(seq)!;
    set.delete(worker.slot);
    if (set.size === 0) this.holders.delete(seq);
    return true;
  }

  private clear(worker: WorkerState): number {
    const count = worker.blocks.size;
    for (const block of worker.blocks.values()) {
      const set = this.holders.get(block.sequenceHash);
      if (set === undefined) continue;
      set.delete(worker.slot);
      if (set.size === 0) this.holders.delete(block.sequenceHash);
    }
    worker.blocks.clear();
    worker.extraRefs.clear();
    return count;
  }
}
