// Dynamo's `dynamo-two-tier-cost-fn` worker-selection policy, its port of
// SGLang's cache-aware rule, with Dynamo's device-KV overlap instead of a
// router-side approximate tree. Two tiers, the first that applies:
// 1. load: active-request spread above balance_abs_threshold and the largest
//    count above balance_rel_threshold × the smallest -> the least loaded;
// 2. cache: the largest effective overlap (device + host_cache_weight × host
//    blocks) above cache_threshold of the prompt's blocks (>= with
//    cache_threshold_inclusive) -> the least loaded among those holding it;
// 3. otherwise the least loaded.
// Facts from Dynamo's two-tier policy source and configuration-and-tuning.md
// (docs/dynamo.md, "Worker selection"). Equal candidates are broken at random
// (Dynamo leaves the order unspecified).
import { type Score, pickScore, scoreCandidate } from "./costFunction.js";
import type { PolicyCandidate, Selection, SelectionInput, WorkerSelectionPolicy } from "./workerSelection.js";

export const TWO_TIER_POLICY_TYPE = "dynamo-two-tier-cost-fn";

export interface TwoTierParameters {
  cacheThreshold: number;
  cacheThresholdInclusive: boolean;
  balanceAbsThreshold: number;
  balanceRelThreshold: number;
  /** Worth of a host-memory block against a device block; undefined = the router's --router-host-cache-hit-weight. */
  hostCacheWeight?: number;
}

/** Dynamo's defaults, which reproduce the experimental SGLang router's cache_aware_zmq policy. */
export const TWO_TIER_DEFAULTS: Readonly<TwoTierParameters> = {
  cacheThreshold: 0.5,
  cacheThresholdInclusive: false,
  balanceAbsThreshold: 32,
  balanceRelThreshold: 1.1,
};

/** The YAML parameter names (Dynamo's), by field. */
const KEYS: Record<keyof TwoTierParameters, string> = {
  cacheThreshold: "cache_threshold",
  cacheThresholdInclusive: "cache_threshold_inclusive",
  balanceAbsThreshold: "balance_abs_threshold",
  balanceRelThreshold: "balance_rel_threshold",
  hostCacheWeight: "host_cache_weight",
};

/**
 * Reads an instance's `parameters` mapping as Dynamo validates it: every key
 * optional, unknown keys and out-of-range values refused. Throws naming the key.
 */
export function parseTwoTierParameters(raw: Readonly<Record<string, unknown>>): TwoTierParameters {
  const known = Object.values(KEYS);
  for (const key of Object.keys(raw)) {
    if (!known.includes(key)) throw new Error(`unknown parameter "${key}"; ${TWO_TIER_POLICY_TYPE} takes ${known.join(", ")}`);
  }
  const out: TwoTierParameters = { ...TWO_TIER_DEFAULTS };
  const num = (field: keyof TwoTierParameters, ok: (v: number) => boolean, rule: string): number | undefined => {
    const v = raw[KEYS[field]];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || !ok(v)) throw new Error(`${KEYS[field]} must be ${rule}, got ${JSON.stringify(v)}`);
    return v;
  };
  out.cacheThreshold = num("cacheThreshold", (v) => v >= 0 && v <= 1, "a number from 0.0 to 1.0") ?? out.cacheThreshold;
  out.balanceAbsThreshold = num("balanceAbsThreshold", (v) => Number.isInteger(v) && v >= 0, "an integer >= 0") ?? out.balanceAbsThreshold;
  out.balanceRelThreshold = num("balanceRelThreshold", (v) => v >= 1, "a number >= 1.0") ?? out.balanceRelThreshold;
  out.hostCacheWeight = num("hostCacheWeight", (v) => v >= 0, "a number >= 0.0");
  const inclusive = raw[KEYS.cacheThresholdInclusive];
  if (inclusive !== undefined && typeof inclusive !== "boolean") {
    throw new Error(`${KEYS.cacheThresholdInclusive} must be true or false, got ${JSON.stringify(inclusive)}`);
  }
  out.cacheThresholdInclusive = inclusive ?? false;
  return out;
}

/** Which rule decided, and the candidates it leaves to the least-loaded pick. */
function decide(p: TwoTierParameters, candidates: readonly PolicyCandidate[], requestBlocks: number, hostWeight: number) {
  const overlap = candidates.map((c) => c.overlapBlocks + hostWeight * (c.hostOverlapBlocks ?? 0));
  const loads = candidates.map((c) => c.load.requests);
  const minLoad = Math.min(...loads);
  const maxLoad = Math.max(...loads);
  const all = () => true;
  if (maxLoad - minLoad > p.balanceAbsThreshold && maxLoad > p.balanceRelThreshold * minLoad) {
    return { reason: "load tier: imbalanced, least loaded", inTier: all, maxLoad };
  }
  const maxOverlap = Math.max(...overlap);
  const ratio = requestBlocks === 0 ? 0 : maxOverlap / requestBlocks;
  if (p.cacheThresholdInclusive ? ratio >= p.cacheThreshold : ratio > p.cacheThreshold) {
    return { reason: "cache tier: least loaded of the largest overlap", inTier: (i: number) => overlap[i] === maxOverlap, maxLoad };
  }
  return { reason: "no cache winner: least loaded", inTier: all, maxLoad };
}

export function twoTierPolicy(name: string, p: TwoTierParameters, routerHostWeight: number): WorkerSelectionPolicy {
  const hostWeight = p.hostCacheWeight ?? routerHostWeight;
  return {
    name,
    keepsSoftBinding: false,
    select({ candidates, params, requestBlocks, random }: SelectionInput): Selection {
      const d = decide(p, candidates, requestBlocks, hostWeight);
      // The logit ranks as the rule does: every candidate the tier keeps comes before every other.
      const scores: Score[] = candidates.map((c, i) => ({
        ...scoreCandidate(c, params),
        logit: c.load.requests + (d.inTier(i) ? 0 : d.maxLoad + 1),
      }));
      return { scores, chosen: pickScore(scores, 0, random), reason: d.reason };
    },
  };
}
