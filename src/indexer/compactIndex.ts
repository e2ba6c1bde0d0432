// The compact KV index behind the KvIndex interface: the same answers as
// PrefixIndex (the reference model), with typed-array storage, bounded memory
// (--max-blocks) and optional shards on worker threads (--indexer-shards).
//
// This front-end owns what must be global: which (worker, dp_rank) has which
// slot, which shard owns each worker (all dp ranks of a worker share a shard,
// since removing a worker acts on all of them), and the store clock that
// orders entries for eviction across shards.
//
// Eviction (--max-blocks N): after each applied batch (one applyBatch() call,
// one storeRouted()), if more than N (block, worker)
// entries are held, the entries stored longest ago are evicted until N remain.
// An entry's age is set when its (worker, external hash) is first stored; a
// duplicate store does not refresh it. Evicting an entry is exactly a removal
// of that external hash from that worker (no cascade; lookups stop there).
import { type CoreOptions, DUMP_WORDS, MAX_SLOTS } from "./compactCore.js";
import { OP_REMOVE_ROUTED, OP_STORE_ROUTED, RecordWriter, stampsOf, stampsOfRange } from "./records.js";
import { u64 } from "../protocols/eventBatch.js";
import { E_DP_RANK, E_KIND, E_WORKER_HI, E_WORKER_LO, EVENT_WORDS, type EventBatch, KIND_CLEARED } from "../protocols/eventBatch.js";
import { LocalBackend, type ShardBackend } from "./shardBackend.js";
import { ThreadBackend, type ThreadBackendOptions } from "./threadBackend.js";
import { FlaggedSubmissions } from "./flaggedSubmissions.js";
import { type ApplyResult, type EngineFeed, type EngineFeedApplied, type EngineFeedMessage, type EventOutcome, type EventRef, IndexCapacityError, type IndexShardDownError, type KvIndex, type Overlaps, type RawApplied, type RawStream } from "./types.js";
import { WorkerPeek } from "../decoding/workerPeek.js";
import { IngestDecoder } from "../decoding/ingestDecoder.js";
import { ENGINE_PAIR_WORDS, ENGINE_RESULT_TAIL, FEED_ID_CONTINUE, FEED_ID_GIVEN, RAW_APPLIED, RAW_EVENT_WORDS, RAW_PAIR_WORDS, RAW_PREPARED, RAW_RESULT_HEADER, pairIndex } from "./shardProtocol.js";
import { ENGINE_CODES } from "../decoding/engine/shardFeed.js";
import { type IndexEvent, type WorkerKey, workerKeyString } from "../protocols/events.js";

export interface CompactIndexOptions {
  /** 0 = in this thread; N >= 1 = N shard threads. */
  shards?: number;
  /** Most (block, worker) entries held; undefined = unbounded. */
  maxBlocks?: number;
  /** Entries to allocate up front (avoids growth copies when the size is known). */
  initialEntries?: number;
  /** Most (worker, dp_rank) pairs the index knows at once (its slot table); default MAX_SLOTS. */
  maxWorkerRanks?: number;
  /** Test hooks of the in-thread core (ignored with shard threads). */
  core?: CoreOptions;
  /** Test hook: words of each shard thread's queue and result rings (default RING_WORDS). */
  ringWords?: number;
  /** Tokens per block: with shard threads, IngestKvEvents messages may then go to them as raw bytes (openRawStream). */
  blockSize?: number;
  /** Test hook: queue words a shard may be behind before raw messages are decoded here (default DECODE_HERE_PAST_WORDS). */
  decodeHerePastWords?: number;
  /** With shard threads: queries read the shards' shared memory instead of asking them (default: on x86-64). */
  sharedReads?: boolean;
  /** Tokens per block: with shard threads, engine feeds' payloads may then be decoded on them (openEngineFeed). */
  feedBlockSize?: number;
  /** Test hook: each shard's thread once it serves (a test ends one with terminate(), as a crash would end it). */
  onShardThread?: ThreadBackendOptions["onShardThread"];
  /** Test hook: shard threads throw applying this event (ThreadBackendOptions.testOnlyThrowOnEvent). */
  testOnlyThrowOnEvent?: ThreadBackendOptions["testOnlyThrowOnEvent"];
}

/**
 * Queue words a shard may be behind before this thread decodes a raw
 * stream's messages itself (it has spare time while the shard is the
 * bottleneck): about four messages of 16 events of 32 token-id blocks.
 */
const DECODE_HERE_PAST_WORDS = 80_000;

/** Events sent to the shards per round trip: bounds how long one call keeps shards busy. */
export const MAX_BATCH_EVENTS = 4096;

/**
 * Entries to allocate up front: with --max-blocks the index is sized for its
 * bound (up to 16M entries) so it never grows, and growing (copying tens of
 * MB of arrays, which also prompts full garbage collections) stays off the
 * hot path; unbounded, it starts small.
 */
function initialEntriesOf(opts: CompactIndexOptions): number {
  return opts.initialEntries ?? (opts.maxBlocks ? Math.min(opts.maxBlocks, 1 << 24) : 1024);
}

/** The index is sized for its whole --max-blocks bound (CoreOptions.bounded: it then grows only by a batch's overshoot). */
function boundedBy(opts: CompactIndexOptions): boolean {
  return opts.initialEntries === undefined && opts.maxBlocks !== undefined && opts.maxBlocks <= 1 << 24;
}

const OUTCOMES: EventOutcome[] = ["applied", "parent_block_not_found", "stale_event_id"];

