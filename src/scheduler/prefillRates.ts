// Per-worker prefill rates, learned online from what the router already
// sees: a request is routed (FindBestWorker) with some prefill work queued
// ahead of it on its worker, and its prefill ends (MarkPrefillCompleted)
// some time later. (work ahead + its own uncached tokens) / elapsed is one
// sample of that worker's rate; an exponential average smooths the samples.
// Every worker starts from the seed rate (--router-prefill-tokens-per-sec).

interface Pending {
  workerKey: string;
  startedAt: number;
  /** Prefill tokens the worker had to get through before this request's first token. */
  work: number;
  /** The decode slowdown at routing time (samples are normalised to an idle worker). */
  slowdown: number;
}

/** Weight of a new sample in the average. */
const SAMPLE_WEIGHT = 0.25;
/** Samples over shorter intervals are clock noise, not a rate. */
const MIN_ELAPSED_MS = 1;
/** Most routed requests tracked at once (the oldest are dropped past it). */
const MAX_PENDING = 1 << 20;

export class PrefillRates {
  /** Tokens per millisecond, by worker key. */
  private readonly rates = new Map<string, number>();
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly seedTokensPerMs: number,
    private readonly now: () => number,
  ) {}

  /** The worker's learned rate (tokens per ms), or the seed. */
  rate(workerKey: string): number {
    return this.rates.get(workerKey) ?? this.seedTokensPerMs;
  }

  routed(requestId: string, workerKey: string, work: number, slowdown: number): void {
    this.pending.set(requestId, { workerKey, startedAt: this.now(), work, slowdown });
    if (this.pending.size > MAX_PENDING) this.pending.delete(this.pending.keys().next().value!);
  }

  /** The request's prefill ended: one rate sample for its worker. */
  prefillDone(requestId: string): void {
    const p = this.pending.get(requestId);
    if (p === undefined) return;
    this.pending.delete(requestId);
    const elapsed = this.now() - p.startedAt;
    if (elapsed < MIN_ELAPSED_MS || p.work <= 0) return;
    const sample = (p.work * p.slowdown) / elapsed;
    const old = this.rates.get(p.workerKey);
    this.rates.set(p.workerKey, old === undefined ? sample : old + SAMPLE_WEIGHT * (sample - old));
  }

  /** A request freed or expired before its prefill was reported: no sample. */
  forget(requestId: string): void {
    this.pending.delete(requestId);
  }

  forgetWorker(matches: (workerKey: string) => boolean): void {
    for (const key of [...this.rates.keys()]) if (matches(key)) this.rates.delete(key);
    for (const [id, p] of this.pending) if (matches(p.workerKey)) this.pending.delete(id);
  }
}

/**
 * Estimated time to first token on a worker, in ms: the prefill work queued
 * there plus this prompt's uncached tokens, at the worker's rate, slowed by
 * the decode batch it carries (decode steps share the engine's step budget
 * and read their KV every step).
 */
export function estimateTtftMs(queuedPrefillTokens: number, uncachedTokens: number, tokensPerMs: number, slowdown: number): number {
  return ((queuedPrefillTokens + uncachedTokens) / tokensPerMs) * slowdown;
}

export function decodeSlowdown(decodeBlocks: number, perBlock: number): number {
  return 1 + perBlock * decodeBlocks;
}
