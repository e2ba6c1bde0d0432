// `kv-router simulate`: replay a Mooncake trace against simulated engines and
// compare routing policies (flags, progress bar, outputs).
import { writeFileSync } from "node:fs";
import cliProgress from "cli-progress";
import type { Argv } from "yargs";
import { DEFAULT_ROUTER_CONFIG } from "../router/types.js";
import { DYNAMO_DEFAULTS, KV_ROUTER_DEFAULTS } from "../scheduler/defaults.js";
import { DEFAULT_POLICY } from "../scheduler/policies.js";
import { simulateLive } from "../simulate/live.js";
import { POLICY_NAMES, type PolicyName } from "../simulate/policies.js";
import { resultJson, resultTable, writeReport } from "../simulate/report.js";
import { type SimOptions, type SimResult, simulate } from "../simulate/run.js";
import { agenticTrace, DEFAULT_AGENTIC } from "../simulate/synthetic.js";
import { loadTrace, MOONCAKE_BLOCK_TOKENS, parseTrace, type TraceRequest, TraceError } from "../simulate/trace.js";
import { routingSettingsFrom } from "./config.js";
import { ROUTING_FLAGS, routingFlagProblems } from "./routingFlags.js";

export const DEFAULT_POLICIES: PolicyName[] = ["kv", "round-robin", "random", "least-loaded", "oracle-prefix"];

