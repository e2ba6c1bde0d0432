// kvrouter.v1.KvRouterService's unary methods, once for every transport (gRPC
// in kvRouterService.ts, Connect HTTP/JSON in http/connectService.ts): they
// validate and convert at the edge and call the router; refusals map to
// precise gRPC statuses.
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
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
  FindBestWorkerResponseSchema,
  FreeResponseSchema,
  KeepAliveResponseSchema,
  ListWorkersResponseSchema,
  MarkPrefillCompletedResponseSchema,
  RegisterWorkerResponseSchema,
  SetBusyThresholdsResponseSchema,
} from "../../gen/kvrouter/v1/router_pb.js";
import { workerKeyString } from "../protocols/events.js";
import type { RouterMetrics } from "../metrics/metrics.js";
import { RouterError } from "../router/errors.js";
import { IndexShardDownError } from "../indexer/types.js";
import type { KvRouter } from "../router/router.js";
import { costOverrideProblem, fromWire } from "../scheduler/costOverride.js";
import { type AdmissionQueue, type BusyThresholds, MAX_PRIORITY, THRESHOLD_FIELDS } from "../router/admissionQueue.js";
import { decisionAttributes } from "../tracing/decisionAttributes.js";
import { KV } from "../tracing/names.js";
import type { RequestSpan } from "../tracing/requestSpan.js";
import { log } from "../util/log.js";
import { addressProblem } from "../workers/addresses.js";
import { allowedWorkersProblem, promptTokens } from "./promptDecoder.js";
import { toWorkerKey, toWorkerRef } from "./convert.js";

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
const STATUS_OF: Record<RouterError["code"], status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  failed_precondition: status.FAILED_PRECONDITION,
  already_exists: status.ALREADY_EXISTS,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  cancelled: status.CANCELLED,
};