interface SlotInfo {
  key: WorkerKey;
  keyString: string;
  shard: number;
}

export interface IndexStats {
  shards: number;
  entries: number;
  evictions: number;
  arrayBytes: number;
  shardHeapBytes: number;
}

export class CompactIndex implements KvIndex {
  private readonly bySlot: (SlotInfo | undefined)[] = [];
  /** Known workers in creation order (what workers() lists). */
  private readonly byKey = new Map<string, number>();
  /** Bumped on every change to byKey's keys (KvIndex.workerSetVersion). */
  workerSetVersion = 0;
  private readonly freeSlots: number[] = [];
  /** Keys first named by queued batches whose results are not all in: their slot, and how many such chunks name them. */
  private readonly inFlight = new Map<string, { slot: number; batches: number }>();
  /** workerId -> [shard, number of slots (known or pending) it has there]. */
  private readonly shardOf = new Map<bigint, { shard: number; slots: number }>();
  private readonly workersPerShard: number[];
  private readonly writers: RecordWriter[];
  /** The store clock without shard threads (with them, ThreadBackend.clock). */
  private clock = 1;
  /** Reads which workers a raw message names. */
  private readonly peek = new WorkerPeek();
  /** rawTarget()'s part per shard (reused). */
  private readonly partOfShard: Int32Array;
  /** Names a split message's parts in the shards' protocol (RAW_PART). */
  private nextToken = 0;
  /** Decodes raw streams' messages here while their shard is behind (made on first use). */
  private rawDecoder: IngestDecoder | undefined;
  /** Most (worker, dp_rank) pairs held at once. */
  readonly capacity: number;
  private evictions = 0;
  private readonly query = new BigUint64Array(1024);
  private queryWords = new Uint32Array(this.query.buffer);
  private queryBig = this.query;

  /** The backend when it runs shard threads (it then also takes queued batches). */
  private readonly threads: ThreadBackend | undefined;

  private constructor(
    private readonly backend: ShardBackend,
    private readonly maxBlocks: number | undefined,
    private readonly decodeHerePastWords = DECODE_HERE_PAST_WORDS,
  ) {
    this.threads = backend instanceof ThreadBackend ? backend : undefined;
    this.capacity = backend.slots.slots;
    this.workersPerShard = new Array(backend.shards).fill(0);
    this.partOfShard = new Int32Array(backend.shards);
    this.writers = Array.from({ length: backend.shards }, () => new RecordWriter());
  }

  /** An index in the calling thread (synchronous to build: for embedding and tests). */
  static local(opts: Omit<CompactIndexOptions, "shards"> = {}): CompactIndex {
    const core = { bounded: boundedBy(opts), ...opts.core };
    return new CompactIndex(new LocalBackend(opts.maxWorkerRanks ?? MAX_SLOTS, initialEntriesOf(opts), core), opts.maxBlocks, opts.decodeHerePastWords);
  }

  /** An index with `opts.shards` worker threads (0 = local). */
  static async create(opts: CompactIndexOptions = {}): Promise<CompactIndex> {
    const shards = opts.shards ?? 0;
    if (shards === 0) return CompactIndex.local(opts);
    const perShard = Math.ceil(initialEntriesOf(opts) / shards);
    const backend = await ThreadBackend.start(shards, opts.maxWorkerRanks ?? MAX_SLOTS, perShard, { ringWords: opts.ringWords, blockSize: opts.blockSize, feedBlockSize: opts.feedBlockSize, bounded: boundedBy(opts), sharedReads: opts.sharedReads, onShardThread: opts.onShardThread, testOnlyThrowOnEvent: opts.testOnlyThrowOnEvent });
    return new CompactIndex(backend, opts.maxBlocks, opts.decodeHerePastWords);
  }

  get shards(): number {
    return this.backend.shards;
  }

  /** Applies events in order; one round trip to the shards per MAX_BATCH_EVENTS events. */
  applyBatch(batch: EventBatch, restore = false): ApplyResult[] {
    this.ensureRoomFor(batch);
    const results: ApplyResult[] = new Array(batch.count);
    for (let start = 0; start < batch.count; start += MAX_BATCH_EVENTS) {
      this.applyChunk(batch, start, Math.min(batch.count, start + MAX_BATCH_EVENTS), restore, results);
    }
    return results;
  }

  /**
   * Applies events in order like applyBatch(), without waiting here for shard
   * threads: their records are queued and the results arrive later, so the
   * caller can decode the next batch meanwhile. Batches apply in the order
   * they are submitted, also relative to every synchronous call. A refusal
   * (no worker slots) is thrown by this call, before anything is queued.
   */
  applyBatchAsync(batch: EventBatch, restore = false): Promise<ApplyResult[]> {
    // In this thread there is nothing to overlap with: apply now, so every effect is visible on return.
    if (this.threads === undefined) return Promise.resolve(this.applyBatch(batch, restore));
    this.ensureRoomFor(batch); // throws here, before anything is queued
    const results: ApplyResult[] = new Array(batch.count);
    const parts: Promise<void>[] = [];
    for (let start = 0; start < batch.count; start += MAX_BATCH_EVENTS) {
      parts.push(this.submitChunk(batch, start, Math.min(batch.count, start + MAX_BATCH_EVENTS), restore, results));
    }
    return Promise.all(parts).then(() => results);
  }

