// Dynamo's routing cost, in one unit (blocks), so cache hits and load trade
// off smoothly instead of flipping between "cache mode" and "load mode":
//   logit_w = weight * prefill_tokens_w / B + decode_blocks_w   (lower wins)
import type { WorkerKey } from "../indexer/types.js";
import type { WorkerLoad } from "./activeSequences.js";

export interface Candidate {
  worker: WorkerKey;
  overlapBlocks: number;
  /** Blocks the worker holds in its cache: the first tie-breaker. */
  cachedBlocks: number;
  load: WorkerLoad;
  /** This request's blocks not already held by the worker's active requests. */
  newDecodeBlocks: number;
}

export interface Score {
  worker: WorkerKey;
  overlapBlocks: number;
  cachedBlocks: number;
  prefillBlocks: number;
  decodeBlocks: number;
  logit: number;
}

export interface CostParams {
  /** Prompt length in tokens. */
  isl: number;
  blockSize: number;
  overlapScoreWeight: number;
}

export function scoreCandidate(c: Candidate, p: CostParams): Score {
  const uncached = Math.max(0, p.isl - c.overlapBlocks * p.blockSize);
  const prefillBlocks = (c.load.prefillTokens + uncached) / p.blockSize;
  const decodeBlocks = c.load.decodeBlocks + c.newDecodeBlocks;
  return {
    worker: c.worker,
    overlapBlocks: c.overlapBlocks,
    cachedBlocks: c.cachedBlocks,
    prefillBlocks,
    decodeBlocks,
    logit: p.overlapScoreWeight * prefillBlocks + decodeBlocks,
  };
}

/**
 * Picks one score. Temperature 0: lowest logit, ties to the worker with fewer
 * cached blocks, then uniformly at random. Temperature T > 0: softmax over
 * -(logit / (max - min)) / T, uniform when every logit is equal.
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
    if (b === undefined || s.logit < b.logit || (s.logit === b.logit && s.cachedBlocks < b.cachedBlocks)) {
      best = [s];
    } else if (s.logit === b.logit && s.cachedBlocks === b.cachedBlocks) {
      best.push(s);
    }
  }
  return best.length === 1 ? best[0] : best[Math.floor(random() * best.length)];
}
