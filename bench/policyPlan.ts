// The fleet and router settings every policy comparison runs (bench/policyCompare.run.ts) and its
// per-request tail traces (bench/policyTail.run.ts) share: eight chunked-prefill engines and
// kv-router's router defaults, so a trace explains exactly the runs the tables report.
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { KV_ROUTER_DEFAULTS } from "../src/scheduler/defaults.js";
import { DEFAULT_POLICY } from "../src/scheduler/policies.js";
import type { ComparisonPlan } from "../src/simulate/compare.js";

export const PLAN_BLOCK = 64;

export const PLAN_BASE: ComparisonPlan["base"] = {
  workers: 8,
  engine: {
    blockSize: PLAN_BLOCK,
    kvBlocks: 8192,
    prefillMsPerToken: 0.1,
    decodeMsPerStep: 10,
    decodeMsPerToken: 1,
    maxBatch: 64,
    maxNumBatchedTokens: 8192,
    kvReadMsPerBlock: 0.002,
  },
  // kv-router's defaults, as `serve` and `simulate` run them, so a `kv` row is serve's default
  // policy; the other rows name their own (src/simulate/policies.ts).
  router: {
    ...DEFAULT_ROUTER_CONFIG,
    workerSelectionPolicy: DEFAULT_POLICY,
    blockSize: PLAN_BLOCK,
    prefillLoadScale: KV_ROUTER_DEFAULTS.prefillLoadScale,
    predictedTtlMs: KV_ROUTER_DEFAULTS.predictedTtlSecs * 1000,
    sessionAffinityTtlMs: 0,
  },
  admission: { thresholds: { routerQueueThreshold: KV_ROUTER_DEFAULTS.routerQueueThreshold }, queuePolicy: "fcfs", maxQueued: 1 << 20 },
  clientDeadlineMs: 60_000,
};
