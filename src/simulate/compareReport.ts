// The comparison's outputs: rows.json (every run), the seed-averaged table and
// the candidate's verdicts in Markdown, and charts of TTFT against load.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TopLevelSpec } from "vega-lite";
import type { Capacity } from "./capacity.js";
import { type Aggregate, type ComparisonRow, aggregate, seedVerdicts, verdicts } from "./compare.js";
import { renderSvg } from "./charts.js";

export interface ComparisonMeta {
  candidate: string;
  baselines: readonly string[];
  /** Families the candidate was not designed on (marked in the verdict table). */
  heldOut: readonly string[];
  capacities: Readonly<Record<string, Capacity>>;
  command: string;
  charts: boolean;
}

const ms = (v: number) => (v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);
const pct = (v: number) => `${Math.round(v * 100)}%`;

/** TTFT (mean or p99) against load, one panel per family, one line per policy. */
export function ttftByLoadSpec(aggs: readonly Aggregate[], field: "ttft_mean_ms" | "ttft_p99_ms", policies: readonly string[]): TopLevelSpec {
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: `TTFT ${field === "ttft_mean_ms" ? "mean" : "p99"} by load (fraction of measured capacity), seeds averaged`,
    data: { values: aggs.map((a) => ({ family: a.family, load: a.load, policy: a.policy, ttft_s: a[field] / 1000 })) },
    facet: { column: { field: "family", type: "nominal", title: null } },
    resolve: { scale: { y: "independent" } },
    spec: {
      width: 170,
      height: 200,
      mark: { type: "line", point: true },
      encoding: {
        x: { field: "load", type: "quantitative", title: "load", axis: { format: "%", values: [0.5, 0.8, 1] }, scale: { domain: [0.45, 1.05] } },
        y: { field: "ttft_s", type: "quantitative", title: "TTFT (s)", scale: { type: "log" } },
        color: { field: "policy", type: "nominal", sort: [...policies] },
      },
    },
  };
}

export function comparisonMarkdown(rows: readonly ComparisonRow[], meta: ComparisonMeta): string {
  const aggs = aggregate(rows);
  const policies = [...new Set(rows.map((r) => r.policy))];
  const families = [...new Set(rows.map((r) => r.family))];
  const seeds = [...new Set(rows.map((r) => r.seed))];
  const lines: string[] = [];
  lines.push(`Seeds ${seeds.join(", ")}; each cell is the mean over seeds of TTFT mean / TTFT p99, then the hit rate.`, "");
  lines.push(`| family | load | ${policies.join(" | ")} |`, `|---|---:|${policies.map(() => "---:").join("|")}|`);
  for (const family of families) {
    for (const load of [...new Set(rows.map((r) => r.load))].sort()) {
      const cell = (p: string) => {
        const a = aggs.find((x) => x.family === family && x.load === load && x.policy === p);
        if (a === undefined) return "";
        const refused = a.refused > 0 ? ` (${a.refused} refused)` : "";
        return `${ms(a.ttft_mean_ms)} / ${ms(a.ttft_p99_ms)}, ${pct(a.hit_rate)}${refused}`;
      };
      lines.push(`| ${family} | ${pct(load)} | ${policies.map(cell).join(" | ")} |`);
    }
  }
  const v = verdicts(aggs, meta.candidate, meta.baselines);
  if (v.length > 0) {
    lines.push(
      "",
      `**${meta.candidate} against the best of ${meta.baselines.join(", ")}** (ratio of TTFT, ≤ 1.00 = no worse; held-out families marked *):`,
      "",
      "| family | load | best mean (policy) | mean ratio | best p99 (policy) | p99 ratio |",
      "|---|---:|---|---:|---|---:|",
    );
    for (const x of v) {
      const mark = meta.heldOut.includes(x.family) ? "*" : "";
      const flag = (r: number) => (r <= 1 ? r.toFixed(2) : `**${r.toFixed(2)}**`);
      lines.push(`| ${x.family}${mark} | ${pct(x.load)} | ${x.bestMean} | ${flag(x.meanRatio)} | ${x.bestP99} | ${flag(x.p99Ratio)} |`);
    }
  }
  const losses = seedVerdicts(rows, meta.candidate, meta.baselines).filter((x) => x.meanRatio > 1 || x.p99Ratio > 1);
  const runs = new Set(rows.map((r) => `${r.family} ${r.seed} ${r.load}`)).size;
  lines.push("", `Single runs (family, seed, load) where ${meta.candidate} is worse than the best baseline in mean or p99: ${losses.length} of ${runs}.`);
  if (losses.length > 0) {
    lines.push("", "| family | seed | load | mean ratio (best) | p99 ratio (best) |", "|---|---:|---:|---:|---:|");
    for (const x of losses) lines.push(`| ${x.family} | ${x.seed} | ${pct(x.load)} | ${x.meanRatio.toFixed(2)} (${x.bestMean}) | ${x.p99Ratio.toFixed(2)} (${x.bestP99}) |`);
  }
  lines.push("", "Capacities (speedup of the trace's timestamps at 100% load; measured with the reference policy):", "");
  lines.push("| family | reference | light-load speedup | light-load TTFT mean | capacity speedup |", "|---|---|---:|---:|---:|");
  for (const family of families) {
    const c = meta.capacities[family];
    if (c !== undefined) lines.push(`| ${family} | ${c.reference} | ${c.lightSpeedup.toFixed(3)} | ${ms(c.lightTtftMs)} | ${c.speedup.toFixed(3)} |`);
  }
  lines.push("", "```", meta.command, "```", "");
  return lines.join("\n");
}

/** Writes rows.json, aggregates.json, table.md and (unless off) ttft-mean-by-load.svg, ttft-p99-by-load.svg. */
export async function writeComparison(dir: string, rows: readonly ComparisonRow[], meta: ComparisonMeta): Promise<void> {
  writeFileSync(join(dir, "rows.json"), JSON.stringify(rows, null, 1) + "\n");
  const aggs = aggregate(rows);
  writeFileSync(join(dir, "aggregates.json"), JSON.stringify(aggs, null, 1) + "\n");
  writeFileSync(join(dir, "table.md"), comparisonMarkdown(rows, meta));
  if (!meta.charts) return;
  const policies = [...new Set(rows.map((r) => r.policy))];
  writeFileSync(join(dir, "ttft-mean-by-load.svg"), await renderSvg(ttftByLoadSpec(aggs, "ttft_mean_ms", policies)));
  writeFileSync(join(dir, "ttft-p99-by-load.svg"), await renderSvg(ttftByLoadSpec(aggs, "ttft_p99_ms", policies)));
}
