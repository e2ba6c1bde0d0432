// The flags that set how the router routes, declared once: `serve` and
// `simulate` (whose kv policy is the same KvRouter) take them from here, with
// the same names, aliases, defaults and checks. The settings they make are
// built in config.ts (routingSettingsFrom).
import type { Options } from "yargs";
import { DEFAULT_ADMISSION_CONFIG, QUEUE_POLICIES } from "../router/admissionQueue.js";
import { DEFAULT_PREFILL_TOKENS_PER_SEC, ROUTER_COSTS, type RouterCost } from "../router/types.js";
import { AGENTIC_WEIGHTS, KV_ROUTER_DEFAULTS } from "../scheduler/defaults.js";
import { DEFAULT_POLICY, POLICY_TYPES } from "../scheduler/policies.js";
import { SESSION_AFFINITY_MODES } from "../scheduler/sessionAffinity.js";
import { PolicyConfigError, readPolicyConfig } from "./policyConfig.js";

/** Dynamo's standalone router default (components/src/dynamo/router/args.py, --router-block-size). */
export const DYNAMO_BLOCK_SIZE = 128;

export const ROUTING_FLAGS = {
  "block-size": {
    alias: ["router-block-size", "kv-cache-block-size"], // DYN_ROUTER_BLOCK_SIZE, the frontend's DYN_KV_CACHE_BLOCK_SIZE
    type: "number",
    default: DYNAMO_BLOCK_SIZE,
    describe: "Tokens per KV block; must match the engines' block size (default: Dynamo's 128)",
  },
  "kv-overlap-score-weight": {
    // Dynamo reads DYN_ROUTER_KV_OVERLAP_SCORE_WEIGHT, else DYN_OVERLAP_SCORE_WEIGHT.
    alias: ["router-kv-overlap-score-weight", "overlap-score-weight"],
    type: "number",
    describe: "Deprecated (as in Dynamo): sets --router-prefill-load-scale; 0 also sets the overlap credit to 0",
  },
  "router-temperature": {
    type: "number",
    default: 0.0,
    describe: "Softmax temperature for sampling workers (0 = always the lowest cost, ties at random)",
  },
  "router-queue-threshold": {
    type: "number",
    defaultDescription: `${KV_ROUTER_DEFAULTS.routerQueueThreshold}, as Dynamo`,
    describe:
      "Queue requests in the router while every worker's active prefill tokens exceed this fraction of its max_num_batched_tokens (workers that do not report it are never past it)",
  },
  "router-queue-policy": {
    type: "string",
    choices: QUEUE_POLICIES,
    defaultDescription: "fcfs",
    describe: "Order of the router queue: fcfs (tail TTFT) or wspt (mean TTFT); a request's priority jumps it",
  },
  "kv-events": {
    alias: ["router-kv-events", "router-use-kv-events"], // Dynamo's variable is DYN_ROUTER_USE_KV_EVENTS
    type: "boolean",
    default: true,
    describe: "Use workers' KV events; --no-kv-events predicts caches from routing decisions",
  },
  "track-active-blocks": {
    alias: "router-track-active-blocks",
    type: "boolean",
    default: true,
    describe: "Count active requests' KV blocks as decode load (--no-track-active-blocks for prefill-only pools)",
  },
  "router-ttl-secs": {
    type: "number",
    default: 120,
    describe: "Approximate mode: seconds a routed prompt's blocks are assumed cached",
  },
  "router-max-queued": { type: "number", default: DEFAULT_ADMISSION_CONFIG.maxQueued, describe: "Most requests queued; more are refused with RESOURCE_EXHAUSTED" },
  "router-predicted-ttl-secs": {
    type: "number",
    defaultDescription: `${KV_ROUTER_DEFAULTS.predictedTtlSecs} with KV events (Dynamo: off)`,
    describe: "Predict-on-route: seconds a routed prompt counts as cached on its worker before its KV event arrives (0 = off)",
  },
  "session-affinity-ttl-secs": {
    alias: "router-session-affinity-ttl-secs", // Dynamo's frontend spelling, DYN_ROUTER_SESSION_AFFINITY_TTL_SECS
    type: "number",
    default: 0,
    describe: "Keep session_id bindings this long after their last request (0 = no affinity)",
  },
  "session-affinity-slack": { type: "number", default: 0, describe: "A session stays on its worker while its cost is at most this above the best worker's" },
  "router-session-affinity-mode": {
    type: "string",
    choices: SESSION_AFFINITY_MODES,
    defaultDescription: "the slack rule (Dynamo, and with --dynamo-defaults: hard)",
    describe: "Dynamo's affinity: hard keeps a session on its worker while the worker is a candidate; soft too under the cost policies, while the other policies may move it",
  },
  "router-worker-selection-policy": {
    type: "string",
    defaultDescription: `worker_selection.aggregated of --router-policy-config, else ${DEFAULT_POLICY}`,
    describe:
      `Worker-selection policy (Dynamo's DYN_ROUTER_WORKER_SELECTION_POLICY): ${POLICY_TYPES.join(", ")}, or an instance of --router-policy-config; ` +
      "kv-adaptive (the default) is the cost with load weights read from the fleet's queues, its measured prefill waits, the workers' KV and full batches; " +
      "default is Dynamo's built-in cost function, kv-router the same plus kv-router's terms. With no policy named, a cost weight flag, --agentic, " +
      "--load-aware, --dynamo-defaults or --router-cost ttft selects kv-router instead, as does a request that overrides a cost weight",
  },
  "router-policy-config": {
    type: "string",
    describe: "Dynamo's policy YAML: worker_selection instances (dynamo-two-tier-cost-fn and its parameters) and the aggregated selection; unknown keys stop start-up",
  },
  agentic: {
    alias: "router-agentic", // DYN_ROUTER_AGENTIC
    type: "boolean",
    default: false,
    describe: `Dynamo's agentic preset: overlap credit ${AGENTIC_WEIGHTS.overlapScoreCredit}, prefill load scale ${AGENTIC_WEIGHTS.prefillLoadScale}, decode active-request weight ${AGENTIC_WEIGHTS.decodeActiveRequestWeight} (over those flags), Dynamo's defaults for the rest; the cost policy kv-router unless a policy is named`,
  },
  "router-cost": {
    choices: ROUTER_COSTS,
    default: "dynamo" as RouterCost,
    describe: "Routing cost of the kv-router policy: dynamo (Dynamo's block formula) or ttft (estimated ms to first token, prefill rates learned per worker; makes kv-router the policy unless one is named)",
  },
  "router-prefill-tokens-per-sec": {
    type: "number",
    default: DEFAULT_PREFILL_TOKENS_PER_SEC,
    describe: "ttft cost: a worker's prefill rate until the router has learned it",
  },
} satisfies Record<string, Options>;