export function simulateOptions<T>(y: Argv<T>) {
  return y
    .option("trace", {
      type: "string",
      demandOption: true,
      describe: "Mooncake JSONL trace (timestamp, input_length, output_length, hash_ids[, session_id]), or synthetic:agentic[:SEED] to generate an agentic-session trace",
    })
    .option("trace-block-size", { type: "number", default: MOONCAKE_BLOCK_TOKENS, describe: "Tokens per trace hash id" })
    .option("workers", { type: "number", default: 8, describe: "Simulated workers" })
    .options(ROUTING_FLAGS)
    .option("kv-blocks", { type: "number", default: 16384, describe: "KV cache capacity per worker, in blocks" })
    .option("prefill-ms-per-token", { type: "number", default: 0.1, describe: "Prefill cost per uncached prompt token (ms)" })
    .option("decode-ms-per-step", { type: "number", default: 10, describe: "Fixed time of one decode step (ms)" })
    .option("decode-ms-per-token", { type: "number", default: 1, describe: "Added to a decode step per running request (ms per output token)" })
    .option("max-batch", { type: "number", default: 64, describe: "Most requests running at once on a worker" })
    .option("max-num-batched-tokens", {
      type: "number",
      default: 8192,
      describe: "Chunked prefill: tokens per engine step (vLLM max_num_batched_tokens); 0 = the older prefill-first engine",
    })
    .option("kv-read-ms-per-block", { type: "number", default: 0.002, describe: "Chunked engine: step cost per KV block the batch reads" })
    .option("worker-speeds", { type: "string", describe: "Relative worker speeds, comma-separated (e.g. 1,1,0.5), cycled over the workers" })
    .option("burst", { type: "number", default: 1, describe: "Requests arrive in bursts of N at the first one's timestamp" })
    .option("client-deadline-secs", { type: "number", default: 60, describe: "A simulated client gives up after this long in a router's queue (counted refused)" })
    .option("policies", {
      type: "string",
      default: DEFAULT_POLICIES.join(","),
      describe: `Comma-separated policies to compare: ${POLICY_NAMES.join(", ")}; kv is the router serve runs with these flags (by default the policy ${DEFAULT_POLICY}), kv-cost the same with the cost policy kv-router`,
    })
    .option("seed", { type: "number", default: 0, describe: "Seed for every random choice (same seed, same results)" })
    .option("speedup", { type: "number", default: 1, describe: "Replay the trace this many times faster (divides timestamps)" })
    .option("max-requests", { type: "number", describe: "Replay only the first N requests" })
    .option("json", { type: "string", describe: "Write the per-policy figures as JSON to this file" })
    .option("report", { type: "string", describe: "Write a Markdown report with SVG charts into this directory" })
    .option("progress", { type: "boolean", describe: "Show a progress bar (default: when stderr is a terminal)" })
    .option("live", { type: "boolean", default: false, describe: "Route through a running kv-router over gRPC, in scaled real time" })
    .option("router-address", { type: "string", default: "127.0.0.1:50051", describe: "--live: the kv-router's gRPC address" })
    .option("live-worker-id-base", { type: "number", default: 1_000_000, describe: "--live: simulated workers use ids base+1..base+N" })
    .check((a) => {
      const problems = routingFlagProblems(a);
      const int = (name: string, v: number | undefined, min: number) => {
        if (v !== undefined && (!Number.isInteger(v) || v < min)) problems.push(`--${name} must be an integer >= ${min}, got ${v}`);
      };
      const positive = (name: string, v: number) => {
        if (!Number.isFinite(v) || v <= 0) problems.push(`--${name} must be a number > 0, got ${v}`);
      };
      const nonNegative = (name: string, v: number) => {
        if (!Number.isFinite(v) || v < 0) problems.push(`--${name} must be a number >= 0, got ${v}`);
      };
      int("workers", a.workers as number, 1);
      int("trace-block-size", a.traceBlockSize as number, 1);
      int("kv-blocks", a.kvBlocks as number, 1);
      int("max-batch", a.maxBatch as number, 1);
      int("max-requests", a.maxRequests as number | undefined, 1);
      int("seed", a.seed as number, 0);
      int("live-worker-id-base", a.liveWorkerIdBase as number, 0);
      positive("speedup", a.speedup as number);
      positive("decode-ms-per-step", a.decodeMsPerStep as number);
      nonNegative("decode-ms-per-token", a.decodeMsPerToken as number);
      nonNegative("prefill-ms-per-token", a.prefillMsPerToken as number);
      int("max-num-batched-tokens", a.maxNumBatchedTokens as number, 0);
      int("burst", a.burst as number, 1);
      nonNegative("kv-read-ms-per-block", a.kvReadMsPerBlock as number);
      positive("client-deadline-secs", a.clientDeadlineSecs as number);
      try {
        parseSpeeds(a.workerSpeeds as string | undefined);
      } catch (err) {
        problems.push((err as Error).message);
      }
      try {
        parsePolicies(a.policies as string);
      } catch (err) {
        problems.push((err as Error).message);
      }
      if (problems.length > 0) throw new Error(problems.join("\n"));
      return true;
    });
}

export type SimulateArgs = Awaited<ReturnType<ReturnType<typeof simulateOptions>["parse"]>>;

export function parsePolicies(text: string): PolicyName[] {
  const names = [...new Set(text.split(",").map((s) => s.trim()).filter((s) => s !== ""))];
  if (names.length === 0) throw new Error("--policies: name at least one policy");
  for (const n of names) {
    if (!(POLICY_NAMES as readonly string[]).includes(n)) throw new Error(`--policies: unknown policy "${n}"; choose from ${POLICY_NAMES.join(", ")}`);
  }
  return names as PolicyName[];
}

export function parseSpeeds(text: string | undefined): number[] {
  if (text === undefined || text.trim() === "") return [];
  const speeds = text.split(",").map((s) => Number(s.trim()));
  for (const v of speeds) if (!(Number.isFinite(v) && v > 0)) throw new Error(`--worker-speeds: every speed must be a number > 0, got "${text}"`);
  return speeds;
}

