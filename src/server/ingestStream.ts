// IngestKvEvents: a client stream of KV events, decoded by the hot-path decoder
// (on this thread or on decoder threads) and applied in stream order; the
// first invalid message ends the stream, and nothing from or after it applies.
// With index shard threads the applies are pipelined: a message is queued to
// the shards and the next one decoded while they apply it; and a message
// that names only known workers of one shard goes to it as raw bytes, to be
// decoded, hashed and applied there (RawIngest).
import { create } from "@bufbuild/protobuf";
import { type ServerReadableStream, type sendUnaryData, status } from "@grpc/grpc-js";
import { IngestKvEventsResponseSchema } from "../../gen/kvrouter/v1/router_pb.js";
import type { EventBatch } from "../protocols/eventBatch.js";
import type { IndexEvent } from "../protocols/events.js";
import type { RouterMetrics } from "../metrics/metrics.js";
import type { KvRouter } from "../router/router.js";
import type { IngestSummary } from "../router/types.js";
import { log } from "../util/log.js";
import { IngestDecoder } from "../decoding/ingestDecoder.js";
import type { IngestPool, PoolResult } from "./ingestPool.js";
import { BlockSizeMismatchError, decodeIngestRequest, toWorkerRef } from "./convert.js";
import { failureOf } from "./unaryMethods.js";

const MAX_WARNED_WORKERS = 10_000;
/** Rejections a response lists (the rest are counted). */
const MAX_LISTED_REJECTIONS = 100;

/** A flat batch from the hot-path decoder, or protobuf-es's events (which may carry tiers and namespaces a batch cannot). */
type Decoded = { batch: EventBatch; restore: boolean } | { events: IndexEvent[]; restore: boolean };

/** IngestKvEvents messages (and bytes) of one stream being decoded on threads at once; more pause the stream. */
const MAX_IN_FLIGHT = 16;
const MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;
/**
 * Most milliseconds of IngestKvEvents messages one stream applies in a row on
 * the main thread before it pauses until the event loop has had a turn. With
 * large HTTP/2 windows one socket read can hand over megabytes of messages;
 * applied back to back they would hold queries for tens of milliseconds.
 */
const APPLY_TURN_MS = 2;

export interface IngestOptions {
  /** Decoder threads (undefined: decode on this thread). */
  pool?: IngestPool;
  /** The index has shard threads: queue applies to them instead of waiting for each (KvIndex.applyBatchAsync). */
  pipelined?: boolean;
  /** Pipelined without decoder threads: send messages to the shard threads as raw bytes where the index takes them (default true). */
  raw?: boolean;
}