  private submitChunk(batch: EventBatch, from: number, to: number, restore: boolean, results: ApplyResult[]): Promise<void> {
    /** Worker keys this chunk holds an in-flight claim on. */
    const claims = new Set<string>();
    const where = this.writeRecords(batch, from, to, restore, (key, keyOf) => this.byKey.get(key) ?? this.claimInFlight(key, keyOf, claims));
    return this.threads!.submit(this.writers.map((w) => (w.count > 0 ? w : undefined))).then(
      (outs) => {
        fillResults(outs, where, from, to, results);
        this.releaseClaims(claims);
        this.evictOverflow();
      },
      (err: unknown) => {
        this.releaseClaims(claims);
        throw err;
      },
    );
  }

  /** The slot of a worker key not yet known: shared by every queued batch naming it until the last one's results are in. */
  private claimInFlight(key: string, keyOf: () => WorkerKey, claims: Set<string>): number {
    let f = this.inFlight.get(key);
    if (f === undefined) {
      f = { slot: this.newSlot(key, keyOf()), batches: 0 };
      this.inFlight.set(key, f);
    }
    if (!claims.has(key)) {
      claims.add(key);
      f.batches++;
    }
    return f.slot;
  }

  /** A queued chunk's results are in: a key no queued chunk names any more becomes known, or its slot is freed. */
  private releaseClaims(claims: Set<string>): void {
    for (const key of claims) {
      const f = this.inFlight.get(key)!;
      if (--f.batches > 0) continue;
      this.inFlight.delete(key);
      this.settle(new Map([[key, f.slot]]));
    }
  }

  private applyChunk(batch: EventBatch, from: number, to: number, restore: boolean, results: ApplyResult[]): void {
    const pending = new Map<string, number>();
    const where = this.writeRecords(batch, from, to, restore, (key, keyOf) => this.slotForKey(key, keyOf, pending));
    fillResults(this.backend.apply(this.writers.map((w) => (w.count > 0 ? w : undefined))), where, from, to, results);
    this.settle(pending);
    this.evictOverflow();
  }

  /**
   * Writes events [from, to) as records into each shard's writer, stamped by
   * the store clock; `slotOf` gives each event's slot. Returns where each
   * event's result will be: (shard, record index) pairs.
   */
  private writeRecords(
    batch: EventBatch,
    from: number,
    to: number,
    restore: boolean,
    slotOf: (key: string, keyOf: () => WorkerKey) => number,
  ): Int32Array {
    for (const w of this.writers) w.reset();
    const where = new Int32Array((to - from) * 2);
    const ev = batch.events;
    let stamp = this.stamps(stampsOfRange(batch, from, to));
    for (let i = from; i < to; i++) {
      const o = i * EVENT_WORDS;
      const slot = slotOf(batchKeyString(ev, o), () => ({ workerId: u64(ev[o + E_WORKER_LO], ev[o + E_WORKER_HI]), dpRank: ev[o + E_DP_RANK] }));
      const shard = this.bySlot[slot]!.shard;
      const w = this.writers[shard];
      where[2 * (i - from)] = shard;
      where[2 * (i - from) + 1] = w.count;
      w.batchEvent(batch, i, slot, stamp, restore);
      stamp += stampsOf(batch, i);
    }
    return where;
  }

  findMatches(sequenceHashes: readonly bigint[]): Overlaps {
    const n = sequenceHashes.length;
    if (n === 0) return new Map();
    if (this.queryBig.length < n) {
      this.queryBig = new BigUint64Array(n * 2);
      this.queryWords = new Uint32Array(this.queryBig.buffer);
    }
    const q = this.queryBig;
    for (let i = 0; i < n; i++) q[i] = sequenceHashes[i];
    return this.findMatchesWords(this.queryWords, n);
  }

  findMatchesWords(words: Uint32Array, n: number): Overlaps {
    const overlaps: Overlaps = new Map();
    if (n === 0) return overlaps;
    this.backend.find(words, n, (slot, depth) => {
      const info = this.bySlot[slot];
      if (info !== undefined) overlaps.set(info.keyString, depth);
    });
    return overlaps;
  }

  storeRouted(worker: WorkerKey, sequenceHashes: readonly bigint[]): void {
    const key = workerKeyString(worker);
    const known = this.byKey.size + this.inFlight.size;
    if (known >= this.capacity && !this.byKey.has(key) && !this.inFlight.has(key)) {
      throw new IndexCapacityError(this.capacity, known, 1);
    }
    const pending = new Map<string, number>();
    const slot = this.slotFor(worker, pending);
    const shard = this.bySlot[slot]!.shard;
    this.routed(OP_STORE_ROUTED, slot, shard, worker, sequenceHashes);
    this.settle(pending);
    this.evictOverflow();
  }

  removeRouted(worker: WorkerKey, sequenceHashes: readonly bigint[]): void {
    const slot = this.slotOf(workerKeyString(worker));
    if (slot === undefined) return;
    this.routed(OP_REMOVE_ROUTED, slot, this.bySlot[slot]!.shard, worker, sequenceHashes);
  }

  removeWorker(workerId: bigint): number {
    const placed = this.shardOf.get(workerId);
    if (placed === undefined) return 0;
    const w = this.writers[placed.shard];
    for (const x of this.writers) x.reset();
    w.removeWorker(0, workerId);
    const removed = this.backend.apply(this.writers.map((x) => (x.count > 0 ? x : undefined)))[placed.shard][0];
    for (const [key, slot] of [...this.byKey]) {
      if (this.bySlot[slot]!.key.workerId !== workerId) continue;
      this.byKey.delete(key);
      this.workerSetVersion++;
      this.releaseSlot(slot);
    }
    return removed;
  }

  blockCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    const c = this.backend.slots.count;
    for (const [key, slot] of this.byKey) counts.set(key, c[slot]);
    return counts;
  }

  lastEventIds(): Map<string, bigint> {
    const ids = new Map<string, bigint>();
    const st = this.backend.slots;
    for (const [key, slot] of this.byKey) {
      if (st.hasLast[slot] === 1) ids.set(key, u64(st.lastLo[slot], st.lastHi[slot]));
    }
    return ids;
  }

  workers(): WorkerKey[] {
    return [...this.byKey.values()].map((slot) => ({ ...this.bySlot[slot]!.key }));
  }

  size(): number {
    return this.backend.distinctNodes();
  }

  /**
   * One single-block stored event per entry, each stating its sequence hash,
   * in each worker's list order; restored, they rebuild exactly this index
   * (blocks whose parent was removed or stored again later included). Lazy:
   * a worker's entries are read when the iteration reaches it, so a dump
   * consumed slowly holds one worker's packed entries, not the whole index;
   * each worker is consistent with its own event cursor.
   */
  sequenceHashOf(worker: WorkerKey, externalHash: bigint): bigint | undefined {
    const slot = this.slotOf(workerKeyString(worker));
    if (slot === undefined) return undefined;
    const lo = Number(externalHash & 0xffffffffn);
    const hi = Number(externalHash >> 32n);
    return this.backend.sequenceOf(this.bySlot[slot]!.shard, slot, lo, hi);
  }

  *dump(): Iterable<IndexEvent> {
    for (const [key, slot] of [...this.byKey]) {
      const info = this.bySlot[slot];
      if (info === undefined || info.keyString !== key || this.byKey.get(key) !== slot) continue; // gone meanwhile
      const st = this.backend.slots;
      const { workerId, dpRank } = info.key;
      const hasLast = st.hasLast[slot] === 1;
      const eventId = hasLast ? u64(st.lastLo[slot], st.lastHi[slot]) : 0n;
      const packed = this.backend.dumpSlot(info.shard, slot);
      for (let o = 0; o < packed.length; o += DUMP_WORDS) {
        yield {
          kind: "stored",
          workerId,
          dpRank,
          eventId,
          parentHash: packed[o + 6] === 1 ? u64(packed[o + 4], packed[o + 5]) : undefined,
          blocks: [
            {
              externalHash: u64(packed[o], packed[o + 1]),
              localHash: u64(packed[o + 2], packed[o + 3]),
              sequenceHash: u64(packed[o + 7], packed[o + 8]),
            },
          ],
        };
      }
      if (packed.length === 0 && hasLast) {
        yield { kind: "removed", workerId, dpRank, eventId, blockHashes: [] };
      }
    }
  }

  /** Entries evicted by --max-blocks so far (no shard round trip: for a metrics gauge). */
  get evictionCount(): number {
    return this.evictions;
  }

  /** Entries held, evictions so far and memory, for benchmarks and metrics. */
  stats(): IndexStats {
    const shards = this.backend.stats();
    return {
      shards: this.backend.shards,
      entries: shards.reduce((n, s) => n + s.entries, 0),
      evictions: this.evictions,
      arrayBytes: shards.reduce((n, s) => n + s.arrayBytes, 0) + this.backend.slots.buffer.byteLength,
      shardHeapBytes: shards.reduce((n, s) => n + s.heapUsed, 0),
    };
  }

  /** Shard answers to queries so far: read from the shards' shared memory, or asked of the shard threads (no round trip). */
  queryAnswers(): { read: number; asked: number } {
    return this.backend.queryAnswers();
  }

  /**
   * Why the index cannot serve: the first shard thread found down (queries
   * and its workers' events fail with it), or undefined. Only shard threads
   * go down; the index in this thread never does.
   */
  get down(): IndexShardDownError | undefined {
    return this.threads?.down;
  }

  /** Shard threads found down so far (for a gauge). */
  get shardsDown(): number {
    return this.threads?.shardsDown ?? 0;
  }

  /** Calls `listener` once, soon after the first shard thread is found down (never for an index in this thread). */
  onDown(listener: (err: IndexShardDownError) => void): void {
    this.threads?.onDown(listener);
  }

  /** Stops shard threads (no-op for a local index). */
  close(): Promise<void> {
    return this.backend.close();
  }

  /**
   * A client stream's raw applies (KvIndex.openRawStream): undefined without
   * shard threads that decode, or when RAW_STREAMS streams already have one.
   *
   * A message whose workers all live on one shard goes there whole ("direct",
   * applied as the shard decodes it). One naming workers of several shards
   * goes in parts, two-phase (submitSplit): each shard prepares its part and
   * this thread commits all of them or none. Order within the stream: direct
   * messages go to one shard at a time (a refusal there stops the ones after
   * it through the stream's flag); while split messages are outstanding,
   * every message goes in parts (a direct one would apply before an earlier
   * part is committed); and a split message commits only once every message
   * before it is known applied, else it is aborted and comes back refused.
   */
  openRawStream(): RawStream | undefined {
    const threads = this.threads;
    if (threads === undefined || !threads.takesRaw) return undefined;
    const flag = threads.takeRawFlag();
    if (flag === undefined) return undefined;
    /** The shard of the outstanding direct messages. */
    let direct = -1;
    /** Outstanding split messages. */
    let split = 0;
    /** Settles with whether the last message submitted was refused (or failed): what a split message's decision waits for. */
    let lastRefused: Promise<boolean> = Promise.resolve(false);
    const held = new FlaggedSubmissions(threads, flag);
    const stream = {
      get outstanding() {
        return held.outstanding;
      },
      submit: (bytes: Uint8Array): Promise<RawApplied> | undefined => {
        if (held.closed) return undefined;
        const target = this.rawTarget(bytes);
        if (target === undefined) return undefined;
        const claims = new Set<string>();
        for (const key of target.inFlight) this.claimInFlight(key, () => this.bySlot[this.inFlight.get(key)!.slot]!.key, claims);
        const one = target.parts.length === 1 ? target.parts[0] : undefined;
        const isDirect = one !== undefined && split === 0 && (held.outstanding === 0 || one.shard === direct);
        let submitted: { applied: Promise<RawApplied>; refused: Promise<boolean> } | undefined;
        if (isDirect) {
          // A shard behind on its queue: decode here (this thread has room), and queue the records under the stream's flag.
          const words =
            threads.queuedWords(one.shard) > this.decodeHerePastWords ? this.submitDecodedRaw(bytes, one, flag) : threads.submitRaw(one.shard, flag, one.pairs, bytes);
          if (words !== undefined) submitted = { applied: words.then(rawApplied), refused: words.then((w) => w[0] !== RAW_APPLIED, () => true) };
        } else submitted = this.submitSplit(bytes, target, flag, lastRefused);
        if (submitted === undefined) {
          this.releaseClaims(claims);
          return undefined;
        }
        if (isDirect) direct = one.shard;
        else split++;
        lastRefused = submitted.refused;
        const done = (): void => {
          if (!isDirect) split--;
          this.releaseClaims(claims);
        };
        return held.track(submitted.applied, done, (applied) => applied, () => this.evictOverflow());
      },
      resume: () => {
        threads.clearRawFlag(flag);
        lastRefused = Promise.resolve(false);
      },
      close: () => held.close(),
    };
    return stream satisfies RawStream;
  }

  /**
   * An engine feed whose payloads the owning shard decodes and applies
   * (KvIndex.openEngineFeed): undefined without shard threads that take
   * them, or when RAW_STREAMS feeds and streams already hold a flag.
   */
  openEngineFeed(): EngineFeed | undefined {
    const threads = this.threads;
    if (threads === undefined || threads.feedBlockSize === 0) return undefined;
    const flag = threads.takeRawFlag();
    if (flag === undefined) return undefined;
    const held = new FlaggedSubmissions(threads, flag);
    /**
     * Keys named by this feed's entries in flight, with their slot. The
     * shard numbers a key's events on from where the feed's previous entry
     * left it (FEED_ID_CONTINUE); with none in flight the caller's last id
     * is exact and is given.
     */
    const carried = new Map<string, { slot: number; entries: number }>();
    const feed = {
      get outstanding() {
        return held.outstanding;
      },
      submit: (m: EngineFeedMessage, payload: Uint8Array): Promise<EngineFeedApplied | "refused"> | undefined => {
        if (held.closed) return undefined;
        const pairs: number[] = [];
        const keys: string[] = [];
        const flying: string[] = [];
        let shard = -1;
        for (const dpRank of m.ranks) {
          const key = workerKeyString({ workerId: m.workerId, dpRank });
          let slot = this.byKey.get(key);
          if (slot === undefined) {
            slot = this.inFlight.get(key)?.slot;
            if (slot === undefined) continue; // not known yet: a payload naming it is refused and takes the main thread's path
            flying.push(key);
          }
          const c = carried.get(key);
          if (c !== undefined && c.slot !== slot) return undefined; // the worker was dropped and came back meanwhile
          const last = c === undefined ? m.lastEventId(dpRank) : 0n;
          pairs.push(dpRank, slot, c === undefined ? FEED_ID_GIVEN : FEED_ID_CONTINUE, Number(last & 0xffffffffn), Number(last >> 32n));
          keys.push(key);
          shard = this.bySlot[slot]!.shard; // every rank of a worker lives on one shard
        }
        if (shard < 0) return undefined;
        const claims = new Set<string>();
        for (const key of flying) this.claimInFlight(key, () => this.bySlot[this.inFlight.get(key)!.slot]!.key, claims);
        const head = [ENGINE_CODES.indexOf(m.engine), Number(m.workerId & 0xffffffffn), Number((m.workerId >> 32n) & 0xffffffffn), m.defaultRank >>> 0];
        const submitted = threads.submitEngine(shard, flag, head, Uint32Array.from(pairs), payload);
        if (submitted === undefined) {
          this.releaseClaims(claims);
          return undefined;
        }
        keys.forEach((key, i) => {
          const c = carried.get(key);
          if (c === undefined) carried.set(key, { slot: pairs[i * ENGINE_PAIR_WORDS + 1], entries: 1 });
          else c.entries++;
        });
        const done = (): void => {
          for (const key of keys) {
            const c = carried.get(key)!;
            if (--c.entries === 0) carried.delete(key);
          }
          this.releaseClaims(claims);
        };
        const take = (words: Int32Array): EngineFeedApplied | "refused" => {
          const applied = engineApplied(words);
          // Before done() stops carrying the pair, so the next submit reads the new id.
          if (applied !== "refused") m.setLastEventId(applied.dpRank, applied.lastEventId);
          return applied;
        };
        return held.track(submitted, done, take, () => this.evictOverflow());
      },
      resume: () => threads.clearRawFlag(flag),
      close: () => held.close(),
    };
    return feed satisfies EngineFeed;
  }

  /**
   * A message naming workers of several shards, in parts (RAW_PART): every
   * part is queued at once; when every shard has prepared its part and no
   * earlier message of the stream was refused (`earlier`), each is committed,
   * else each prepared one is aborted and the message comes back refused
   * (nothing applied anywhere; the stream decodes it here, so its answer and
   * any error are the decoded path's). A shard down fails the message with
   * its IndexShardDownError (after aborting the live shards' parts), never
   * leaving it waiting. Undefined when a ring has no room now.
   */
  private submitSplit(
    bytes: Uint8Array,
    target: RawTarget,
    flag: number,
    earlier: Promise<boolean>,
  ): { applied: Promise<RawApplied>; refused: Promise<boolean> } | undefined {
    const threads = this.threads!;
    const { parts, eventPart } = target;
    const token = this.nextToken;
    let prepares: Promise<Int32Array>[] | undefined;
    try {
      prepares = threads.submitRawParts(flag, token, parts, bytes);
    } catch (err) {
      return { applied: Promise.reject(err), refused: Promise.resolve(true) };
    }
    if (prepares === undefined) return undefined;
    this.nextToken = (token + 1) >>> 0;
    const decided = Promise.all([earlier, Promise.allSettled(prepares)]).then(([refusedBefore, answers]) => {
      let failed: unknown;
      let valid = !refusedBefore;
      answers.forEach((a, k) => {
        if (a.status === "rejected") failed ??= a.reason;
        else if (a.value[0] !== RAW_PREPARED || a.value[1] !== parts[k].events) valid = false;
      });
      const commit = valid && failed === undefined;
      // Every later raw message of the stream must come back refused too, whatever refused this one.
      if (!commit) threads.blockRawFlag(flag);
      // The whole message's store stamps, drawn now: decisions follow stream order, so stamps do too (eviction goes by them).
      let stamp = commit ? this.stamps(answers.reduce((n, a) => n + (a as PromiseFulfilledResult<Int32Array>).value[2], 0)) : 0;
      // Only the shards that hold a prepared part hear the decision (a refused or failed part holds nothing).
      const settles = answers.map((a, k) => {
        if (a.status !== "fulfilled" || a.value[0] !== RAW_PREPARED) return undefined;
        const first = commit ? stamp : undefined;
        stamp += a.value[2];
        return threads.settleRawPart(parts[k].shard, flag, token, first);
      });
      return { commit, failed, settles };
    });
    const applied = decided.then(async ({ commit, failed, settles }): Promise<RawApplied> => {
      if (!commit) {
        for (const s of settles) s?.catch(() => {}); // an abort on a shard that died meanwhile: it holds nothing any more
        if (failed !== undefined) throw failed;
        return "refused";
      }
      return splitApplied(await Promise.all(settles as Promise<Int32Array>[]), eventPart);
    });
    return { applied, refused: decided.then((d) => !d.commit) };
  }

  /**
   * A raw stream's message decoded here and queued as records under its
   * flag (RAW_RECORDS); undefined when it must take the decoded path after
   * all (the hot-path decoder hands it back, a clear, a pair the peek missed).
   */
  private submitDecodedRaw(bytes: Uint8Array, target: RawPart, flag: number): Promise<Int32Array> | undefined {
    // Written into records below, before the next decode: views of the decoder's buffers.
    const decoded = (this.rawDecoder ??= new IngestDecoder(this.threads!.blockSize)).decode(bytes, true);
    if (decoded === undefined) return undefined;
    const { batch, restore } = decoded;
    const ev = batch.events;
    const slots = new Uint32Array(batch.count);
    for (let i = 0; i < batch.count; i++) {
      const o = i * EVENT_WORDS;
      if (ev[o + E_KIND] === KIND_CLEARED) return undefined;
      const p = pairIndex(target.pairs, 0, target.pairs.length / RAW_PAIR_WORDS, ev[o + E_WORKER_LO], ev[o + E_WORKER_HI], ev[o + E_DP_RANK]);
      if (p < 0) return undefined;
      slots[i] = target.pairs[p + 3];
    }
    const w = this.writers[target.shard];
    w.reset();
    let stamp = this.stamps(stampsOfRange(batch, 0, batch.count));
    for (let i = 0; i < batch.count; i++) {
      w.batchEvent(batch, i, slots[i], stamp, restore);
      stamp += stampsOf(batch, i);
    }
    return this.threads!.submitRawRecords(target.shard, flag, w);
  }

  /**
   * Where an IngestKvEvents message's events go: one part per shard owning
   * workers it names, with their slots, and (for several parts) which bytes
   * each part holds and each event's part; also the keys still in flight.
   * Undefined when it must take the decoded path (see WorkerPeek; a worker
   * not known yet: its slot is assigned there).
   */
  private rawTarget(bytes: Uint8Array): RawTarget | undefined {
    const peek = this.peek;
    if (!peek.peek(bytes) || peek.count === 0) return undefined;
    const inFlight: string[] = [];
    const partOf = this.partOfShard.fill(-1);
    const pairPart = new Int32Array(peek.count);
    const pairs: number[][] = [];
    const shards: number[] = [];
    for (let i = 0; i < peek.count; i++) {
      const lo = peek.words[3 * i];
      const hi = peek.words[3 * i + 1];
      const rank = peek.words[3 * i + 2];
      const key = `${hi === 0 ? lo : u64(lo, hi)}:${rank}`;
      let slot = this.byKey.get(key);
      if (slot === undefined) {
        slot = this.inFlight.get(key)?.slot;
        if (slot === undefined) return undefined;
        inFlight.push(key);
      }
      const s = this.bySlot[slot]!.shard;
      if (partOf[s] < 0) {
        partOf[s] = shards.length;
        shards.push(s);
        pairs.push([]);
      }
      pairPart[i] = partOf[s];
      pairs[partOf[s]].push(lo, hi, rank, slot);
    }
    if (shards.length === 1) {
      // The whole message (sent in parts only while the stream has split messages outstanding).
      let events = 0;
      for (let f = 0; f < peek.fields; f++) if (peek.fieldPair[f] >= 0) events++;
      return { parts: [{ shard: shards[0], pairs: Uint32Array.from(pairs[0]), ranges: new Int32Array([0, bytes.length]), byteLength: bytes.length, events }], eventPart: new Uint16Array(events), inFlight };
    }
    // Each part: its events' bytes, and every other top-level field (restore, unknown ones) as the whole message has it.
    const ranges: number[][] = shards.map(() => []);
    const byteLength = new Array<number>(shards.length).fill(0);
    const events = new Array<number>(shards.length).fill(0);
    const eventPart = new Uint16Array(peek.fields);
    let n = 0;
    const take = (k: number, from: number, to: number) => {
      const r = ranges[k];
      if (r.length > 0 && r[r.length - 1] === from) r[r.length - 1] = to;
      else r.push(from, to);
      byteLength[k] += to - from;
    };
    for (let f = 0; f < peek.fields; f++) {
      const from = peek.fieldStart[f];
      const to = peek.fieldEnd[f];
      const pair = peek.fieldPair[f];
      if (pair < 0) {
        for (let k = 0; k < shards.length; k++) take(k, from, to);
        continue;
      }
      const k = pairPart[pair];
      take(k, from, to);
      events[k]++;
      eventPart[n++] = k;
    }
    return {
      parts: shards.map((shard, k) => ({ shard, pairs: Uint32Array.from(pairs[k]), ranges: Int32Array.from(ranges[k]), byteLength: byteLength[k], events: events[k] })),
      eventPart: eventPart.subarray(0, n),
      inFlight,
    };
  }

  /** `n` consecutive store stamps: from the clock shared with the shard threads, which draw from it for raw messages. */
  private stamps(n: number): number {
    const shared = this.threads?.clock;
    if (shared === undefined) {
      const at = this.clock;
      this.clock += n;
      return at;
    }
    return Number(Atomics.add(shared, 0, BigInt(n)));
  }

  // ---- internals -------------------------------------------------------

  /** The slot of a known worker key, or of one first named by batches still queued. */
  private slotOf(key: string): number | undefined {
    return this.byKey.get(key) ?? this.inFlight.get(key)?.slot;
  }

  private routed(op: number, slot: number, shard: number, worker: WorkerKey, hashes: readonly bigint[]): void {
    for (const w of this.writers) w.reset();
    this.writers[shard].hashes(op, slot, worker, hashes, this.stamps(hashes.length + 1));
    this.backend.apply(this.writers.map((w) => (w.count > 0 ? w : undefined)));
  }

  /** Throws IndexCapacityError, before anything is applied, when `batch` names more new pairs than there are free slots. */
  private ensureRoomFor(batch: EventBatch): void {
    const known = this.byKey.size + this.inFlight.size;
    const free = this.capacity - known;
    if (batch.count <= free) return;
    const fresh = new Set<string>();
    for (let i = 0; i < batch.count; i++) {
      const key = batchKeyString(batch.events, i * EVENT_WORDS);
      if (!this.byKey.has(key) && !this.inFlight.has(key)) fresh.add(key);
    }
    if (fresh.size > free) throw new IndexCapacityError(this.capacity, known, fresh.size);
  }

  /** The slot of a worker key; a new key gets a pending slot that settle() keeps or frees. */
  private slotFor(key: WorkerKey, pending: Map<string, number>): number {
    return this.slotForKey(workerKeyString(key), () => key, pending);
  }

  private slotForKey(k: string, keyOf: () => WorkerKey, pending: Map<string, number>): number {
    const known = this.byKey.get(k) ?? pending.get(k) ?? this.inFlight.get(k)?.slot;
    if (known !== undefined) return known;
    const slot = this.newSlot(k, keyOf());
    pending.set(k, slot);
    return slot;
  }

  /** A slot for a worker key not held yet, on its worker's shard (a new worker goes to the shard with the fewest). */
  private newSlot(k: string, key: WorkerKey): number {
    let placed = this.shardOf.get(key.workerId);
    if (placed === undefined) {
      let best = 0;
      for (let s = 1; s < this.workersPerShard.length; s++) {
        if (this.workersPerShard[s] < this.workersPerShard[best]) best = s;
      }
      placed = { shard: best, slots: 0 };
      this.shardOf.set(key.workerId, placed);
      this.workersPerShard[best]++;
    }
    // Lowest free slot first (freeSlots is kept descending): slot bitsets stay as narrow as the live workers.
    const slot = this.freeSlots.pop() ?? this.bySlot.length;
    // ensureRoomFor() ran first, so this is a bug, not input.
    if (slot >= this.capacity) throw new Error(`slot ${slot} past the index capacity ${this.capacity}`);
    placed.slots++;
    this.bySlot[slot] = { key: { workerId: key.workerId, dpRank: key.dpRank }, keyString: k, shard: placed.shard };
    return slot;
  }

  /** Keeps the pending slots whose worker now exists; frees the others (rejected first events). */
  private settle(pending: Map<string, number>): void {
    for (const [key, slot] of pending) {
      if (this.backend.slots.exists[slot] === 1) {
        this.byKey.set(key, slot);
        this.workerSetVersion++;
      } else this.releaseSlot(slot);
    }
  }

  private releaseSlot(slot: number): void {
    const info = this.bySlot[slot]!;
    this.bySlot[slot] = undefined;
    let at = this.freeSlots.length;
    while (at > 0 && this.freeSlots[at - 1] < slot) at--;
    this.freeSlots.splice(at, 0, slot);
    const placed = this.shardOf.get(info.key.workerId)!;
    if (--placed.slots === 0) {
      this.shardOf.delete(info.key.workerId);
      this.workersPerShard[placed.shard]--;
    }
  }

  private totalEntries(): number {
    const c = this.backend.slots.count;
    let n = 0;
    for (const slot of this.byKey.values()) n += c[slot];
    return n;
  }

  private evictOverflow(): void {
    if (this.maxBlocks === undefined) return;
    for (let round = 0; round < 64; round++) {
      const over = this.totalEntries() - this.maxBlocks;
      if (over <= 0) return;
      const want = Math.min(over, 1 << 16);
      // The want-th oldest stamp across shards is the eviction threshold.
      const stamps: number[] = [];
      for (let s = 0; s < this.backend.shards; s++) stamps.push(...this.backend.oldestStamps(s, want));
      if (stamps.length === 0) return;
      stamps.sort((a, b) => a - b);
      this.evictions += this.backend.evictThrough(stamps[Math.min(want, stamps.length) - 1]);
    }
  }
}

