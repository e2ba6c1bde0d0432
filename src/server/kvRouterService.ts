// kvrouter.v1.KvRouterService: the unary methods validate and convert at the
// edge and call the router, once for every transport (gRPC here, Connect
// HTTP/JSON in httpApi.ts); refusals map to precise gRPC statuses.
import { create } from "@bufbuild/protobuf";
import {
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import {
  type DeregisterWorkerRequest,
  type DeregisterWorkerResponse,
  type FindBestWorkerRequest,
  type FindBestWorkerResponse,
  type FreeRequest,
  type FreeResponse,
  type KeepAliveRequest,
  type KeepAliveResponse,
  type ListWorkersRequest,
  type ListWorkersResponse,
  type MarkPrefillCompletedRequest,
  type MarkPrefillCompletedResponse,
  type RegisterWorkerRequest,
  type RegisterWorkerResponse,
  type SetBusyThresholdsRequest,
  type SetBusyThresholdsResponse,
  type BusyThresholds as WireThresholds,
  DeregisterWorkerResponseSchema,
  DumpIndexResponseSchema,
  FindBestWorkerResponseSchema,
  FreeResponseSchema,
  IngestKvEventsResponseSchema,
  KeepAliveResponseSchema,
  ListWorkersResponseSchema,
  MarkPrefillCompletedResponseSchema,
  RegisterWorkerResponseSchema,
  SetBusyThresholdsResponseSchema,
} from "../../gen/kvrouter/v1/router_pb.js";
import type { EventBatch } from "../protocols/eventBatch.js";
import { type IndexEvent, workerKeyString } from "../protocols/events.js";
import type { RouterMetrics } from "../metrics/metrics.js";
import { RouterError } from "../router/errors.js";
import type { KvRouter } from "../router/router.js";
import { type AdmissionQueue, type BusyThresholds, MAX_PRIORITY, THRESHOLD_FIELDS } from "../router/admissionQueue.js";
import { log } from "../util/log.js";
import { addressProblem } from "../workers/addresses.js";
import { MalformedRequest } from "../protocols/grpcGlue.js";
import { IngestDecoder } from "./ingestDecoder.js";
import type { IngestPool, PoolResult } from "./ingestPool.js";
import { promptTokens } from "./promptDecoder.js";
import { BlockSizeMismatchError, decodeIngestRequest, toWireEvent, toWorkerKey, toWorkerRef } from "./convert.js";

export interface ServiceLimits {
  /** Most token ids accepted in one FindBestWorker request. */
  maxTokens: number;
  /** Most DumpIndex calls streaming at once (--max-concurrent-dumps). */
  maxConcurrentDumps?: number;
}

/** Default of --max-concurrent-dumps: each dump walks the whole index. */
export const DEFAULT_MAX_CONCURRENT_DUMPS = 2;

/** Longest request id accepted: ids are kept in memory while the request is active. */
export const MAX_REQUEST_ID_LENGTH = 1024;
/** Longest lease a worker may ask for. */
export const MAX_LEASE_TTL_SECONDS = 86_400;
/** Longest session id accepted (bytes): bindings are kept in memory. */
export const MAX_SESSION_ID_BYTES = 1024;
/** Largest expected_output_tokens accepted. */
export const MAX_EXPECTED_OUTPUT_TOKENS = 1 << 24;
/** Events per DumpIndex message. */
const DUMP_BATCH = 1024;

const STATUS_OF: Record<RouterError["code"], status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  failed_precondition: status.FAILED_PRECONDITION,
  already_exists: status.ALREADY_EXISTS,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  cancelled: status.CANCELLED,
};

function invalid(message: string): never {
  throw new RouterError("invalid_argument", message);
}

function requireRequestId(id: string): void {
  if (id === "") invalid("request_id is empty");
  if (id.length > MAX_REQUEST_ID_LENGTH) {
    invalid(`request_id is ${id.length} characters; the limit is ${MAX_REQUEST_ID_LENGTH}`);
  }
}