/** What is wrong with the values of ROUTING_FLAGS, one line each (yargs' camel-case keys). */
export function routingFlagProblems(argv: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const value = (name: string) => argv[name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())] as number | undefined;
  const int = (name: string, min: number, max: number) => {
    const v = value(name);
    if (!Number.isInteger(v) || v! < min || v! > max) problems.push(`--${name} must be an integer in [${min}, ${max}], got ${v}`);
  };
  const atLeast = (name: string, min: number, strict: boolean) => {
    const v = value(name);
    if (v === undefined) return; // a flag with no default, not given
    if (!Number.isFinite(v) || v < min || (strict && v === min)) problems.push(`--${name} must be a number ${strict ? ">" : ">="} ${min}, got ${v}`);
  };
  int("block-size", 1, 65_536);
  int("router-max-queued", 0, 1 << 24);
  for (const name of ["router-temperature", "kv-overlap-score-weight", "router-queue-threshold", "router-predicted-ttl-secs", "session-affinity-ttl-secs", "session-affinity-slack"]) {
    atLeast(name, 0, false);
  }
  for (const name of ["router-ttl-secs", "router-prefill-tokens-per-sec"]) atLeast(name, 0, true);
  if (argv.agentic && argv.loadAware) problems.push("--agentic and --load-aware are Dynamo presets that exclude each other; give one");
  problems.push(...policyProblems(argv));
  return problems;
}

/** The policy YAML's problems and an unknown --router-worker-selection-policy (checked here so DYN_ origins are named). */
function policyProblems(argv: Record<string, unknown>): string[] {
  const path = argv.routerPolicyConfig as string | undefined;
  let instances: string[] = [];
  if (path !== undefined) {
    try {
      instances = Object.keys(readPolicyConfig(path).instances);
    } catch (err) {
      if (err instanceof PolicyConfigError) return [err.message];
      throw err;
    }
  }
  const name = selectedPolicyName(argv.routerWorkerSelectionPolicy as string | undefined);
  const known = [...POLICY_TYPES, ...instances];
  if (name !== undefined && !known.includes(name)) {
    const inFile = path === undefined ? "" : `; instances in ${path}: ${instances.join(", ") || "none"}`;
    return [`--router-worker-selection-policy "${name}" is not a policy; built in: ${POLICY_TYPES.join(", ")}${inFile}`];
  }
  return [];
}

/** Dynamo trims the selection and reads an empty one as none. */
export function selectedPolicyName(flag: string | undefined): string | undefined {
  return flag?.trim() || undefined;
}
