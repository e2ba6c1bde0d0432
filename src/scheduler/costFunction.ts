// Dynamo's routing cost, in one unit (blocks), so cache hits and load trade
// off smoothly instead of flipping between "cache mode" and "load mode".
// Exactly DefaultWorkerSelector::worker_logit of Dynamo's
// lib/kv-router/src/scheduling/selector.rs (see docs/dynamo.md, "Flags and cost"):
//   raw_prefill   = (active_prefill_tokens + isl) / B          (0 without prefill-token tracking)
//   decay         = 1 / (1 + credit_decay * excess_active_prefill_blocks / request_blocks)
//   credit_blocks = credit * decay * device_overlap + host_weight * host_overlap + disk_weight * disk_overlap
//   logit         = prefill_load_scale * max(0, raw_prefill - credit_blocks)
//                 + potential_decode_blocks + decode_active_request_weight * active_requests
// Lower wins.
import type { WorkerKey } from "../protocols/events.js";
import type { WorkerLoad } from "./activeSequences.js";

export interface Candidate {
  worker: WorkerKey;
  /** Leading prompt blocks on the worker's device (GPU) cache. */
  overlapBlocks: number;
  /** Further leading blocks in host (CPU) memory / on disk, beyond the device prefix. */
  hostOverlapBlocks?: number;
  diskOverlapBlocks?: number;
  load: WorkerLoad;
  /** This request's blocks not already held by the worker's active requests. */
  newDecodeBlocks: number;
}

export interface Score {
  worker: WorkerKey;
  overlapBlocks: number;
  /** Prompt-side prefill load after the cache credits, before prefill_load_scale. */
  prefillBlocks: number;
  /** Potential decode blocks: the worker's active blocks plus this request's new ones. */
  decodeBlocks: number;
  logit: number;
}

/** The selector's weights: Dynamo's KvRouterConfig fields of the same names. */
export interface CostWeights {
  overlapScoreCredit: number;
  overlapScoreCreditDecay: number;
  prefillLoadScale: number;
  decodeActiveRequestWeight: number;
  /** Credit of a host-tier / disk-tier hit relative to a device hit (Dynamo: 0.75 / 0.25). */
  hostCacheHitWeight?: number;
  diskCacheHitWeight?: number;
  /** False: prompt tokens count as no load (Dynamo's --no-router-track-prefill-tokens). */
  trackPrefillTokens: boolean;
}

/** Dynamo's defaults (lib/kv-router/src/scheduling/config.rs, KvRouterConfig::default). */
export const DYNAMO_COST_WEIGHTS: Readonly<CostWeights> = {
  overlapScoreCredit: 1.0,
  overlapScoreCreditDecay: 0.0,
  prefillLoadScale: 1.0,
  decodeActiveRequestWeight: 0.0,
  trackPrefillTokens: true,
};

/**
 * Dynamo's deprecated overlap_score_weight (--kv-overlap-score-weight): it becomes
 * prefill_load_scale, and 0 also zeroes the overlap credit (pure load balancing), which
 * keeps old command lines routing as before (config.rs, apply_deprecated_overlap_score_weight_override).
 */
export function applyDeprecatedOverlapScoreWeight<T extends { overlapScoreCredit: number; prefillLoadScale: number }>(
  weights: T,
  overlapScoreWeight: number,
): T {
  return {
    ...weights,
    prefillLoadScale: overlapScoreWeight,
    overlapScoreCredit: overlapScoreWeight === 0 ? 0 : weights.overlapScoreCredit,
  };
}

export interface CostParams extends CostWeights {
  /** Prompt length in tokens. */
  isl: number;
  blockSize: number;
  /** Least active prefill tokens among the eligible candidates (the credit decay's floor). */
  minActivePrefillTokens: number;
}

/** The least active prefill load among candidates: what the credit decay measures excess against. */
export function minActivePrefillTokens(loads: readonly WorkerLoad[]): number {
  let min = Infinity;
  for (const l of loads) min = Math.min(min, l.prefillTokens);
  return Number.isFinite(min) ? min : 0;
}

/**
 * The prompt-side prefill load before Dynamo's clamp at zero, in blocks: the worker's queued
 * prefill plus this prompt, less the cache credits. Negative when the credits exceed the load
 * (a worker caching more than its queue costs); scoreCandidate clamps it, as Dynamo does.
 */
export function creditedPrefillBlocks(c: Candidate, p: CostParams): number {
  const B = p.blockSize;
  const cachedTokens = c.overlapBlocks * B;
  // Dynamo keeps the cached tokens in the raw load and subtracts them as credit below.
  const rawPrefillTokens = p.trackPrefillTokens
    ? c.load.prefillTokens + Math.max(0, p.isl - cachedTokens) + cachedTokens
    : 0;
  const rawPrefillBlocks = rawPrefillTokens / B;
  let decay = 1;
  if (p.trackPrefillTokens && p.overlapScoreCreditDecay > 0) {
    const excessBlocks = Math.max(0, c.load.prefillTokens - p.minActivePrefillTokens) / B;
    const requestBlocks = Math.max(1, Math.ceil(p.isl / B));
    decay = 1 / (1 + p.overlapScoreCreditDecay * (excessBlocks / requestBlocks));
  }
  const creditBlocks =
    p.overlapScoreCredit * decay * c.overlapBlocks +
    (p.hostCacheHitWeight ?? 0) * (c.hostOverlapBlocks ?? 0) +
    (p.diskCacheHitWeight ?? 0) * (c.diskOverlapBlocks ?? 0);
  return rawPrefillBlocks - creditBlocks;
}

export function scoreCandidate(c: Candidate, p: CostParams): Score {
  const prefillBlocks = Math.max(0, creditedPrefillBlocks(c, p));
  const decodeBlocks = c.load.decodeBlocks + c.newDecodeBlocks;
  return {
    worker: c.worker,
    overlapBlocks: c.overlapBlocks,
    prefillBlocks,
    decodeBlocks,
    logit: p.prefillLoadScale * prefillBlocks + decodeBlocks + p.decodeActiveRequestWeight * c.load.requests,
  };
}

/**
 * Picks one score as Dynamo's selector does. Temperature 0: lowest logit, ties
 * uniformly at random. Temperature T > 0: softmax over -(logit / (max - min)) / T,
 * uniform when every logit is equal.
 */
export function pickScore(scores: readonly Score[], temperature: number, random: () => number): Score {
  if (scores.length === 0) throw new Error("pickScore needs at least one candidate");
  if (temperature <= 0) return pickArgmin(scores, random);
  let min = Infinity;
  let max = -Infinity;
  for (const s of scores) {
    min = Math.min(min, s.logit);
    max = Math.max(max, s.logit);
  }
  if (max === min) return scores[Math.floor(random() * scores.length)];
  const range = max - min;
  // The largest s_w belongs to the lowest logit: subtract it for stability.
  const weights = scores.map((s) => Math.exp(-((s.logit - min) / range) / temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  let r = random() * total;
  for (let i = 0; i < scores.length; i++) {
    r -= weights[i];
    if (r < 0) return scores[i];
  }
  return scores[scores.length - 1];
}

function pickArgmin(scores: readonly Score[], random: () => number): Score {
  let best: Score[] = [];
  for (const s of scores) {
    const b = best[0];
    if (b === undefined || s.logit < b.logit) best = [s];
    else if (s.logit === b.logit) best.push(s);
  }
  return best.length === 1 ? best[0] : best[Math.floor(random() * best.length)];
}
