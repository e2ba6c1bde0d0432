// The simulation's outputs: the JSON summary and the Markdown report with charts.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { hitRateSpec, loadOverTimeSpec, renderSvg, ttftCdfSpec, ttftPercentilesSpec } from "./charts.js";
import type { PolicyResult } from "./metrics.js";
import type { SimResult } from "./run.js";

/** The `--json` document: the run's settings and every policy's figures (deterministic for a seed). */
export function resultJson(result: SimResult): string {
  const policies: Record<string, PolicyResult> = {};
  for (const p of result.policies) policies[p.result.policy] = p.result;
  return JSON.stringify({ config: result.config, policies }, null, 2) + "\n";
}

const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
const ms = (v: number) => (v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);

export function resultTable(result: SimResult): string {
  const rows = [
    "| policy | hit rate | TTFT p50 | TTFT p99 | TTFT mean | TPOT mean | throughput (tok/s) | load CoV | requests | router-queued (mean wait) | refused |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const { result: r } of result.policies) {
    const rejected = r.rejected > 0 ? ` (+${r.rejected} rejected)` : "";
    rows.push(
      `| ${r.policy} | ${pct(r.hit_rate)} | ${ms(r.ttft_p50_ms)} | ${ms(r.ttft_p99_ms)} | ${ms(r.ttft_mean_ms)} | ${r.tpot_mean_ms.toFixed(1)} ms | ` +
        `${Math.round(r.throughput_tokens_per_s).toLocaleString("en-US")} | ${r.load_cov.toFixed(3)} | ${r.requests}${rejected} | ` +
        `${r.router_queued} (${ms(r.router_queue_wait_mean_ms)}) | ${r.refused} |`,
    );
  }
  return rows.join("\n");
}

export interface ReportMeta {
  trace: string;
  command: string;
}

const CHARTS = [
  { file: "ttft-cdf.svg", alt: "TTFT CDF per policy", spec: ttftCdfSpec },
  { file: "ttft-percentiles.svg", alt: "TTFT p50 and p99 per policy", spec: ttftPercentilesSpec },
  { file: "hit-rate.svg", alt: "Cache hit rate per policy", spec: hitRateSpec },
  { file: "load-over-time.svg", alt: "Per-worker load over time", spec: loadOverTimeSpec },
] as const;

/** Writes report.md, the charts (SVG) and results.json into `dir`. */
export async function writeReport(dir: string, result: SimResult, meta: ReportMeta): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const chart of CHARTS) {
    const path = join(dir, chart.file);
    writeFileSync(path, await renderSvg(chart.spec(result.policies)));
    written.push(path);
  }
  const jsonPath = join(dir, "results.json");
  writeFileSync(jsonPath, resultJson(result));
  written.push(jsonPath);

  const c = result.config as { workers: number; requests: number; engine: Record<string, number>; router: Record<string, unknown> };
  const md = `# Routing-quality report

Trace \`${meta.trace}\`, ${c.requests} requests, ${c.workers} simulated workers.

\`\`\`
${meta.command}
\`\`\`

${resultTable(result)}

- **hit rate**: fraction of prompt blocks (of ${c.engine.blockSize} tokens) served from the worker's KV cache.
- **TTFT**: arrival to first token: queueing, then prefill of the uncached tokens.
- **TPOT**: mean time per output token after the first; grows with the decode batch a worker carries.
- **throughput**: prompt + generated tokens of completed requests per second, first arrival to last completion.
- **load CoV**: coefficient of variation of the workers' time-averaged queued+running requests (0 = even).
- **oracle-prefix**: the hit-rate ceiling. One perfect, unbounded cache shared by the whole fleet holds every
  block of every earlier request; requests are placed round-robin. No policy can hit more: a real worker
  only holds blocks that an earlier request with the same prefix stored there.

Engines: ${c.engine.kvBlocks} KV blocks each, LRU eviction, prefill ${c.engine.prefillMsPerToken} ms per uncached token,
decode step ${c.engine.decodeMsPerStep} ms + ${c.engine.decodeMsPerToken} ms per running request, at most ${c.engine.maxBatch} running requests.
Router (\`kv\`): ${JSON.stringify(c.router)}.

${CHARTS.map((ch) => `![${ch.alt}](${ch.file})`).join("\n\n")}
`;
  const mdPath = join(dir, "report.md");
  writeFileSync(mdPath, md);
  written.push(mdPath);
  return written;
}
