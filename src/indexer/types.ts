// The index's own types and the one interface every implementation serves;
// the events it applies are protocols/events.ts. Workers are dense "slots".
import type { EventBatch } from "../protocols/eventBatch.js";
import type { IndexEvent, WorkerKey } from "../protocols/events.js";
import type { EngineKind } from "../decoding/engine/decode.js";

/** Why an event was not applied (or only partly applied), as counted in metrics. */
export type EventOutcome =
  | "applied"
  | "parent_block_not_found"
  | "stale_event_id";

/** Anomalies worth counting that do not stop an event from applying. */
export interface ApplyNotes {
  /** Removals naming blocks the worker does not hold. */
  unknownRemovals: number;
  /** The event id skipped ahead of the expected one. */
  gap: boolean;
}

export interface ApplyResult {
  outcome: EventOutcome;
  notes: ApplyNotes;
}

/** How many leading prompt blocks each worker holds. */
export type Overlaps = Map<string, number>;

/** One block a worker holds, as the map-based indexes keep it (PrefixIndex, the lower tiers). */
export interface HeldBlock {
  sequenceHash: bigint;
  localHash: bigint;
  /** External hash of the parent block, kept so the index can be dumped as events. */
  parentExternal: bigint | undefined;
}

/**
 * The KV block index: which worker holds which prefix. Implementations are
 * interchangeable (single-thread, sharded) and wrapped for metrics.
 */
export interface KvIndex {
  /** Most (worker, dp_rank) pairs the index can hold at once (Infinity: no fixed limit). */
  readonly capacity: number;
  /**
   * Applies a batch of GPU-tier events in order, one result each (a sharded
   * index takes one round trip per batch); never partly applies a rejected
   * event. A batch naming more new workers than `capacity` leaves room for
   * throws IndexCapacityError and changes nothing.
   */
  applyBatch(batch: EventBatch, restore?: boolean): ApplyResult[];
  /**
   * applyBatch() for the ingest path: an index with threads queues the batch
   * and resolves once it is applied, so the caller is free meanwhile. Batches
   * apply in the order they are submitted, also relative to every other call;
   * a query sees every batch whose promise resolved before the query was made.
   * A capacity refusal is thrown by the call itself (not through the promise),
   * before anything is queued, so a caller stops at once.
   */
  applyBatchAsync(batch: EventBatch, restore?: boolean): Promise<ApplyResult[]>;
  /**
   * The ingest path's fastest apply, offered by an index with shard threads
   * (undefined otherwise, or when too many streams have one): a client
   * stream's IngestKvEvents messages go to the shard that owns every worker
   * they name as wire bytes, and the shard decodes, hashes and applies them.
   */
  openRawStream?(): RawStream | undefined;
  /**
   * A native engine feed's messages decoded, hashed and applied by the shard
   * thread that owns the worker (undefined without shard threads that take
   * them, or when too many feeds and streams have one). See EngineFeed.
   */
  openEngineFeed?(): EngineFeed | undefined;
  /** Per worker (keyed by workerKeyString), the number of leading blocks held. */
  findMatches(sequenceHashes: readonly bigint[]): Overlaps;
  /**
   * findMatches() of n sequence hashes given as little-endian (lo, hi) u32
   * pairs, `words[2i]` and `words[2i + 1]`: routing's query, with no bigints.
   */
  findMatchesWords(words: Uint32Array, n: number): Overlaps;
  /** Indexes a routed prompt on a worker without an event (approximate mode). */
  storeRouted(worker: WorkerKey, sequenceHashes: readonly bigint[]): void;
  /** Drops routed blocks again (approximate mode expiry). */
  removeRouted(worker: WorkerKey, sequenceHashes: readonly bigint[]): void;
  /** Removes every dp rank of a worker; returns how many blocks were dropped. */
  removeWorker(workerId: bigint): number;
  /** Cached block count per worker key. */
  blockCounts(): Map<string, number>;
  /** Last applied event id per worker key. */
  lastEventIds(): Map<string, bigint>;
  /** Workers the index has seen, as keys. */
  workers(): WorkerKey[];
  /**
   * Changes whenever workers() would list a different set, so callers may
   * cache what they derive from it (the router's candidate list).
   */
  readonly workerSetVersion: number;
  /** Distinct blocks (by sequence hash) held by at least one worker. */
  size(): number;
  /** Stored events that rebuild the index (see DumpIndex). */
  dump(): Iterable<IndexEvent>;
  /** The sequence hash of the block a worker holds under this external hash, or undefined. */
  sequenceHashOf(worker: WorkerKey, externalHash: bigint): bigint | undefined;
}