/** One shard's share of a raw message: its workers' pairs (RAW_PAIR_WORDS each, with slots), and for a split message its bytes ((start, end) ranges of the message) and event count. */
interface RawPart {
  shard: number;
  pairs: Uint32Array;
  ranges: Int32Array;
  byteLength: number;
  events: number;
}

/** rawTarget()'s answer: one part (direct) or several (split, with each event's part), and the keys still in flight. */
interface RawTarget {
  parts: RawPart[];
  eventPart: Uint16Array;
  inFlight: string[];
}

/** Each event's result from the shards' result words, at the places writeRecords() noted. */
function fillResults(outs: readonly Int32Array[], where: Int32Array, from: number, to: number, results: ApplyResult[]): void {
  for (let i = from; i < to; i++) {
    results[i] = resultOf(outs[where[2 * (i - from)]][where[2 * (i - from) + 1]]);
  }
}

/** A shard's result word (outcome | gap << 2 | unknownRemovals << 3) as a result. */
function resultOf(code: number): ApplyResult {
  return { outcome: OUTCOMES[code & 3], notes: { gap: (code & 4) !== 0, unknownRemovals: code >>> 3 } };
}

/** A raw message's result entry (see RAW_ENTRY) as results. */
function rawApplied(words: Int32Array): RawApplied {
  if (words[0] !== RAW_APPLIED) return "refused";
  const n = words[1];
  const results: ApplyResult[] = new Array(n);
  for (let i = 0, r = RAW_RESULT_HEADER; i < n; i++, r += RAW_EVENT_WORDS) {
    results[i] = resultOf(words[r]);
  }
  return { results, eventOf: (i) => eventRef(words, RAW_RESULT_HEADER + i * RAW_EVENT_WORDS), split: false };
}

