// Charts for the simulation report, declared in Vega-Lite and rendered to SVG
// by Vega's headless renderer (no browser, no canvas needed).
import * as vega from "vega";
import * as vl from "vega-lite";
import type { TopLevelSpec } from "vega-lite";
import { percentile } from "./metrics.js";
import type { PolicyRunData } from "./run.js";

const WIDTH = 640;

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Every policy's TTFT distribution as a CDF, TTFT on a log axis. */
export function ttftCdfSpec(runs: readonly PolicyRunData[]): TopLevelSpec {
  const values: { policy: string; ttft_ms: number; fraction: number }[] = [];
  for (const run of runs) {
    const sorted = run.records.map((r) => r.firstTokenMs - r.request.arrivalMs).sort((a, b) => a - b);
    if (sorted.length === 0) continue;
    // 200 quantiles draw the curve; the raw points would bloat the SVG.
    for (let q = 0; q <= 200; q++) {
      const p = q / 2;
      values.push({ policy: run.result.policy, ttft_ms: Math.max(1, percentile(sorted, Math.max(p, 0.01))), fraction: p / 100 });
    }
  }
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: "Time to first token, CDF per policy",
    width: WIDTH,
    height: 320,
    data: { values },
    mark: { type: "line", interpolate: "step-after" },
    encoding: {
      x: { field: "ttft_ms", type: "quantitative", scale: { type: "log" }, title: "TTFT (ms, log scale)" },
      y: { field: "fraction", type: "quantitative", title: "fraction of requests", axis: { format: "%" } },
      color: { field: "policy", type: "nominal", title: "policy", sort: runs.map((r) => r.result.policy) },
    },
  };
}

/** Hit rate per policy, as bars labelled with their value. */
export function hitRateSpec(runs: readonly PolicyRunData[]): TopLevelSpec {
  const values = runs.map((r) => ({ policy: r.result.policy, hit_rate: r.result.hit_rate }));
  const order = runs.map((r) => r.result.policy);
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: "Prompt blocks served from cache, per policy",
    width: WIDTH,
    height: 28 * runs.length,
    data: { values },
    encoding: {
      y: { field: "policy", type: "nominal", sort: order, title: null },
      x: { field: "hit_rate", type: "quantitative", title: "hit rate", axis: { format: "%" }, scale: { domain: [0, 1] } },
    },
    layer: [
      { mark: "bar", encoding: { color: { field: "policy", type: "nominal", sort: order, legend: null } } },
      { mark: { type: "text", align: "left", dx: 4 }, encoding: { text: { field: "hit_rate", type: "quantitative", format: ".1%" } } },
    ],
  };
}

/** TTFT p50 and p99 per policy, side by side. */
export function ttftPercentilesSpec(runs: readonly PolicyRunData[]): TopLevelSpec {
  const values = runs.flatMap((r) => [
    { policy: r.result.policy, percentile: "p50", ttft_s: r.result.ttft_p50_ms / 1000 },
    { policy: r.result.policy, percentile: "p99", ttft_s: r.result.ttft_p99_ms / 1000 },
  ]);
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: "TTFT percentiles per policy",
    data: { values },
    facet: { column: { field: "percentile", type: "nominal", title: null } },
    resolve: { scale: { x: "independent" } },
    spec: {
      width: WIDTH / 2 - 40,
      height: 28 * runs.length,
      encoding: {
        y: { field: "policy", type: "nominal", sort: runs.map((r) => r.result.policy), title: null },
        x: { field: "ttft_s", type: "quantitative", title: "TTFT (s)" },
      },
      layer: [
        { mark: "bar", encoding: { color: { field: "policy", type: "nominal", sort: runs.map((r) => r.result.policy), legend: null } } },
        { mark: { type: "text", align: "left", dx: 3 }, encoding: { text: { field: "ttft_s", type: "quantitative", format: ".2f" } } },
      ],
    },
  };
}

/** Queued+running requests on each worker over time, one panel per policy. */
export function loadOverTimeSpec(runs: readonly PolicyRunData[]): TopLevelSpec {
  const values: { policy: string; time_s: number; worker: string; requests: number }[] = [];
  for (const run of runs) {
    const { timesMs, perWorker } = run.load;
    const stride = Math.max(1, Math.ceil(timesMs.length / 240));
    for (let i = 0; i < timesMs.length; i += stride) {
      perWorker[i].forEach((n, w) => values.push({ policy: run.result.policy, time_s: timesMs[i] / 1000, worker: `w${w}`, requests: n }));
    }
  }
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: "Per-worker load over time (queued + running requests)",
    data: { values },
    facet: { row: { field: "policy", type: "nominal", sort: runs.map((r) => r.result.policy), title: null } },
    spec: {
      width: WIDTH,
      height: 90,
      mark: { type: "line", strokeWidth: 1 },
      encoding: {
        x: { field: "time_s", type: "quantitative", title: "simulated time (s)" },
        y: { field: "requests", type: "quantitative", title: "requests" },
        color: { field: "worker", type: "nominal", title: "worker" },
      },
    },
  };
}
