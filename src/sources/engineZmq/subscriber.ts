// One engine publisher: a SUB socket on its PUB endpoint, sequence tracking,
// replay of missed ranges through its ROUTER socket, and "stale" marking when
// a range is lost for good. Batches reach the index exactly once, in seq order.
import * as zmq from "zeromq";
import type { IndexEvent, WorkerKey } from "../../protocols/events.js";
import type { EngineFeedApplied, EngineFeedMessage } from "../../indexer/types.js";
import { FEED_COUNT_WORDS, FEED_OUTCOMES, FEED_TYPES, engineReader } from "../../decoding/engine/shardFeed.js";
import { E_ID_HI, E_ID_LO, EVENT_WORDS, type EventBatch } from "../../protocols/eventBatch.js";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import { isQuietSkip, toIndexEvent } from "../../decoding/engine/convert.js";
import { DecodeError, END_SEQ, decodeBatch, decodeFrames, decodeSeq, encodeSeq } from "../../decoding/engine/decode.js";
import type { ZmqEndpoint } from "./endpoints.js";
import type { ZmqMetrics } from "./metrics.js";
import type { ShardLane } from "./shardLane.js";
import { zmqContext } from "./sockets.js";

export interface SubscriberContext {
  router: KvRouter;
  metrics: ZmqMetrics;
  /** Next index event id for a (worker, dp_rank); shared by every publisher of that worker. */
  nextEventId(worker: WorkerKey): bigint;
  /** The last event id handed out for a (worker, dp_rank), and setting it (the shard numbered events on from it). */
  lastEventId(worker: WorkerKey): bigint;
  setLastEventId(worker: WorkerKey, id: bigint): void;
  /** The worker's payloads to the index shard that owns it, or undefined when the index decodes none on its threads. */
  laneOf(workerId: bigint): ShardLane | undefined;
  /** How long one replay request may take before the range counts as lost. */
  replayTimeoutMs: number;
  /** Drops every block of the subscriber's worker (all dp ranks, as the index clears per worker), after what is queued of it. */
  dropWorker(caller: EngineSubscriber): Promise<void>;
}

/** Largest message accepted from an engine; bigger ones are dropped by ZeroMQ. */
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
const KNOWN_TYPES = new Set(["BlockStored", "BlockRemoved", "AllBlocksCleared"]);

type ReplayResult = "complete" | "skipped" | "incomplete";

export class EngineSubscriber {
  private readonly sub: zmq.Subscriber;
  private loop: Promise<void> | undefined;
  private closed = false;
  /** Next seq to apply; undefined until the first message. */
  private expected: bigint | undefined;
  /** Highest seq seen on the live socket (replays excluded). */
  private lastLiveSeq: bigint | undefined;
  /** DP ranks this publisher has spoken for (the spec's default rank included). */
  private readonly ranks = new Set<number>();
  private stale = false;
  /** The replay socket while a replay is in progress. */
  private dealer: zmq.Dealer | undefined;
  /** Occurrences per log topic, so repeated problems log at 1, 10, 100, ... */
  private readonly logCounts = new Map<string, number>();

  constructor(
    readonly spec: ZmqEndpoint,
    private readonly ctx: SubscriberContext,
  ) {
    // A deep queue (vLLM's own PUB high-water mark) keeps the live feed while a replay is in progress.
    this.sub = new zmq.Subscriber({
      context: zmqContext(),
      maxMessageSize: MAX_MESSAGE_BYTES,
      linger: 0,
      receiveHighWaterMark: 100_000,
    });
    this.ranks.add(spec.dpRank);
    this.feedMessage = {
      engine: spec.engine,
      workerId: spec.workerId,
      defaultRank: spec.dpRank,
      ranks: this.ranks,
      lastEventId: (dpRank) => ctx.lastEventId({ workerId: spec.workerId, dpRank }),
      setLastEventId: (dpRank, id) => ctx.setLastEventId({ workerId: spec.workerId, dpRank }, id),
    };
  }

  start(): void {
    this.sub.connect(this.spec.endpoint);
    this.sub.subscribe(this.spec.topic);
    this.setStaleGauge();
    this.loop = this.run();
    log.info("subscribed to engine KV events", this.where());
  }

  async stop(): Promise<void> {
    this.closed = true;
    this.sub.close();
    this.dealer?.close(); // ends a replay in progress now rather than at its timeout
    await this.loop;
    for (const dpRank of this.ranks) {
      this.ctx.metrics.stale.remove({ worker_id: String(this.spec.workerId), dp_rank: String(dpRank) });
    }
  }

