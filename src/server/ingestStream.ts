// IngestKvEvents: a client stream of KV events, decoded by the hot-path decoder
// (on this thread or on decoder threads) and applied in stream order; the
// first invalid message ends the stream, and nothing from or after it applies.
// With index shard threads the applies are pipelined: a message is queued to
// the shards and the next one decoded while they apply it.
import { create } from "@bufbuild/protobuf";
import { type ServerReadableStream, type sendUnaryData, status } from "@grpc/grpc-js";
import { IngestKvEventsResponseSchema } from "../../gen/kvrouter/v1/router_pb.js";
import type { EventBatch } from "../protocols/eventBatch.js";
import type { IndexEvent } from "../protocols/events.js";
import type { RouterMetrics } from "../metrics/metrics.js";
import type { KvRouter } from "../router/router.js";
import { log } from "../util/log.js";
import { IngestDecoder } from "./ingestDecoder.js";
import type { IngestPool, PoolResult } from "./ingestPool.js";
import { BlockSizeMismatchError, decodeIngestRequest, toWorkerRef } from "./convert.js";
import { failureOf } from "./unaryMethods.js";

const MAX_WARNED_WORKERS = 10_000;

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
}

/** The IngestKvEvents handler. */
export function ingestKvEventsHandler(router: KvRouter, metrics: RouterMetrics, { pool, pipelined = false }: IngestOptions = {}) {
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
    const total = { applied: 0n, rejected: 0n, rejections: [] as ReturnType<KvRouter["applyEvents"]>["rejections"] };
    let messages = 0;
    let done = false;
    const finish = (err: { code: status; details: string } | null) => {
      if (done) return;
      done = true;
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
          rejections: total.rejections.map((r) => ({ worker: toWorkerRef(r.worker), eventId: r.eventId, reason: r.reason })),
        }),
      );
    };
    const count = (summary: ReturnType<KvRouter["applyEvents"]>) => {
      total.applied += BigInt(summary.applied);
      total.rejected += BigInt(summary.rejected);
      for (const r of summary.rejections) if (total.rejections.length < 100) total.rejections.push(r);
    };
    /** Applies queued to index threads whose results are not in yet. */
    const queued = new Set<Promise<void>>();
    // Received messages still apply after the client goes away; nothing applies after an invalid one.
    let rejected = false;
    const fail = (where: string, err: unknown) => {
      rejected = true;
      metrics.events.inc({ outcome: "invalid" });
      if (err instanceof BlockSizeMismatchError) warnBlockSizeOnce(err, blockSize);
      const f = failure("IngestKvEvents", err);
      if (!f.details.startsWith(where)) f.details = `${where}: ${f.details}`;
      // Messages queued before this one still apply: count them in.
      void Promise.all(queued).then(() => {
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
    const apply = (where: string, bytes: number, decode: () => Decoded) => {
      if (rejected) return settled(bytes);
      try {
        const decoded = decode();
        // The index refuses a message it has no worker slots for before applying (or queueing) any of it.
        if (pipelined && "batch" in decoded) {
          const applying = router.applyEventBatchAsync(decoded.batch, decoded.restore).then(count, (err: unknown) => fail(where, err));
          const done = applying.finally(() => {
            queued.delete(done);
            settled(bytes);
          });
          queued.add(done);
          return;
        }
        count("events" in decoded ? router.applyEvents(decoded.events, decoded.restore) : router.applyEventBatch(decoded.batch, decoded.restore));
      } catch (err) {
        fail(where, err);
      }
      settled(bytes);
    };
    // With decoder threads, messages decode in parallel and apply in stream order.
    let applied: Promise<void> = Promise.resolve();
    let turnStart = 0;
    call.on("data", (bytes: Buffer) => {
      if (done) return;
      const where = `message ${messages++}`;
      taken(bytes.length);
      if (pool === undefined) {
        if (turnStart === 0) turnStart = performance.now();
        apply(where, bytes.length, () => decodeIngest(bytes, where));
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
      const decoding = pool.decode(bytes);
      applied = applied.then(async () => {
        let result: PoolResult | Error;
        try {
          result = await decoding;
        } catch (err) {
          result = err as Error;
        }
        apply(where, bytes.length, () => {
          if (result instanceof Error) throw result;
          return result === "slow" ? decodeSlow(bytes, where) : result;
        });
      });
    });
    call.on("end", () => void applied.then(() => Promise.all(queued)).then(() => finish(null)));
    call.on("error", (err) => {
      log.warn("event stream broke", { error: String(err), applied: total.applied });
      finish({ code: status.CANCELLED, details: String(err) });
    });
  };
}