/** The IngestKvEvents handler. */
export function ingestKvEventsHandler(router: KvRouter, metrics: RouterMetrics, { pool, pipelined = false, raw: rawWanted = true }: IngestOptions = {}) {
  const failure = (method: string, err: unknown) => failureOf(metrics, method, err);
  const { blockSize } = router.config;
  /** Workers already warned about a block-size mismatch: one warning per (worker, dp_rank), however many events. */
  const blockSizeWarned = new Set<string>();
  const warnBlockSizeOnce = (err: BlockSizeMismatchError, routerBlockSize: number) => {
    const key = `${err.workerId}:${err.dpRank}`;
    if (blockSizeWarned.has(key) || blockSizeWarned.size >= MAX_WARNED_WORKERS) return;
    blockSizeWarned.add(key);
    log.warn('KV events rejected: block size mismatch (logged once per worker; counted in kvrouter_kv_events_total{outcome="invalid"})', {
      worker_id: err.workerId,
      dp_rank: err.dpRank,
      engine_block_size: err.engineBlockSize,
      router_block_size: routerBlockSize,
    });
  };
  const ingestDecoder = new IngestDecoder(blockSize);
  const whereOf = (seq: number) => `message ${seq}`;

  /**
   * One IngestKvEvents message as a flat batch: the hot-path decoder, or
   * protobuf-es and convert.ts for what it hands back (their results and
   * error messages are the reference). Validates the whole message, so a
   * rejected message leaves the index unchanged.
   */
  const decodeIngest = (bytes: Buffer, where: string): Decoded => ingestDecoder.decode(bytes) ?? decodeSlow(bytes, where);
  const decodeSlow = (bytes: Buffer, where: string): Decoded => decodeIngestRequest(bytes, blockSize, where);

  return (call: ServerReadableStream<Buffer, unknown>, callback: sendUnaryData<unknown>) => {
    const stop = metrics.requestDuration.startTimer({ method: "IngestKvEvents" });
    type Rejection = IngestSummary["rejections"][number];
    /** Rejections with the message they came from: messages applied on different threads finish out of order, the response lists them in stream order. */
    const total = { applied: 0n, rejected: 0n, rejections: [] as { seq: number; r: Rejection }[] };
    let messages = 0;
    let done = false;
    const raw = pipelined && rawWanted && pool === undefined ? router.openRawIngest() : undefined;
    const finish = (err: { code: status; details: string } | null) => {
      if (done) return;
      done = true;
      raw?.close();
      stop({ code: err ? status[err.code] : "OK" });
      if (err) {
        callback(err);
        return;
      }
      callback(
        null,
        create(IngestKvEventsResponseSchema, {
          applied: total.applied,
          rejected: total.rejected,
          rejections: total.rejections.map(({ r }) => ({ worker: toWorkerRef(r.worker), eventId: r.eventId, reason: r.reason })),
        }),
      );
    };
    const count = (summary: IngestSummary, seq: number) => {
      total.applied += BigInt(summary.applied);
      total.rejected += BigInt(summary.rejected);
      if (summary.rejections.length === 0) return;
      // The first MAX_LISTED_REJECTIONS in stream order (a message's own are in event order already).
      const listed = total.rejections;
      for (const r of summary.rejections) listed.push({ seq, r });
      if (listed.length > 1 && listed[listed.length - summary.rejections.length - 1]?.seq > seq) listed.sort((a, b) => a.seq - b.seq);
      listed.length = Math.min(listed.length, MAX_LISTED_REJECTIONS);
    };
    /** Applies queued to index threads whose results are not in yet. */
    const queued = new Set<Promise<void>>();
    /** Resolves once nothing of the stream is queued (what finishes a queued apply may queue more: refused raw messages redone). */
    const whenIdle = async () => {
      while (queued.size > 0) await Promise.all(queued);
    };
    // Received messages still apply after the client goes away; nothing applies after an invalid one.
    let rejected = false;
    /**
     * The stream's failure: the earliest failed message's. Messages on
     * several shards fail in any order (a shard that dies fails every message
     * waiting for it, later ones first if their parts were queued first).
     */
    let failed: { seq: number; f: { code: status; details: string } } | undefined;
    const fail = (seq: number, err: unknown) => {
      const where = whereOf(seq);
      rejected = true;
      metrics.events.inc({ outcome: "invalid" });
      if (err instanceof BlockSizeMismatchError) warnBlockSizeOnce(err, blockSize);
      const f = failure("IngestKvEvents", err);
      if (!f.details.startsWith(where)) f.details = `${where}: ${f.details}`;
      const first = failed === undefined;
      if (first || seq < failed!.seq) failed = { seq, f };
      if (!first) return;
      // Messages queued before this one still apply: count them in.
      void whenIdle().then(() => {
        const { f } = failed!;
        f.details += `; ${total.applied} events applied before this message`;
        finish(f);
      });
    };
    /** Messages received and not yet applied (decoding, or queued to index threads), and their bytes; too many pause the stream. */
    let inFlight = 0;
    let inFlightBytes = 0;
    let paused = false;
    const taken = (bytes: number) => {
      inFlight++;
      inFlightBytes += bytes;
      if (!paused && (inFlight >= MAX_IN_FLIGHT || inFlightBytes >= MAX_IN_FLIGHT_BYTES)) {
        paused = true;
        call.pause();
      }
    };
    const settled = (bytes: number) => {
      inFlight--;
      inFlightBytes -= bytes;
      if (paused && inFlight < MAX_IN_FLIGHT && inFlightBytes < MAX_IN_FLIGHT_BYTES) {
        paused = false;
        call.resume();
      }
    };
    /**
     * Applies one decoded message (or queues it, pipelined), or ends the
     * stream with the message's error; `bytes` leave the in-flight count once applied.
     */
    const apply = (seq: number, bytes: number, decode: () => Decoded) => {
      if (rejected) return settled(bytes);
      try {
        const decoded = decode();
        // The index refuses a message it has no worker slots for before applying (or queueing) any of it.
        if (pipelined && "batch" in decoded) {
          const applying = router.applyEventBatchAsync(decoded.batch, decoded.restore).then(
            (summary) => count(summary, seq),
            (err: unknown) => fail(seq, err),
          );
          const done = applying.finally(() => {
            queued.delete(done);
            settled(bytes);
          });
          queued.add(done);
          return;
        }
        count("events" in decoded ? router.applyEvents(decoded.events, decoded.restore) : router.applyEventBatch(decoded.batch, decoded.restore), seq);
      } catch (err) {
        fail(seq, err);
      }
      settled(bytes);
    };
    /** A message decoded on this thread (`path`: why, for the metric) and applied or queued in stream order. */
    const decodeHere = (seq: number, bytes: Buffer, path: "main" | "shard_refused") => {
      metrics.ingestMessages.inc({ path });
      apply(seq, bytes.length, () => decodeIngest(bytes, whereOf(seq)));
    };
    // ---- raw messages (RawIngest): order is kept by two queues ----
    /** Messages waiting, in order, for the stream's raw messages to come back: one that takes the decoded path, and all after it. */
    const backlog: { seq: number; bytes: Buffer }[] = [];
    /** Raw messages a shard refused (nothing applied): decoded here, in stream order, once none is outstanding. */
    const refused: { seq: number; bytes: Buffer }[] = [];
    /**
     * Raw messages whose outcome this stream has not taken in yet: never
     * fewer than the index's `outstanding` (counted up together, down here
     * later). Not that count itself: it drops as a result arrives, a few
     * promise turns before the stream has noted a refusal, and an earlier
     * message's catch-up in between must not send the messages after it.
     */
    let rawOut = 0;
    /** Sends a message raw, or decodes it here when nothing raw is outstanding; false: it must wait. */
    const route = (seq: number, bytes: Buffer): boolean => {
      if (rejected) {
        settled(bytes.length);
        return true;
      }
      const submitted = raw!.submit(bytes);
      if (submitted === undefined) {
        if (rawOut > 0) return false;
        decodeHere(seq, bytes, "main");
        return true;
      }
      rawOut++;
      const finished = submitted
        .then(
          (summary) => {
            rawOut--;
            if (summary === "refused") return void refused.push({ seq, bytes });
            metrics.ingestMessages.inc({ path: summary.split ? "shard_split" : "shard" });
            count(summary, seq);
            settled(bytes.length);
          },
          (err: unknown) => {
            rawOut--;
            fail(seq, err);
            settled(bytes.length);
          },
        )
        .finally(() => {
          queued.delete(finished);
          catchUp();
        });
      queued.add(finished);
      return true;
    };
    /** Once no raw message is outstanding: the refused ones applied the decoded way, in order, then the waiting ones. */
    const catchUp = () => {
      if (rawOut > 0) return;
      if (refused.length > 0) {
        // Outcomes of messages on different shards arrive in any order.
        for (const m of refused.splice(0).sort((a, b) => a.seq - b.seq)) decodeHere(m.seq, m.bytes, "shard_refused");
        raw!.resume();
      }
      while (backlog.length > 0) {
        const m = backlog[0];
        if (!route(m.seq, m.bytes)) return;
        backlog.shift();
      }
    };
    const take = (seq: number, bytes: Buffer) => {
      if (raw === undefined) return decodeHere(seq, bytes, "main");
      if (backlog.length > 0 || refused.length > 0 || !route(seq, bytes)) backlog.push({ seq, bytes });
    };

    // With decoder threads, messages decode in parallel and apply in stream order.
    let applied: Promise<void> = Promise.resolve();
    let turnStart = 0;
    call.on("data", (bytes: Buffer) => {
      if (done) return;
      const seq = messages++;
      const where = whereOf(seq);
      taken(bytes.length);
      if (pool === undefined) {
        if (turnStart === 0) turnStart = performance.now();
        take(seq, bytes);
        if (!done && !paused && performance.now() - turnStart > APPLY_TURN_MS) {
          // Let queries (and other streams) in; messages already received wait in order.
          call.pause();
          setImmediate(() => {
            turnStart = 0;
            if (!paused) call.resume();
          });
        }
        return;
      }
      metrics.ingestMessages.inc({ path: "main" });
      const decoding = pool.decode(bytes);
      // Awaited below in stream order; a decoder thread that dies may reject it before then, which must not count as unhandled.
      decoding.catch(() => {});
      applied = applied.then(async () => {
        let result: PoolResult | Error;
        try {
          result = await decoding;
        } catch (err) {
          result = err as Error;
        }
        apply(seq, bytes.length, () => {
          if (result instanceof Error) throw result;
          return result === "slow" ? decodeSlow(bytes, where) : result;
        });
      });
    });
    call.on("end", () => void applied.then(whenIdle).then(() => finish(null)));
    call.on("error", (err) => {
      log.warn("event stream broke", { error: String(err), applied: total.applied });
      finish({ code: status.CANCELLED, details: String(err) });
    });
  };
}