/** A client stream's raw applies (KvIndex.openRawStream); `T`: what a submitted message resolves to. */
export interface RawStreamOf<T> {
  /** Raw messages submitted whose results are not in yet. */
  readonly outstanding: number;
  /**
   * Queues a message's wire bytes to a shard; undefined when it must take the
   * decoded path (a worker not known yet, workers on several shards, a clear,
   * another shard while messages are outstanding): the caller then applies
   * nothing else of the stream until `outstanding` is 0. A message the shard
   * cannot take resolves "refused" and changes nothing, and so does every raw
   * message of the stream queued after it, until the caller, having applied
   * the refused ones the decoded way, calls resume().
   */
  submit(bytes: Uint8Array): Promise<T> | undefined;
  resume(): void;
  /** The stream ended. */
  close(): void;
}

export type RawStream = RawStreamOf<RawApplied>;

/** `raw` with each submitted message's outcome passed through `then` (the decorators above an index: metrics, summaries). */
export function mapRawStream<A, B>(raw: RawStreamOf<A>, then: (applied: A) => B): RawStreamOf<B> {
  return {
    get outstanding() {
      return raw.outstanding;
    },
    submit: (bytes) => raw.submit(bytes)?.then(then),
    resume: () => raw.resume(),
    close: () => raw.close(),
  };
}

/** One engine payload for the shards (EngineFeed.submit). */
export interface EngineFeedMessage {
  engine: EngineKind;
  workerId: bigint;
  /** The publisher's dp_rank, for payloads that name none. */
  defaultRank: number;
  /** The dp ranks the payload may name (those the feed has seen); the others are refused. */
  ranks: Iterable<number>;
  /** The feed's last event id for a (worker, dp_rank): the shard numbers the payload's events on from it. */
  lastEventId(dpRank: number): bigint;
  /**
   * Takes the feed's new last event id from an applied payload, called by the
   * feed before it stops carrying the pair: a submit() right after then reads
   * it from lastEventId(), not a stale one (the caller's own result handler
   * runs a microtask later, after whatever else was queued).
   */
  setLastEventId(dpRank: number, id: bigint): void;
}

/** An engine payload applied on a shard: its events' results, the dp_rank it named, the feed's last event id for it, and kvrouter_zmq_events_total's counts (FEED_TYPES × FEED_OUTCOMES). */
export type EngineFeedApplied = Exclude<RawApplied, "refused"> & { dpRank: number; lastEventId: bigint; counts: Int32Array };

/**
 * A native engine feed (one worker's ZeroMQ publishers) whose payloads the
 * shard owning the worker decodes, converts, hashes and applies, in the
 * order submitted, also relative to every other queued batch. The rules are
 * a raw stream's (RawStreamOf): submit() is undefined when the payload must
 * take the main thread's path (no (worker, dp_rank) it may name is known,
 * the ring is full); a payload the shard cannot settle alone resolves
 * "refused", changes nothing, and so does every later one of the feed
 * until the caller, having taken the refused ones the main thread's way with
 * none outstanding, calls resume().
 */
export interface EngineFeed {
  readonly outstanding: number;
  submit(message: EngineFeedMessage, payload: Uint8Array): Promise<EngineFeedApplied | "refused"> | undefined;
  resume(): void;
  close(): void;
}

/** What identifies an event in a result (rejections, warnings). */
export type EventRef = Pick<IndexEvent, "workerId" | "dpRank" | "eventId">;

/** A raw message's fate: refused (nothing applied), or one result per event (`split`: applied in parts by several shards). */
export type RawApplied = "refused" | { results: ApplyResult[]; eventOf(i: number): EventRef; split: boolean };

/**
 * The index has no slot left for a new (worker, dp_rank): thrown before any
 * part of the operation is applied, so a refused batch changes nothing.
 */
export class IndexCapacityError extends Error {
  constructor(
    readonly limit: number,
    readonly known: number,
    readonly adding: number,
  ) {
    super(`the index holds at most ${limit} (worker, dp_rank) pairs; ${known} are known and this would add ${adding}`);
  }
}

/**
 * An index shard thread stopped serving (an uncaught exception, killed for
 * memory, terminated): every call that needs that shard fails with this,
 * promptly, instead of waiting for it or answering from its frozen memory.
 * The router cannot answer for the shard's workers again (see
 * docs/indexer.md, "A shard thread that dies"): UNAVAILABLE to callers.
 */
export class IndexShardDownError extends Error {
  constructor(
    readonly shard: number,
    /** Why it stopped, as far as this thread knows it. */
    readonly reason: string,
  ) {
    super(`index shard ${shard} is down (${reason}); the router cannot answer for that shard's workers until it is restarted`);
  }
}
