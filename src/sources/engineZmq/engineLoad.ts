// Load the engines report about themselves, as an optional cost term: vLLM
// and SGLang do not put it on the KV event feed, but both serve Prometheus
// text on their HTTP /metrics. We read the queue depth and KV cache usage
// and turn them into extra blocks of cost for that (worker, dp_rank).
import { type WorkerKey, workerKeyString } from "../../protocols/events.js";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import type { ZmqMetrics } from "./metrics.js";

export interface EngineLoadWeights {
  /** Cost, in blocks, per request waiting in the engine's own queue. */
  queue: number;
  /** Cost, in blocks, of a full KV cache (scaled by the usage fraction). */
  kvUsage: number;
}

export interface EngineLoad {
  waiting: number;
  kvUsage: number;
  /** Sequences the engine runs now; undefined when the page has no such series. */
  running?: number;
}

// vLLM names first, then SGLang's; older vLLM called KV usage gpu_cache_usage_perc.
const WAITING = ["vllm:num_requests_waiting", "sglang:num_queue_reqs"];
// Sequences in the running batch: with the waiting count and the slots the worker registered, the batch
// state the kv-adaptive policy reads (vLLM's scheduler stats, SGLang's scheduler metrics).
const RUNNING = ["vllm:num_requests_running", "sglang:num_running_reqs"];
const KV_USAGE = ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"];

/**
 * Reads the engine's load from Prometheus text. vLLM labels each DP engine
 * with engine="<rank>"; when such series exist only the rank's are used.
 */
export function parseEngineLoad(text: string, dpRank: number): EngineLoad | undefined {
  const samples = new Map<string, { engine: string | undefined; value: number }[]>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (!Number.isFinite(value)) continue;
    const engine = m[2] ? /engine="([^"]*)"/.exec(m[2])?.[1] : undefined;
    const list = samples.get(m[1]) ?? [];
    list.push({ engine, value });
    samples.set(m[1], list);
  }
  const read = (names: string[]): number | undefined => {
    for (const name of names) {
      const series = samples.get(name);
      if (!series) continue;
      const mine = series.filter((s) => s.engine === String(dpRank));
      const use = mine.length > 0 ? mine : series;
      return use.reduce((sum, s) => sum + s.value, 0);
    }
    return undefined;
  };
  const waiting = read(WAITING);
  const kvUsage = read(KV_USAGE);
  const running = read(RUNNING);
  if (waiting === undefined && kvUsage === undefined) return undefined;
  return { waiting: waiting ?? 0, kvUsage: kvUsage ?? 0, ...(running !== undefined ? { running } : {}) };
}

/** Polls one engine's /metrics and keeps the router's extra cost for the worker up to date. */
export class EngineLoadPoller {
  private timer: NodeJS.Timeout | undefined;
  private inFlight = false;

  constructor(
    private readonly url: string,
    private readonly worker: WorkerKey,
    private readonly router: KvRouter,
    private readonly weights: EngineLoadWeights,
    private readonly metrics: ZmqMetrics,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.poll(), this.intervalMs);
    this.timer.unref();
    void this.poll();
  }

  stop(): void {
    clearInterval(this.timer);
    this.router.extraCost.delete(workerKeyString(this.worker));
  }

  private async poll(): Promise<void> {
    if (this.inFlight) return;
    this.inFlight = true;
    const key = workerKeyString(this.worker);
    try {
      const res = await fetch(this.url, { signal: AbortSignal.timeout(Math.max(100, this.intervalMs)) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const load = parseEngineLoad(await boundedText(res, MAX_METRICS_BYTES), this.worker.dpRank);
      if (load === undefined) throw new Error("no queue-depth or KV-usage metric found");
      this.router.extraCost.set(key, this.weights.queue * load.waiting + this.weights.kvUsage * load.kvUsage);
      // The batch as the engine counts it, for policies that read it (kv-adaptive); dropped when it goes stale.
      if (load.running !== undefined) this.router.engineBatches.report(key, { running: load.running, waiting: load.waiting });
      this.metrics.loadScrapes.inc({ outcome: "ok" });
    } catch (err) {
      // No fresh signal, no term: a stale number would steer traffic wrongly.
      this.router.extraCost.delete(key);
      this.metrics.loadScrapes.inc({ outcome: "failed" });
      log.debug("engine metrics scrape failed", { url: this.url, error: String(err) });
    } finally {
      this.inFlight = false;
    }
  }
}

/** An engine's /metrics page is ~100 KB; a bigger one is refused, not buffered. */
const MAX_METRICS_BYTES = 8 * 1024 * 1024;

async function boundedText(res: Response, limit: number): Promise<string> {
  const declared = Number(res.headers.get("content-length") ?? 0);
  if (declared > limit) throw new Error(`metrics page is ${declared} bytes; at most ${limit} are read`);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of res.body ?? []) {
    total += chunk.length;
    if (total > limit) throw new Error(`metrics page is over ${limit} bytes; at most ${limit} are read`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}