/** Reads --trace: a Mooncake JSONL file, or `synthetic:agentic[:SEED]`. */
export function traceFrom(spec: string, traceBlockSize: number): TraceRequest[] {
  const m = /^synthetic:agentic(?::(\d+))?$/.exec(spec);
  if (m) return parseTrace(agenticTrace({ ...DEFAULT_AGENTIC, seed: Number(m[1] ?? 0) }), spec, traceBlockSize);
  if (spec.startsWith("synthetic:")) throw new TraceError(`--trace: unknown synthetic trace "${spec}"; use synthetic:agentic[:SEED]`);
  return loadTrace(spec, traceBlockSize);
}

export function simOptionsFrom(a: SimulateArgs): SimOptions {
  // The kv policy is the router `serve` runs, from the same flags and tuned defaults (Dynamo's under --agentic, as serve),
  // its worker-selection policy included (kv-adaptive unless the flags name one or set the cost: defaultPolicy.ts).
  const router = routingSettingsFrom(
    a,
    { ...DEFAULT_ROUTER_CONFIG, prefillLoadScale: KV_ROUTER_DEFAULTS.prefillLoadScale },
    a.agentic ? DYNAMO_DEFAULTS : KV_ROUTER_DEFAULTS,
  );
  return {
    workers: a.workers,
    engine: {
      blockSize: a.blockSize,
      kvBlocks: a.kvBlocks,
      prefillMsPerToken: a.prefillMsPerToken,
      decodeMsPerStep: a.decodeMsPerStep,
      decodeMsPerToken: a.decodeMsPerToken,
      maxBatch: a.maxBatch,
      ...(a.maxNumBatchedTokens > 0 ? { maxNumBatchedTokens: a.maxNumBatchedTokens, kvReadMsPerBlock: a.kvReadMsPerBlock } : {}),
    },
    admission: { thresholds: { routerQueueThreshold: router.queueThreshold }, queuePolicy: router.queuePolicy, maxQueued: a.routerMaxQueued },
    workerSpeeds: parseSpeeds(a.workerSpeeds),
    burst: a.burst,
    clientDeadlineMs: a.clientDeadlineSecs * 1000,
    router,
    policies: parsePolicies(a.policies),
    seed: a.seed,
    speedup: a.speedup,
    maxRequests: a.maxRequests,
    traceBlockSize: a.traceBlockSize,
  };
}

function progressBar(enabled: boolean) {
  if (!enabled) return { update: undefined, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    { format: "simulate [{bar}] {percentage}% | {value}/{total} requests | eta {eta_formatted}", stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update: (done: number, total: number) => {
      if (!started) {
        bar.start(total, 0);
        started = true;
      }
      bar.update(done);
    },
    stop: () => started && bar.stop(),
  };
}

/** Runs the command; returns the result (the CLI prints it, tests read it). */
export async function runSimulate(a: SimulateArgs, argvText = "kv-router simulate"): Promise<SimResult> {
  const trace = traceFrom(a.trace, a.traceBlockSize);
  const opts = simOptionsFrom(a);
  const bar = progressBar(a.progress ?? process.stderr.isTTY === true);
  let result: SimResult;
  try {
    result = a.live
      ? await simulateLive(trace, { ...opts, address: a.routerAddress, workerIdBase: a.liveWorkerIdBase }, bar.update)
      : simulate(trace, opts, bar.update);
  } finally {
    bar.stop();
  }
  if (a.json) writeFileSync(a.json, resultJson(result));
  if (a.report) await writeReport(a.report, result, { trace: a.trace, command: argvText });
  return result;
}

export async function simulateCommand(a: SimulateArgs): Promise<void> {
  try {
    const result = await runSimulate(a, ["kv-router", ...process.argv.slice(2)].join(" "));
    process.stdout.write(resultTable(result) + "\n");
    if (a.json) process.stdout.write(`wrote ${a.json}\n`);
    if (a.report) process.stdout.write(`wrote ${a.report}/report.md\n`);
  } catch (err) {
    // A bad trace is the user's input (exit 2); anything else, e.g. an unreachable --live router, exits 1.
    process.stderr.write(`kv-router simulate: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = err instanceof TraceError ? 2 : 1;
  }
}