/** Checks the scheduling hints of a FindBestWorker request; throws naming the field. */
function validateHints(req: FindBestWorkerRequest): void {
  if (!Number.isInteger(req.priority) || req.priority < 0 || req.priority > MAX_PRIORITY) {
    invalid(`priority is ${req.priority}; it must be in [0, ${MAX_PRIORITY}]`);
  }
  if (req.expectedOutputTokens < 0n) invalid(`expected_output_tokens is ${req.expectedOutputTokens}; it must be >= 0`);
  if (req.expectedOutputTokens > BigInt(MAX_EXPECTED_OUTPUT_TOKENS)) {
    invalid(`expected_output_tokens is ${req.expectedOutputTokens}; the limit is ${MAX_EXPECTED_OUTPUT_TOKENS}`);
  }
  const sessionBytes = Buffer.byteLength(req.sessionId, "utf8");
  if (sessionBytes > MAX_SESSION_ID_BYTES) invalid(`session_id is ${sessionBytes} bytes; the limit is ${MAX_SESSION_ID_BYTES}`);
}

function toThresholds(wire: WireThresholds | undefined): Partial<BusyThresholds> {
  const out: Partial<BusyThresholds> = {};
  if (wire === undefined) return out;
  const fraction = (name: string, v: number | undefined) => {
    if (v !== undefined && !(Number.isFinite(v) && v >= 0)) invalid(`thresholds.${name} is ${v}; it must be a number >= 0`);
    return v;
  };
  if (wire.activeDecodeBlocksThreshold !== undefined) {
    out.activeDecodeBlocksThreshold = fraction("active_decode_blocks_threshold", wire.activeDecodeBlocksThreshold);
  }
  if (wire.activePrefillTokensThreshold !== undefined) {
    // Compared with token counts held as doubles: beyond 2^53 it would not round-trip.
    if (wire.activePrefillTokensThreshold > BigInt(Number.MAX_SAFE_INTEGER)) {
      invalid(`thresholds.active_prefill_tokens_threshold is ${wire.activePrefillTokensThreshold}; the limit is ${Number.MAX_SAFE_INTEGER}`);
    }
    out.activePrefillTokensThreshold = Number(wire.activePrefillTokensThreshold);
  }
  if (wire.activePrefillTokensThresholdFrac !== undefined) {
    out.activePrefillTokensThresholdFrac = fraction("active_prefill_tokens_threshold_frac", wire.activePrefillTokensThresholdFrac);
  }
  if (wire.routerQueueThreshold !== undefined) out.routerQueueThreshold = fraction("router_queue_threshold", wire.routerQueueThreshold);
  return out;
}

function toWireThresholds(t: BusyThresholds) {
  return {
    activeDecodeBlocksThreshold: t.activeDecodeBlocksThreshold,
    activePrefillTokensThreshold: t.activePrefillTokensThreshold === undefined ? undefined : BigInt(t.activePrefillTokensThreshold),
    activePrefillTokensThresholdFrac: t.activePrefillTokensThresholdFrac,
    routerQueueThreshold: t.routerQueueThreshold,
  };
}

/**
 * The service's unary methods, by grpc-js local name: one implementation for
 * every transport. FindBestWorker may wait in the admission queue: `signal`
 * aborts when the client goes away or its deadline passes.
 */
export interface UnaryMethods {
  findBestWorker(req: FindBestWorkerRequest, signal?: AbortSignal): Promise<FindBestWorkerResponse>;
  setBusyThresholds(req: SetBusyThresholdsRequest): SetBusyThresholdsResponse;
  markPrefillCompleted(req: MarkPrefillCompletedRequest): MarkPrefillCompletedResponse;
  free(req: FreeRequest): FreeResponse;
  registerWorker(req: RegisterWorkerRequest): RegisterWorkerResponse;
  keepAlive(req: KeepAliveRequest): KeepAliveResponse;
  deregisterWorker(req: DeregisterWorkerRequest): DeregisterWorkerResponse;
  listWorkers(req: ListWorkersRequest): ListWorkersResponse;
}

