// Figures of one policy's run: cache hit rate, TTFT percentiles, throughput
// and how evenly the load spread over the workers.
import type { RequestRecord } from "./engine.js";

export interface PolicyResult {
  policy: string;
  /** Requests that completed. */
  requests: number;
  /** Requests no engine could hold (prompt larger than its KV cache). */
  rejected: number;
  /** Requests the router refused: its queue full, or the client's deadline passed while queued. */
  refused: number;
  /** Completed requests that waited in the router's queue, and their waits (arrival to dispatch). */
  router_queued: number;
  router_queue_wait_mean_ms: number;
  router_queue_wait_p99_ms: number;
  /** Fraction of prompt blocks served from cache. */
  hit_rate: number;
  /** Prompt blocks served from cache, and all full prompt blocks (hit_rate = hit_blocks / prompt_blocks). */
  hit_blocks: number;
  prompt_blocks: number;
  ttft_p50_ms: number;
  ttft_p99_ms: number;
  ttft_mean_ms: number;
  /** Mean time per output token after the first (decode speed under the batch the worker carried). */
  tpot_mean_ms: number;
  /** Prompt plus generated tokens of completed requests per second of simulated time. */
  throughput_tokens_per_s: number;
  /** Coefficient of variation (stddev / mean) of the workers' time-averaged queued+running requests. */
  load_cov: number;
  /** Requests completed per worker. */
  worker_requests: number[];
  extras: Record<string, number>;
}

/** Sampled load: at each time, queued+running requests per worker. */
export interface LoadSamples {
  timesMs: number[];
  perWorker: number[][];
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function coefficientOfVariation(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  if (mean === 0) return 0;
  const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / values.length;
  return Math.sqrt(variance) / mean;
}

export function ttfts(records: readonly RequestRecord[]): number[] {
  return records.map((r) => r.firstTokenMs - r.request.arrivalMs).sort((a, b) => a - b);
}

const round = (v: number, digits = 4) => (Number.isFinite(v) ? Number(v.toFixed(digits)) : v);

export function summarize(
  policy: string,
  records: readonly RequestRecord[],
  rejected: number,
  blockSize: number,
  load: LoadSamples,
  workers: number,
  extras: Record<string, number>,
  refused = 0,
): PolicyResult {
  let hit = 0;
  let promptBlocks = 0;
  let tokens = 0;
  let tpotSum = 0;
  let tpotCount = 0;
  let first = Infinity;
  let last = -Infinity;
  const perWorker = new Array<number>(workers).fill(0);
  for (const r of records) {
    hit += r.hitBlocks;
    promptBlocks += Math.floor(r.request.inputLength / blockSize);
    tokens += r.request.inputLength + r.request.outputLength;
    first = Math.min(first, r.request.arrivalMs);
    last = Math.max(last, r.finishMs);
    perWorker[r.worker]++;
    if (r.request.outputLength > 1) {
      tpotSum += (r.finishMs - r.firstTokenMs) / (r.request.outputLength - 1);
      tpotCount++;
    }
  }
  const waits = records.map((r) => r.queuedMs - r.request.arrivalMs).filter((w) => w > 0).sort((a, b) => a - b);
  const sorted = ttfts(records);
  const mean = sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length);
  const avgLoad = new Array<number>(workers).fill(0);
  for (const sample of load.perWorker) sample.forEach((v, w) => (avgLoad[w] += v / load.perWorker.length));
  const spanS = (last - first) / 1000;
  return {
    policy,
    requests: records.length,
    rejected,
    refused,
    router_queued: waits.length,
    router_queue_wait_mean_ms: round(waits.length === 0 ? 0 : waits.reduce((a, b) => a + b, 0) / waits.length, 2),
    router_queue_wait_p99_ms: round(waits.length === 0 ? 0 : percentile(waits, 99), 2),
    hit_rate: round(promptBlocks === 0 ? 0 : hit / promptBlocks),
    hit_blocks: hit,
    prompt_blocks: promptBlocks,
    ttft_p50_ms: round(percentile(sorted, 50), 2),
    ttft_p99_ms: round(percentile(sorted, 99), 2),
    ttft_mean_ms: round(mean, 2),
    tpot_mean_ms: round(tpotCount === 0 ? 0 : tpotSum / tpotCount, 3),
    throughput_tokens_per_s: round(spanS > 0 ? tokens / spanS : 0, 1),
    load_cov: round(coefficientOfVariation(avgLoad)),
    worker_requests: perWorker,
    extras,
  };
}