  /** True while the index may be missing blocks of this publisher's worker. */
  isStale(): boolean {
    return this.stale;
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      let frames: Buffer[];
      try {
        frames = await this.sub.receive();
      } catch (err) {
        if (this.closed) break;
        this.warn("receive", "ZeroMQ receive failed; retrying", { error: String(err) });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      try {
        await this.onMessage(frames);
      } catch (err) {
        // A bug must not stop the feed: say so and keep reading.
        log.error("engine KV batch handling failed", { ...this.where(), error: String((err as Error).stack ?? err) });
      }
    }
  }

  private async onMessage(raw: Buffer[]): Promise<void> {
    let seq: bigint;
    let payload: Uint8Array;
    try {
      ({ seq, payload } = decodeFrames(raw));
    } catch (err) {
      this.ctx.metrics.frames.inc({ outcome: "malformed" });
      this.warn("malformed", "dropped a malformed ZeroMQ message", { error: (err as Error).message });
      return;
    }
    // The live feed of one publisher process only moves forward: a seq that
    // does not is a new process (an engine restart) with an empty cache.
    const restarted = this.lastLiveSeq !== undefined && seq <= this.lastLiveSeq;
    this.lastLiveSeq = seq;
    if (restarted) await this.onPublisherRestart();
    if (this.expected === undefined) {
      // Joined after the publisher started: what came before may be cached.
      if (seq > 0n) await this.recover(0n, seq, restarted ? "publisher restarted" : "joined late");
      else this.expected = 0n;
    } else if (seq > this.expected) {
      await this.recover(this.expected, seq, "sequence gap");
    }
    if (seq < this.expected!) {
      // Already applied (typically through a replay that overtook the live feed).
      this.ctx.metrics.frames.inc({ outcome: "duplicate" });
      return;
    }
    await this.applyBatch(seq, payload, "applied");
  }

  /** Fetches [from, upTo) from the replay socket; what cannot be fetched marks the worker stale. */
  private async recover(from: bigint, upTo: bigint, why: string): Promise<void> {
    this.expected = from;
    let result: ReplayResult = "incomplete";
    if (this.spec.replay !== undefined) {
      try {
        result = await this.replay(from, upTo);
      } catch (err) {
        this.warn("replay", "replay request failed", { error: String(err) });
      }
    }
    if (this.closed) return; // stopped mid-replay: leave the index alone
    if (result === "complete") {
      this.ctx.metrics.gaps.inc({ outcome: "replayed" });
      log.info("recovered missed KV events through replay", { ...this.where(), why, from, to: upTo - 1n });
      return;
    }
    this.ctx.metrics.gaps.inc({ outcome: "unrecoverable" });
    this.warn("stale", "missed KV events could not be replayed; worker marked stale and its blocks dropped", {
      why,
      missing_from: this.expected,
      missing_to: upTo - 1n,
      replay: this.spec.replay ?? "none configured",
    });
    // A replay that skipped ahead already dropped the blocks before applying what followed the hole.
    if (result === "incomplete") await this.markStale();
    if (this.expected! < upTo) this.expected = upTo;
  }