/** What a unary call came to: its response, or the gRPC status it fails with. */
export type UnaryOutcome<Res> = { ok: true; response: Res } | { ok: false; code: status; details: string };

/** Maps a thrown error to a status: a RouterError to its own, anything else to INTERNAL (logged). */
export function failureOf(metrics: RouterMetrics, method: string, err: unknown): { code: status; details: string } {
  if (err instanceof RouterError) {
    if (err.code === "invalid_argument") metrics.invalidRequests.inc({ method });
    return { code: STATUS_OF[err.code], details: err.message };
  }
  log.error("internal error", { method, error: String((err as Error)?.stack ?? err) });
  return { code: status.INTERNAL, details: `internal error: ${(err as Error)?.message ?? err}` };
}

/** Runs one unary call for any transport: times it (by method and status) and maps failures. */
export async function runUnary<Res>(metrics: RouterMetrics, method: string, handle: () => Res | Promise<Res>): Promise<UnaryOutcome<Res>> {
  const stop = metrics.requestDuration.startTimer({ method });
  try {
    const response = await handle();
    stop({ code: "OK" });
    return { ok: true, response };
  } catch (err) {
    const f = failureOf(metrics, method, err);
    stop({ code: status[f.code] });
    return { ok: false, ...f };
  }
}

/** The wire names (FindBestWorker) of the unary methods, by local name (findBestWorker). */
export const UNARY_METHOD_NAMES: Record<keyof UnaryMethods, string> = {
  findBestWorker: "FindBestWorker",
  setBusyThresholds: "SetBusyThresholds",
  markPrefillCompleted: "MarkPrefillCompleted",
  free: "Free",
  registerWorker: "RegisterWorker",
  keepAlive: "KeepAlive",
  deregisterWorker: "DeregisterWorker",
  listWorkers: "ListWorkers",
};