/** A split message's results, in its event order, from its parts' commit entries (`eventPart`: each event's part). */
function splitApplied(outs: readonly Int32Array[], eventPart: Uint16Array): RawApplied {
  const next = new Int32Array(outs.length).fill(RAW_RESULT_HEADER);
  const at = new Int32Array(eventPart.length);
  const results: ApplyResult[] = new Array(eventPart.length);
  for (let i = 0; i < eventPart.length; i++) {
    const k = eventPart[i];
    at[i] = next[k];
    next[k] += RAW_EVENT_WORDS;
    results[i] = resultOf(outs[k][at[i]]);
  }
  outs.forEach((w, k) => {
    // Each part was prepared with its event count, so a commit answers for exactly its events.
    if (w[0] !== RAW_APPLIED || RAW_RESULT_HEADER + w[1] * RAW_EVENT_WORDS !== next[k]) throw new Error(`shard answered a commit with ${w[1]} events where its part had ${(next[k] - RAW_RESULT_HEADER) / RAW_EVENT_WORDS}`);
  });
  return { results, eventOf: (i) => eventRef(outs[eventPart[i]], at[i]), split: true };
}

/** The event a raw result names at word `r`: worker, rank, event id. */
function eventRef(words: Int32Array, r: number): EventRef {
  return { workerId: u64(words[r + 1] >>> 0, words[r + 2] >>> 0), dpRank: words[r + 3] >>> 0, eventId: u64(words[r + 4] >>> 0, words[r + 5] >>> 0) };
}

/** An engine entry's result (see ENGINE_ENTRY): a raw entry's, then dp_rank, the last event id and the count matrix. */
function engineApplied(words: Int32Array): EngineFeedApplied | "refused" {
  const applied = rawApplied(words);
  if (applied === "refused") return applied;
  const t = RAW_RESULT_HEADER + words[1] * RAW_EVENT_WORDS;
  return { ...applied, dpRank: words[t] >>> 0, lastEventId: u64(words[t + 1] >>> 0, words[t + 2] >>> 0), counts: words.subarray(t + ENGINE_RESULT_TAIL) };
}

/** workerKeyString() of the event at word `o`, without a bigint for the usual ids below 2^32. */
function batchKeyString(ev: Uint32Array, o: number): string {
  const lo = ev[o + E_WORKER_LO];
  const hi = ev[o + E_WORKER_HI];
  return `${hi === 0 ? lo : u64(lo, hi)}:${ev[o + E_DP_RANK]}`;
}
