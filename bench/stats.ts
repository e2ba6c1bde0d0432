// Small helpers shared by the benchmarks: percentiles, medians, timing.
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export function median(xs: readonly number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 50);
}

/** Microseconds since `t0` (from process.hrtime.bigint()). */
export function usSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1000;
}

export interface Latency {
  p50: number;
  p99: number;
  max: number;
}

export function latency(samplesUs: number[]): Latency {
  const s = [...samplesUs].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1] ?? NaN };
}

export function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/**
 * gc(), then a pause while V8's helper threads finish that collection's
 * concurrent work. Timed right after gc(), a pass on 2 cores shares them with
 * that sweeping: 2 shard threads measured 4.3-4.8 M blocks/s so, 5.2 M after a
 * 500 ms pause, while one shard's rate did not move (2026-12-05).
 */
export async function gcAndSettle(ms = 300): Promise<void> {
  gc();
  await new Promise((resolve) => setTimeout(resolve, ms));
}