  /**
   * Streams the replay reply into the index. "complete": every batch of
   * [from, upTo) arrived in order; "skipped": the publisher's buffer began
   * after `from` (worker already marked stale); "incomplete": it ended early.
   */
  private async replay(from: bigint, upTo: bigint): Promise<ReplayResult> {
    const deadline = Date.now() + this.ctx.replayTimeoutMs;
    const dealer = new zmq.Dealer({ context: zmqContext(), linger: 0, receiveTimeout: this.ctx.replayTimeoutMs, sendTimeout: this.ctx.replayTimeoutMs });
    this.dealer = dealer;
    let contiguous = true;
    try {
      dealer.connect(this.spec.replay!);
      // The publisher's ROUTER expects [identity, empty delimiter, start seq].
      await dealer.send([Buffer.alloc(0), encodeSeq(from)]);
      for (;;) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) break;
        dealer.receiveTimeout = remaining;
        const frames = await dealer.receive().catch((err: { code?: string }) => {
          if (err.code === "EAGAIN") return undefined; // timed out
          throw err;
        });
        if (frames === undefined) break;
        // After the delimiter: [seq, payload] (SGLang, older vLLM) or [topic, seq, payload] (newer vLLM).
        const body = frames[0]?.length === 0 ? frames.slice(1) : frames;
        if (body.length !== 2 && body.length !== 3) {
          this.ctx.metrics.frames.inc({ outcome: "malformed" });
          continue;
        }
        let seq: bigint;
        try {
          seq = decodeSeq(body[body.length - 2]);
        } catch (err) {
          this.ctx.metrics.frames.inc({ outcome: "malformed" });
          this.warn("malformed", "dropped a malformed replay message", { error: (err as DecodeError).message });
          continue;
        }
        if (seq === END_SEQ) break;
        // Only the requested range: what lies at or past upTo comes on the live
        // feed, and taking it here would move `expected` past live batches,
        // which would then be dropped as duplicates.
        if (seq >= upTo) break;
        if (seq < this.expected!) continue;
        if (seq > this.expected!) {
          // The publisher's buffer no longer holds the start of the range.
          contiguous = false;
          await this.markStale();
        }
        await this.applyBatch(seq, body[body.length - 1], "replayed");
      }
    } finally {
      this.dealer = undefined;
      dealer.close();
    }
    if (!contiguous) return "skipped";
    return this.expected! >= upTo ? "complete" : "incomplete";
  }

  /**
   * Hands a batch to the index: as payload bytes to the shard thread that
   * owns the worker, which decodes and applies it (ShardLane), or decoded
   * here. Nothing decoded here may overtake a payload queued to the shard.
   */
  private async applyBatch(seq: bigint, payload: Uint8Array, outcome: "applied" | "replayed"): Promise<void> {
    // A stopped feed (worker forgotten) must not bring the worker back into the index.
    if (this.closed) return;
    this.expected = seq + 1n;
    const lane = this.ctx.laneOf(this.spec.workerId);
    if (lane !== undefined) {
      const queued = lane.submit(this.feedMessage, {
        payload,
        applied: (result) => this.appliedOnShard(result, outcome),
        failed: (err) => {
          this.ctx.metrics.frames.inc({ outcome });
          this.warn("apply_failed", "the index failed to apply a KV event batch", { seq, error: String(err) });
        },
        redo: () => this.decodeHere(seq, payload, outcome, "shard_refused"),
      });
      if (queued) return;
      if (lane.busy) await lane.quiesce();
      if (this.closed) return;
    }
    this.decodeHere(seq, payload, outcome, "main");
  }

  /** What the shard needs besides the payload: whose it is and where its event ids stand. */
  private readonly feedMessage: EngineFeedMessage;

  /** A payload the shard decoded and applied: what decodeHere() would have counted. */
  private appliedOnShard(result: EngineFeedApplied, outcome: "applied" | "replayed"): void {
    const { metrics } = this.ctx;
    this.countEvents(result.counts); // the feed took the new last event id already (EngineFeedMessage.setLastEventId)
    metrics.frames.inc({ outcome });
    metrics.decoded.inc({ path: "shard" });
  }

  /** kvrouter_zmq_events_total from a feed count matrix (FEED_TYPES × FEED_OUTCOMES). */
  private countEvents(c: ArrayLike<number>): void {
    for (let i = 0; i < c.length; i++) {
      if (c[i] === 0) continue;
      const type = FEED_TYPES[Math.floor(i / FEED_OUTCOMES.length)];
      this.ctx.metrics.events.inc({ type, outcome: FEED_OUTCOMES[i % FEED_OUTCOMES.length] }, c[i]);
    }
  }

  private readonly counts = new Int32Array(FEED_COUNT_WORDS);

  /** Decodes a batch here and queues (or applies) its events; a refused payload's way too. */
  private decodeHere(seq: bigint, payload: Uint8Array, outcome: "applied" | "replayed", path: "main" | "shard_refused"): void {
    if (this.closed) return;
    const { metrics, router } = this.ctx;
    metrics.decoded.inc({ path });
    // The common case read flat (no objects, hashed in WebAssembly); anything else the reference way below.
    this.counts.fill(0);
    const flat = engineReader(router.config.blockSize).read(payload, this.spec.engine, this.spec.workerId, this.spec.dpRank, this.counts);
    if (flat !== undefined) {
      this.countEvents(this.counts);
      this.applyFlat(seq, flat.batch, flat.dpRank, outcome);
      return;
    }
    let batch;
    try {
      batch = decodeBatch(payload, this.spec.engine);
    } catch (err) {
      metrics.frames.inc({ outcome: "undecodable" });
      this.warn("undecodable", "dropped an undecodable KV event batch", { seq, error: (err as Error).message });
      return;
    }
    const worker: WorkerKey = { workerId: this.spec.workerId, dpRank: batch.dpRank ?? this.spec.dpRank };
    this.noteRank(worker.dpRank);
    const events: IndexEvent[] = [];
    let cleared = false;
    for (const e of batch.events) {
      if (e.type === "bad") {
        metrics.events.inc({ type: KNOWN_TYPES.has(e.tag) ? e.tag : "unknown", outcome: "bad_event" });
        this.warn("bad_event", "skipped an undecodable KV event", { seq, type: e.tag, error: e.reason });
        continue;
      }
      const converted = toIndexEvent(e, worker, 0n, router.config.blockSize);
      if ("skip" in converted) {
        metrics.events.inc({ type: e.type, outcome: converted.skip });
        if (!isQuietSkip(converted.skip)) {
          this.warn(converted.skip, `rejected ${e.type}: ${converted.detail}`, {
            fix: converted.skip === "block_size_mismatch" ? "start kv-router with the engine's block size (--block-size)" : undefined,
          });
        }
        continue;
      }
      // Ids are handed out only to events the index will see, so its own gap check stays quiet.
      converted.event.eventId = this.ctx.nextEventId(worker);
      metrics.events.inc({ type: e.type, outcome: "converted" });
      events.push(converted.event);
      if (e.type === "AllBlocksCleared") cleared = true;
    }
    if (events.length === 0) metrics.frames.inc({ outcome });
    else if (!this.applyCounted(seq, outcome, () => router.applyEventsAsync(events))) return;
    if (cleared && this.stale) {
      // The engine's cache is empty and so is our view: they agree again.
      this.stale = false;
      this.setStaleGauge();
      log.info("worker no longer stale: its engine cleared its cache", this.where());
    }
  }

  private noteRank(dpRank: number): void {
    if (this.ranks.has(dpRank)) return;
    this.ranks.add(dpRank);
    this.setStaleGauge();
  }

  /** A batch the flat reader took (device stores and removals, no clear): numbered and handed to the index as decodeHere() does. */
  private applyFlat(seq: bigint, batch: EventBatch, dpRank: number, outcome: "applied" | "replayed"): void {
    const { metrics, router } = this.ctx;
    this.noteRank(dpRank);
    const worker: WorkerKey = { workerId: this.spec.workerId, dpRank };
    for (let o = 0; o < batch.count * EVENT_WORDS; o += EVENT_WORDS) {
      const id = this.ctx.nextEventId(worker);
      batch.events[o + E_ID_LO] = Number(id & 0xffffffffn);
      batch.events[o + E_ID_HI] = Number(id >> 32n);
    }
    if (batch.count === 0) metrics.frames.inc({ outcome });
    else this.applyCounted(seq, outcome, () => router.applyEventBatchAsync(batch));
  }

  /**
   * Hands a decoded batch to the index (queued with index shard threads, so
   * this feed goes on to the next frame) and counts the frame once the index
   * holds it (at once with the index in this thread), as a payload applied on
   * a shard is. False when refused whole (e.g. no index slot left for this
   * worker): nothing applied, counted, skipped.
   */
  private applyCounted(seq: bigint, outcome: "applied" | "replayed", apply: () => Promise<unknown>): boolean {
    const { metrics } = this.ctx;
    let applying: Promise<unknown>;
    try {
      applying = apply();
    } catch (err) {
      metrics.frames.inc({ outcome: "refused" });
      this.warn("refused", "the router refused a KV event batch", { seq, error: (err as Error)?.message ?? String(err) });
      return false;
    }
    applying.then(
      () => metrics.frames.inc({ outcome }),
      (err: unknown) => {
        metrics.frames.inc({ outcome });
        this.warn("apply_failed", "the index failed to apply a KV event batch", { seq, error: String(err) });
      },
    );
    return true;
  }

  /** The seq went backwards: a new engine process, whose cache starts empty. */
  private async onPublisherRestart(): Promise<void> {
    this.ctx.metrics.restarts.inc();
    log.warn("engine KV publisher restarted; dropping the worker's blocks", this.where());
    await this.dropBlocks();
    this.stale = false;
    this.setStaleGauge();
    this.expected = undefined;
  }

  private async markStale(): Promise<void> {
    await this.dropBlocks();
    if (!this.stale) {
      this.stale = true;
      this.setStaleGauge();
    }
  }

  private async dropBlocks(): Promise<void> {
    if (this.closed) return;
    await this.ctx.dropWorker(this);
  }

  /** Another publisher of the same worker lost events and the worker's blocks were dropped. */
  droppedBySibling(): void {
    if (this.stale) return;
    this.stale = true;
    this.setStaleGauge();
  }

  private setStaleGauge(): void {
    for (const dpRank of this.ranks) {
      this.ctx.metrics.stale.set({ worker_id: String(this.spec.workerId), dp_rank: String(dpRank) }, this.stale ? 1 : 0);
    }
  }

  private where(): Record<string, unknown> {
    return { worker_id: this.spec.workerId, endpoint: this.spec.endpoint };
  }

  /** Logs a recurring problem at its 1st, 10th, 100th, ... occurrence. */
  private warn(topic: string, msg: string, fields: Record<string, unknown>): void {
    const n = (this.logCounts.get(topic) ?? 0) + 1;
    this.logCounts.set(topic, n);
    if (Number.isInteger(Math.log10(n))) log.warn(msg, { ...this.where(), ...fields, occurrences: n });
  }
}
