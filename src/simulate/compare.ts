// The policy comparison: every policy on every trace family, at three loads
// (fractions of the fleet's measured capacity), over several seeds. Each
// (family, seed, load) is one simulate() call with every policy beside the
// others (fleets are independent, so that equals running each alone).
import type { Capacity } from "./capacity.js";
import type { FamilyName } from "./families.js";
import type { PolicyName } from "./policies.js";
import { type SimOptions, simulate } from "./run.js";
import type { TraceRequest } from "./trace.js";

export const LOAD_LEVELS = [0.5, 0.8, 1.0] as const;

export interface ComparisonRow {
  family: FamilyName;
  seed: number;
  /** Fraction of the family's capacity. */
  load: number;
  speedup: number;
  policy: string;
  requests: number;
  refused: number;
  ttft_mean_ms: number;
  ttft_p50_ms: number;
  ttft_p99_ms: number;
  hit_rate: number;
}

export interface ComparisonPlan {
  families: readonly FamilyName[];
  seeds: readonly number[];
  loads: readonly number[];
  policies: readonly PolicyName[];
  base: Omit<SimOptions, "policies" | "speedup" | "seed">;
}

export function runComparison(
  plan: ComparisonPlan,
  traceOf: (family: FamilyName, seed: number) => TraceRequest[],
  capacityOf: (family: FamilyName) => Capacity,
  onRow?: (rows: ComparisonRow[]) => void,
): ComparisonRow[] {
  const rows: ComparisonRow[] = [];
  for (const family of plan.families) {
    const capacity = capacityOf(family);
    for (const seed of plan.seeds) {
      const trace = traceOf(family, seed);
      for (const load of plan.loads) {
        const speedup = capacity.speedup * load;
        const result = simulate(trace, { ...plan.base, policies: [...plan.policies], seed, speedup });
        const batch = result.policies.map(({ result: r }) => ({
          family,
          seed,
          load,
          speedup: Number(speedup.toFixed(4)),
          policy: r.policy,
          requests: r.requests,
          refused: r.refused,
          ttft_mean_ms: r.ttft_mean_ms,
          ttft_p50_ms: r.ttft_p50_ms,
          ttft_p99_ms: r.ttft_p99_ms,
          hit_rate: r.hit_rate,
        }));
        rows.push(...batch);
        onRow?.(batch);
      }
    }
  }
  return rows;
}

export interface Aggregate {
  family: FamilyName;
  load: number;
  policy: string;
  seeds: number;
  /** Means over the seeds of each seed's figure. */
  ttft_mean_ms: number;
  ttft_p99_ms: number;
  hit_rate: number;
  refused: number;
}

/** Per (family, load, policy): the seeds' figures averaged. */
export function aggregate(rows: readonly ComparisonRow[]): Aggregate[] {
  const groups = new Map<string, ComparisonRow[]>();
  for (const r of rows) {
    const key = `${r.family}\u0000${r.load}\u0000${r.policy}`;
    const g = groups.get(key);
    if (g === undefined) groups.set(key, [r]);
    else g.push(r);
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return [...groups.values()].map((g) => ({
    family: g[0].family,
    load: g[0].load,
    policy: g[0].policy,
    seeds: g.length,
    ttft_mean_ms: Number(mean(g.map((r) => r.ttft_mean_ms)).toFixed(1)),
    ttft_p99_ms: Number(mean(g.map((r) => r.ttft_p99_ms)).toFixed(1)),
    hit_rate: Number(mean(g.map((r) => r.hit_rate)).toFixed(4)),
    refused: g.reduce((a, r) => a + r.refused, 0),
  }));
}

export interface Verdict {
  family: FamilyName;
  load: number;
  /** The best other policy by mean TTFT and by p99 TTFT, and the candidate's ratio to each (<= 1: no worse). */
  bestMean: string;
  meanRatio: number;
  bestP99: string;
  p99Ratio: number;
}

/** How `candidate` compares with the best of `others` at each (family, load). */
export function verdicts(aggs: readonly Aggregate[], candidate: string, others: readonly string[]): Verdict[] {
  const out: Verdict[] = [];
  const cells = new Map<string, Aggregate[]>();
  for (const a of aggs) {
    const key = `${a.family}\u0000${a.load}`;
    cells.set(key, [...(cells.get(key) ?? []), a]);
  }
  for (const cell of cells.values()) {
    const mine = cell.find((a) => a.policy === candidate);
    const rivals = cell.filter((a) => others.includes(a.policy));
    if (mine === undefined || rivals.length === 0) continue;
    const byMean = rivals.reduce((b, a) => (a.ttft_mean_ms < b.ttft_mean_ms ? a : b));
    const byP99 = rivals.reduce((b, a) => (a.ttft_p99_ms < b.ttft_p99_ms ? a : b));
    out.push({
      family: mine.family,
      load: mine.load,
      bestMean: byMean.policy,
      meanRatio: Number((mine.ttft_mean_ms / byMean.ttft_mean_ms).toFixed(3)),
      bestP99: byP99.policy,
      p99Ratio: Number((mine.ttft_p99_ms / byP99.ttft_p99_ms).toFixed(3)),
    });
  }
  return out;
}

export interface SeedVerdict {
  family: FamilyName;
  seed: number;
  load: number;
  meanRatio: number;
  bestMean: string;
  p99Ratio: number;
  bestP99: string;
}

/** The candidate against the best of `others` in every single (family, seed, load) run. */
export function seedVerdicts(rows: readonly ComparisonRow[], candidate: string, others: readonly string[]): SeedVerdict[] {
  const out: SeedVerdict[] = [];
  const cells = new Map<string, ComparisonRow[]>();
  for (const r of rows) {
    const key = `${r.family}\u0000${r.seed}\u0000${r.load}`;
    cells.set(key, [...(cells.get(key) ?? []), r]);
  }
  for (const cell of cells.values()) {
    const mine = cell.find((r) => r.policy === candidate);
    const rivals = cell.filter((r) => others.includes(r.policy));
    if (mine === undefined || rivals.length === 0) continue;
    const byMean = rivals.reduce((b, r) => (r.ttft_mean_ms < b.ttft_mean_ms ? r : b));
    const byP99 = rivals.reduce((b, r) => (r.ttft_p99_ms < b.ttft_p99_ms ? r : b));
    out.push({
      family: mine.family,
      seed: mine.seed,
      load: mine.load,
      meanRatio: Number((mine.ttft_mean_ms / byMean.ttft_mean_ms).toFixed(3)),
      bestMean: byMean.policy,
      p99Ratio: Number((mine.ttft_p99_ms / byP99.ttft_p99_ms).toFixed(3)),
      bestP99: byP99.policy,
    });
  }
  return out;
}