export function kvRouterMethods(router: KvRouter, metrics: RouterMetrics, limits: ServiceLimits, admission: AdmissionQueue): UnaryMethods {
  return {
    findBestWorker: async (req, signal) => {
      const tokens = promptTokens(req);
      if (tokens.length === 0) invalid("token_ids is empty; send the prompt's token ids");
      if (tokens.length > limits.maxTokens) {
        invalid(`token_ids has ${tokens.length} tokens; the limit is ${limits.maxTokens} (--max-tokens)`);
      }
      if (req.requestId.length > MAX_REQUEST_ID_LENGTH) requireRequestId(req.requestId);
      if (req.allowedWorkers.length > router.maxAllowedWorkers) {
        invalid(`allowed_workers has ${req.allowedWorkers.length} entries; at most ${router.maxAllowedWorkers} (--max-worker-ranks) are accepted`);
      }
      validateHints(req);
      const { decision, queuedMs } = await admission.admit(
        {
          tokens,
          requestId: req.requestId || undefined,
          allowedWorkers: req.allowedWorkers.map(toWorkerKey),
          loraName: req.loraName,
          cacheNamespace: req.cacheNamespace,
          priority: req.priority,
          expectedOutputTokens: Number(req.expectedOutputTokens),
          sessionId: req.sessionId || undefined,
        },
        signal,
      );
      metrics.decisions.inc();
      if (decision.promptBlocks > 0) metrics.overlapRatio.observe(decision.overlapBlocks / decision.promptBlocks);
      return create(FindBestWorkerResponseSchema, {
        worker: toWorkerRef(decision.worker),
        overlapBlocks: decision.overlapBlocks,
        promptBlocks: decision.promptBlocks,
        queuedMs: Math.min(2 ** 32 - 1, Math.round(queuedMs)),
        predictedBlocks: decision.predictedBlocks,
        scores: req.explain
          ? decision.scores.map((s) => {
              const tiers = decision.tierOverlaps.get(workerKeyString(s.worker));
              return {
                worker: toWorkerRef(s.worker),
                overlapBlocks: s.overlapBlocks,
                prefillBlocks: s.prefillBlocks,
                decodeBlocks: BigInt(s.decodeBlocks),
                logit: s.logit,
                hostOverlapBlocks: tiers?.host_pinned ?? 0,
                diskOverlapBlocks: tiers?.disk ?? 0,
                externalOverlapBlocks: tiers?.external ?? 0,
              };
            })
          : [],
      });
    },

    setBusyThresholds: (req) => {
      const update: Partial<BusyThresholds> = toThresholds(req.thresholds);
      for (const name of req.clear) {
        const field = THRESHOLD_FIELDS[name as keyof typeof THRESHOLD_FIELDS];
        if (field === undefined) invalid(`clear: unknown threshold "${name}"; known: ${Object.keys(THRESHOLD_FIELDS).join(", ")}`);
        if (update[field] !== undefined) invalid(`clear: "${name}" is both set and cleared`);
        update[field] = undefined;
      }
      const now = admission.setThresholds(update);
      log.info("busy thresholds changed", { ...now });
      return create(SetBusyThresholdsResponseSchema, { thresholds: toWireThresholds(now) });
    },

    markPrefillCompleted: (req) => {
      requireRequestId(req.requestId);
      return create(MarkPrefillCompletedResponseSchema, { found: router.markPrefillCompleted(req.requestId) });
    },

    free: (req) => {
      requireRequestId(req.requestId);
      return create(FreeResponseSchema, { found: router.free(req.requestId) });
    },

    registerWorker: (req) => {
      if (req.leaseTtlSeconds > MAX_LEASE_TTL_SECONDS) {
        invalid(`lease_ttl_seconds is ${req.leaseTtlSeconds}; the limit is ${MAX_LEASE_TTL_SECONDS}`);
      }
      if (req.zmqReplayEndpoint && !req.zmqEndpoint) invalid("zmq_replay_endpoint is set but zmq_endpoint is empty");
      if (req.address) {
        const problem = addressProblem(req.address);
        if (problem) invalid(problem);
        const top = Math.max(0, ...req.dpRanks);
        if (Number(req.address.slice(req.address.lastIndexOf(":") + 1)) + top > 65_535) {
          invalid(`address ${req.address} leaves no port for dp_rank ${top} (rank r serves on port + r)`);
        }
      }
      const feed = req.zmqEndpoint ? { zmqEndpoint: req.zmqEndpoint, zmqReplayEndpoint: req.zmqReplayEndpoint || undefined } : undefined;
      const capacity = { maxNumBatchedTokens: Number(req.maxNumBatchedTokens), totalKvBlocks: Number(req.totalKvBlocks) };
      const ttlMs = router.registerWorker(req.workerId, req.dpRanks, req.leaseTtlSeconds * 1000, feed, req.address || undefined, capacity);
      return create(RegisterWorkerResponseSchema, { leaseTtlSeconds: Math.ceil(ttlMs / 1000) });
    },

    keepAlive: (req) => create(KeepAliveResponseSchema, { leaseTtlSeconds: Math.ceil(router.keepAlive(req.workerId) / 1000) }),

    deregisterWorker: (req) =>
      create(DeregisterWorkerResponseSchema, { removedBlocks: BigInt(router.deregisterWorker(req.workerId)) }),

    listWorkers: () =>
      create(ListWorkersResponseSchema, {
        workers: router.listWorkers().map((w) => ({
          worker: toWorkerRef(w.worker),
          registered: w.registered,
          leaseRemainingMs: BigInt(w.leaseRemainingMs),
          cachedBlocks: BigInt(w.cachedBlocks),
          activeRequests: BigInt(w.load.requests),
          activePrefillTokens: BigInt(w.load.prefillTokens),
          activeDecodeBlocks: BigInt(w.load.decodeBlocks),
          lastEventId: w.lastEventId,
          address: router.addresses.get(w.worker) ?? "",
          hostCachedBlocks: BigInt(w.lowerTierBlocks.host_pinned),
          diskCachedBlocks: BigInt(w.lowerTierBlocks.disk),
          externalCachedBlocks: BigInt(w.lowerTierBlocks.external),
          prefillTokensPerSecond: w.prefillTokensPerSec,
        })),
      }),
  };
}

