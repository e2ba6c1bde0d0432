// A FindBestWorker that names prefill workers (disaggregated serving): pick the
// decode worker, then either book the prompt's prefill on a prefill worker or,
// when Dynamo's conditional disaggregation rule says so, let the decode worker
// prefill locally. Dynamo's order (prefill_router/conditional_bypass.rs): peek the
// decode pool first without booking, read the prefill worker's load only when the
// policy needs it, decide, then book.
import { type WorkerKey, workerKeyString } from "../protocols/events.js";
import { DEFAULT_CONDITIONAL_DISAGG, decideDisagg, needsPrefillBusy } from "../scheduler/conditionalDisagg.js";
import { RouterError } from "./errors.js";
import type { CandidateState, RouteDecision, RouteRequest, RouterConfig } from "./types.js";

/** What this needs of KvRouter (which calls it: named here, not imported, to keep the two files out of a loop). */
export interface DisaggRouter {
  readonly config: RouterConfig;
  readonly active: { has(requestId: string): boolean };
  findBestWorker(req: RouteRequest): RouteDecision;
  candidateStates(allowed?: readonly WorkerKey[]): CandidateState[];
  knownWorkers(): ReadonlyMap<string, WorkerKey>;
  free(requestId: string): boolean;
}

/**
 * The active-request id under which a routed request's remote prefill is booked on
 * its prefill worker (freed by MarkPrefillCompleted or Free of the request's own id).
 * The NUL prefix keeps it apart from any id a client sends in practice.
 */
export function prefillBookingId(requestId: string): string {
  return `\u0000prefill:${requestId}`;
}

export function routeDisaggregated(router: DisaggRouter, req: RouteRequest): RouteDecision {
  if (!router.config.useKvEvents) {
    throw new RouterError("failed_precondition", "prefill_workers needs KV events: this router runs in approximate mode (--no-kv-events), as Dynamo's conditional disaggregation does not");
  }
  const settings = router.config.conditionalDisagg ?? DEFAULT_CONDITIONAL_DISAGG;
  const { prefillPool, decodePool } = pools(router, req);
  if (req.requestId && router.active.has(prefillBookingId(req.requestId))) {
    throw new RouterError("already_exists", `request_id "${req.requestId}" already holds a prefill booking; Free it before routing it again`);
  }
  const base: RouteRequest = { ...req, prefillWorkers: undefined };
  // Peeks book nothing: no request id (and so no session binding or prediction).
  const decode = router.findBestWorker({ ...base, requestId: undefined, allowedWorkers: decodePool });
  const decodeKey = workerKeyString(decode.worker);
  const decodeState = router.candidateStates([decode.worker])[0];
  const decodeScore = decode.scores.find((s) => workerKeyString(s.worker) === decodeKey);
  const prefillPeek = (): RouteDecision => router.findBestWorker({ ...prefillRequest(base), requestId: undefined, allowedWorkers: prefillPool });
  let prefill: RouteDecision | undefined;
  let prefillBusy: boolean | undefined;
  if (needsPrefillBusy(settings) && settings.prefillBusyThreshold !== undefined) {
    prefill = prefillPeek();
    const state = router.candidateStates([prefill.worker])[0];
    prefillBusy = state.load.prefillTokens > settings.prefillBusyThreshold * state.capacity.maxNumBatchedTokens;
  }
  const verdict = decideDisagg(settings, {
    promptTokens: req.tokens.length,
    decodeCachedTokens: decode.overlapBlocks * router.config.blockSize,
    prefillBusy,
    decodePotentialBlocks: decodeScore?.decodeBlocks ?? decodeState.load.decodeBlocks,
    decodeTotalKvBlocks: decodeState.capacity.totalKvBlocks,
  });
  const signals = { netNewTokens: verdict.netNewTokens, reason: verdict.reason, prefillBusy, decodeBusy: verdict.decodeBusy };

  if (verdict.prefillLocally) {
    const booked = req.requestId ? router.findBestWorker({ ...base, allowedWorkers: [decode.worker] }) : decode;
    return { ...booked, scores: decode.scores, disagg: { prefillLocally: true, prefillOverlapBlocks: 0, ...signals } };
  }
  if (!req.requestId) {
    prefill ??= prefillPeek();
    return { ...decode, disagg: { prefillLocally: false, prefillWorker: prefill.worker, prefillOverlapBlocks: prefill.overlapBlocks, ...signals } };
  }
  // The decode worker only decodes: its booking carries no prompt load. Booked
  // first, so a refused prefill booking can be undone without leaving load behind.
  const override = { ...base.costOverride, trackPrefillTokens: false };
  const booked = router.findBestWorker({ ...base, allowedWorkers: [decode.worker], costOverride: override });
  let prefillBooked: RouteDecision;
  try {
    prefillBooked = router.findBestWorker({ ...prefillRequest(base), requestId: prefillBookingId(req.requestId), allowedWorkers: prefillPool });
  } catch (err) {
    router.free(req.requestId);
    throw err;
  }
  return {
    ...booked,
    scores: decode.scores,
    disagg: { prefillLocally: false, prefillWorker: prefillBooked.worker, prefillOverlapBlocks: prefillBooked.overlapBlocks, ...signals },
  };
}

/** The prefill stage of a request: no session (the session follows its decode worker), no output. */
function prefillRequest(req: RouteRequest): RouteRequest {
  return { ...req, sessionId: undefined, expectedOutputTokens: 0 };
}

/** The prefill pool (each must be known) and the decode pool: allowed_workers, else every other known worker. */
function pools(router: DisaggRouter, req: RouteRequest): { prefillPool: WorkerKey[]; decodePool: WorkerKey[] } {
  const known = router.knownWorkers();
  const prefill = new Map<string, WorkerKey>();
  (req.prefillWorkers ?? []).forEach((w, i) => {
    const key = workerKeyString(w);
    const worker = known.get(key);
    if (worker === undefined) throw new RouterError("invalid_argument", `prefill_workers[${i}]: worker ${w.workerId} dp_rank ${w.dpRank} is not known`);
    prefill.set(key, worker);
  });
  if (req.allowedWorkers !== undefined && req.allowedWorkers.length > 0) return { prefillPool: [...prefill.values()], decodePool: req.allowedWorkers };
  const decodePool = [...known.values()].filter((w) => !prefill.has(workerKeyString(w)));
  if (decodePool.length === 0) {
    throw new RouterError("failed_precondition", "every known worker is listed in prefill_workers: no decode worker is left (list the decode workers in allowed_workers)");
  }
  return { prefillPool: [...prefill.values()], decodePool };
}