export function invalid(message: string): never {
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
 * aborts when the client goes away or its deadline passes. `span` (tracing
 * on, TRACED_METHODS only) takes what the method learns: the decision, found.
 */
export interface UnaryMethods {
  findBestWorker(req: FindBestWorkerRequest, signal?: AbortSignal, span?: RequestSpan): Promise<FindBestWorkerResponse>;
  setBusyThresholds(req: SetBusyThresholdsRequest): SetBusyThresholdsResponse;
  markPrefillCompleted(req: MarkPrefillCompletedRequest, signal?: AbortSignal, span?: RequestSpan): MarkPrefillCompletedResponse;
  free(req: FreeRequest, signal?: AbortSignal, span?: RequestSpan): FreeResponse;
  registerWorker(req: RegisterWorkerRequest): RegisterWorkerResponse;
  keepAlive(req: KeepAliveRequest): KeepAliveResponse;
  deregisterWorker(req: DeregisterWorkerRequest): DeregisterWorkerResponse;
  listWorkers(req: ListWorkersRequest): ListWorkersResponse;
}

/** The methods that get a span each when tracing is on: the per-request calls. */
export const TRACED_METHODS: ReadonlySet<keyof UnaryMethods> = new Set(["findBestWorker", "markPrefillCompleted", "free"]);

/** What a unary call came to: its response, or the gRPC status it fails with. */
export type UnaryOutcome<Res> = { ok: true; response: Res } | { ok: false; code: status; details: string };

/** Maps a thrown error to a status: a RouterError to its own, anything else to INTERNAL (logged). */
export function failureOf(metrics: RouterMetrics, method: string, err: unknown): { code: status; details: string } {
  if (err instanceof RouterError) {
    if (err.code === "invalid_argument") metrics.invalidRequests.inc({ method });
    return { code: STATUS_OF[err.code], details: err.message };
  }
  // The index lost a shard thread (logged once where it was found): the caller should go to another replica.
  if (err instanceof IndexShardDownError) return { code: status.UNAVAILABLE, details: err.message };
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
    findBestWorker: async (req, signal, span) => {
      const tokens = promptTokens(req);
      if (tokens.length === 0) invalid("token_ids is empty; send the prompt's token ids");
      if (tokens.length > limits.maxTokens) {
        invalid(`token_ids has ${tokens.length} tokens; the limit is ${limits.maxTokens} (--max-tokens)`);
      }
      if (req.requestId.length > MAX_REQUEST_ID_LENGTH) requireRequestId(req.requestId);
      // gRPC refuses a longer list before decoding it (findBestWorkerDecoder); Connect's arrives decoded.
      if (req.allowedWorkers.length > router.maxAllowedWorkers) invalid(allowedWorkersProblem(req.allowedWorkers.length, router.maxAllowedWorkers));
      if (req.prefillWorkers.length > router.maxAllowedWorkers) invalid(allowedWorkersProblem(req.prefillWorkers.length, router.maxAllowedWorkers, "prefill_workers"));
      validateHints(req);
      // Refused before queueing: a bad name or value must not wait for a worker first.
      const policy = req.workerSelectionPolicy || undefined;
      if (policy !== undefined && !router.policyNames().includes(policy)) {
        invalid(`worker_selection_policy "${policy}" is not a policy; known: ${router.policyNames().join(", ")}`);
      }
      const o = req.routerConfigOverride;
      const costOverride = o && fromWire({
        overlapScoreCredit: o.overlapScoreCredit,
        prefillLoadScale: o.prefillLoadScale,
        temperature: o.routerTemperature,
        assumeKvReuse: o.assumeKvReuse,
        trackPrefillTokens: o.trackPrefillTokens,
        overlapScoreWeight: o.overlapScoreWeight,
      });
      const overrideProblem = costOverride && costOverrideProblem(costOverride);
      if (overrideProblem) invalid(overrideProblem);
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
          workerSelectionPolicy: policy,
          costOverride,
          prefillWorkers: req.prefillWorkers.map(toWorkerKey),
        },
        signal,
      );
      metrics.decisions.inc();
      if (span !== undefined) {
        span.setAttributes(decisionAttributes(decision, queuedMs));
        span.setAttribute(KV.promptTokens, tokens.length);
        if (req.requestId !== "") span.setAttribute(KV.requestId, req.requestId);
      }
      if (decision.promptBlocks > 0) metrics.overlapRatio.observe(decision.overlapBlocks / decision.promptBlocks);
      return create(FindBestWorkerResponseSchema, {
        worker: toWorkerRef(decision.worker),
        overlapBlocks: decision.overlapBlocks,
        promptBlocks: decision.promptBlocks,
        queuedMs: Math.min(2 ** 32 - 1, Math.round(queuedMs)),
        predictedBlocks: decision.predictedBlocks,
        workerSelectionPolicy: decision.policy,
        selectionReason: decision.reason,
        disagg: decision.disagg && {
          prefillLocally: decision.disagg.prefillLocally,
          prefillWorker: decision.disagg.prefillWorker && toWorkerRef(decision.disagg.prefillWorker),
          prefillOverlapBlocks: decision.disagg.prefillOverlapBlocks,
          netNewTokens: BigInt(decision.disagg.netNewTokens),
          reason: decision.disagg.reason,
          prefillWorkerBusy: decision.disagg.prefillBusy,
          decodeWorkerBusy: decision.disagg.decodeBusy,
        },
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

    markPrefillCompleted: (req, _signal, span) => {
      requireRequestId(req.requestId);
      const found = router.markPrefillCompleted(req.requestId);
      span?.setAttributes({ [KV.requestId]: req.requestId, [KV.found]: found });
      return create(MarkPrefillCompletedResponseSchema, { found });
    },

    free: (req, _signal, span) => {
      requireRequestId(req.requestId);
      const found = router.free(req.requestId);
      span?.setAttributes({ [KV.requestId]: req.requestId, [KV.found]: found });
      return create(FreeResponseSchema, { found });
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
      const capacity = { maxNumBatchedTokens: Number(req.maxNumBatchedTokens), totalKvBlocks: Number(req.totalKvBlocks), maxNumSeqs: Number(req.maxNumSeqs) };
      const ttlMs = router.registerWorker(req.workerId, req.dpRanks, req.leaseTtlSeconds * 1000, feed, req.address || undefined, capacity);
      return create(RegisterWorkerResponseSchema, { leaseTtlSeconds: Math.ceil(ttlMs / 1000) });
    },

    keepAlive: (req) => create(KeepAliveResponseSchema, { leaseTtlSeconds: Math.ceil(router.keepAlive(req.workerId, req.batch) / 1000) }),

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