/** Bounds the memory of once-per-worker warnings against a flood of made-up worker ids. */
const MAX_WARNED_WORKERS = 10_000;

/** The gRPC service: the unary methods above plus the two streaming calls, which only gRPC carries. */
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

/** `pool`: decoder threads for IngestKvEvents (undefined: decode on this thread). */
export function kvRouterHandlers(
  router: KvRouter,
  metrics: RouterMetrics,
  methods: UnaryMethods,
  limits: Pick<ServiceLimits, "maxConcurrentDumps">,
  pool?: IngestPool,
): UntypedServiceImplementation {
  const unary =
    <Req, Res>(local: keyof UnaryMethods) =>
    async (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      // A client that goes away (or whose deadline passes: grpc-js cancels the
      // call and answers DEADLINE_EXCEEDED) leaves the admission queue at once.
      const gone = new AbortController();
      const onCancelled = () => gone.abort();
      call.once("cancelled", onCancelled);
      const outcome = await runUnary(metrics, UNARY_METHOD_NAMES[local], () => {
        if (call.request instanceof MalformedRequest) invalid(call.request.reason);
        return (methods[local] as (req: Req, signal: AbortSignal) => Res | Promise<Res>)(call.request, gone.signal);
      });
      call.removeListener("cancelled", onCancelled);
      if (gone.signal.aborted) return; // grpc-js has answered the call already
      if (outcome.ok) callback(null, outcome.response);
      else callback({ code: outcome.code, details: outcome.details });
    };
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
  const maxDumps = limits.maxConcurrentDumps ?? DEFAULT_MAX_CONCURRENT_DUMPS;
  let dumpsRunning = 0;

  /**
   * One IngestKvEvents message as a flat batch: the hot-path decoder, or
   * protobuf-es and convert.ts for what it hands back (their results and
   * error messages are the reference). Validates the whole message, so a
   * rejected message leaves the index unchanged.
   */
  const decodeIngest = (bytes: Buffer, where: string): Decoded => ingestDecoder.decode(bytes) ?? decodeSlow(bytes, where);
  const decodeSlow = (bytes: Buffer, where: string): Decoded => {
    return decodeIngestRequest(bytes, blockSize, where);
  };

  return {
    ...Object.fromEntries(Object.keys(UNARY_METHOD_NAMES).map((local) => [local, unary(local as keyof UnaryMethods)])),

    ingestKvEvents: (call: ServerReadableStream<Buffer, unknown>, callback: sendUnaryData<unknown>) => {
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
      /** Applies one decoded message, or ends the stream with the message's error. */
      // Received messages still apply after the client goes away; nothing applies after an invalid one.
      let rejected = false;
      const apply = (where: string, decode: () => Decoded) => {
        if (rejected) return;
        try {
          const decoded = decode();
          // The index refuses a message it has no worker slots for before applying any of it.
          const summary =
            "events" in decoded ? router.applyEvents(decoded.events, decoded.restore) : router.applyEventBatch(decoded.batch, decoded.restore);
          total.applied += BigInt(summary.applied);
          total.rejected += BigInt(summary.rejected);
          for (const r of summary.rejections) if (total.rejections.length < 100) total.rejections.push(r);
        } catch (err) {
          rejected = true;
          metrics.events.inc({ outcome: "invalid" });
          if (err instanceof BlockSizeMismatchError) warnBlockSizeOnce(err, blockSize);
          const f = failure("IngestKvEvents", err);
          if (!f.details.startsWith(where)) f.details = `${where}: ${f.details}`;
          f.details += `; ${total.applied} events applied before this message`;
          finish(f);
        }
      };
      // With decoder threads, messages decode in parallel and apply in stream
      // order; a stream with too many messages in flight is paused.
      let applied: Promise<void> = Promise.resolve();
      let inFlight = 0;
      let inFlightBytes = 0;
      let paused = false;
      let turnStart = 0;
      call.on("data", (bytes: Buffer) => {
        if (done) return;
        const where = `message ${messages++}`;
        if (pool === undefined) {
          if (turnStart === 0) turnStart = performance.now();
          apply(where, () => decodeIngest(bytes, where));
          if (!done && performance.now() - turnStart > APPLY_TURN_MS) {
            // Let queries (and other streams) in; messages already received wait in order.
            call.pause();
            setImmediate(() => {
              turnStart = 0;
              call.resume();
            });
          }
          return;
        }
        const decoding = pool.decode(bytes);
        inFlight++;
        inFlightBytes += bytes.length;
        if (!paused && (inFlight >= MAX_IN_FLIGHT || inFlightBytes >= MAX_IN_FLIGHT_BYTES)) {
          paused = true;
          call.pause();
        }
        applied = applied.then(async () => {
          let result: PoolResult | Error;
          try {
            result = await decoding;
          } catch (err) {
            result = err as Error;
          }
          inFlight--;
          inFlightBytes -= bytes.length;
          if (paused && inFlight < MAX_IN_FLIGHT && inFlightBytes < MAX_IN_FLIGHT_BYTES) {
            paused = false;
            call.resume();
          }
          apply(where, () => {
            if (result instanceof Error) throw result;
            return result === "slow" ? decodeSlow(bytes, where) : result;
          });
        });
      });
      call.on("end", () => void applied.then(() => finish(null)));
      call.on("error", (err) => {
        log.warn("event stream broke", { error: String(err), applied: total.applied });
        finish({ code: status.CANCELLED, details: String(err) });
      });
    },

    dumpIndex: async (call: ServerWritableStream<unknown, unknown>) => {
      const stop = metrics.requestDuration.startTimer({ method: "DumpIndex" });
      const refuse = (code: status, details: string) => {
        stop({ code: status[code] });
        call.emit("error", { code, details });
      };
      if (call.request instanceof MalformedRequest) {
        metrics.invalidRequests.inc({ method: "DumpIndex" });
        refuse(status.INVALID_ARGUMENT, call.request.reason);
        return;
      }
      if (dumpsRunning >= maxDumps) {
        refuse(status.RESOURCE_EXHAUSTED, `${dumpsRunning} DumpIndex calls are streaming; the limit is ${maxDumps} (--max-concurrent-dumps)`);
        return;
      }
      dumpsRunning++;
      try {
        // Streamed with back-pressure: the next batch is built only once the
        // previous one was taken by the transport, so a slow (or stalled)
        // reader holds one batch and one worker's packed entries, never the
        // whole index. Each worker's entries are consistent with its cursor.
        let batch: ReturnType<typeof toWireEvent>[] = [];
        for (const event of router.dump()) {
          batch.push(toWireEvent(event));
          if (batch.length < DUMP_BATCH) continue;
          if (!(await writeInTurn(call, create(DumpIndexResponseSchema, { events: batch })))) break;
          batch = [];
        }
        if (!call.cancelled && batch.length > 0) await writeInTurn(call, create(DumpIndexResponseSchema, { events: batch }));
        if (!call.cancelled) call.end();
        stop({ code: call.cancelled ? "CANCELLED" : "OK" });
      } catch (err) {
        const { code, details } = failure("DumpIndex", err);
        refuse(code, details);
      } finally {
        dumpsRunning--;
      }
    },
  };
}

/** Writes one message; resolves once the transport wants more (true) or the call is gone (false). */
function writeInTurn(call: ServerWritableStream<unknown, unknown>, message: unknown): Promise<boolean> {
  if (call.cancelled) return Promise.resolve(false);
  if (call.write(message)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (more: boolean) => () => {
      call.off("drain", onDrain);
      call.off("cancelled", onGone);
      call.off("close", onGone);
      resolve(more && !call.cancelled);
    };
    const onDrain = done(true);
    const onGone = done(false);
    call.once("drain", onDrain);
    call.once("cancelled", onGone);
    call.once("close", onGone);
  });
}
