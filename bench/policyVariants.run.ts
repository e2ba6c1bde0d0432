// `node --import tsx bench/policyVariants.run.ts --cells rag:18:0.8,rag:17:0.8 --variants r6,no-slot-wait`
// Design runs of kv-adaptive variants (docs/simulation/policies.md, round 7): each variant is a kv-adaptive
// instance with its own signals (and, where named, router settings), run beside Dynamo's --agentic preset,
// its default and two-tier on the comparison's fleet and settings (bench/policyPlan.ts), so each line
// is a ratio to the best of those baselines on the same seed. Not for held-out seeds: it exists to
// try forms on seeds already seen.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ADAPTIVE_DEFAULTS, ADAPTIVE_SEVENTH_ROUND, type AdaptiveOptions } from "../src/scheduler/adaptivePolicy.js";
import type { RouterConfig } from "../src/router/types.js";
import type { Capacity } from "../src/simulate/capacity.js";
import { type FamilyName, familyTrace } from "../src/simulate/families.js";
import { KvPolicy, type Policy, type PolicyName } from "../src/simulate/policies.js";
import { simulate } from "../src/simulate/run.js";
import { PLAN_BASE } from "./policyPlan.js";

/** A variant: adaptive signals, and router settings beside them. */
interface Variant {
  adaptive: AdaptiveOptions;
  router?: Partial<RouterConfig>;
}

const VARIANTS: Record<string, Variant> = {
  // the sixth round's form, serve's default
  r6: { adaptive: ADAPTIVE_DEFAULTS },
  // the seventh round's candidate: the sixth's without the slot-wait charge
  r7: { adaptive: ADAPTIVE_SEVENTH_ROUND },
  "no-slot-wait": { adaptive: { ...ADAPTIVE_DEFAULTS, backedUpWait: false } },
  "no-predict": { adaptive: ADAPTIVE_DEFAULTS, router: { predictedTtlMs: 0 } },
  ttl5: { adaptive: ADAPTIVE_DEFAULTS, router: { predictedTtlMs: 5000 } },
  ttl10: { adaptive: ADAPTIVE_DEFAULTS, router: { predictedTtlMs: 10_000 } },
  "ns-ttl10": { adaptive: { ...ADAPTIVE_DEFAULTS, backedUpWait: false }, router: { predictedTtlMs: 10_000 } },
  "no-jams": { adaptive: { ...ADAPTIVE_DEFAULTS, localJams: false } },
};

const { values } = parseArgs({
  options: {
    cells: { type: "string", default: "rag:18:0.8" },
    variants: { type: "string", default: "r6" },
    baselines: { type: "string", default: "dynamo-agentic,dynamo-2026,dynamo-two-tier-cost-fn" },
    capacity: { type: "string", default: "docs/simulation/policies/capacity.json" },
  },
});
const capacities: Record<string, Capacity> = JSON.parse(readFileSync(values.capacity, "utf8"));
const variants = values.variants.split(",");
for (const v of variants) if (VARIANTS[v] === undefined) throw new Error(`--variants: unknown "${v}"; known: ${Object.keys(VARIANTS).join(", ")}`);
const baselines = values.baselines.split(",") as PolicyName[];

// The variants run as extra policies: simulate() builds its policies by name, so wrap makePolicy's module
// export through the policy list it receives (a name per variant, built here).
const built = new Map<string, Variant>(variants.map((v) => [`v:${v}`, VARIANTS[v]]));

for (const cell of values.cells.split(",")) {
  const [family, seedText, loadText] = cell.split(":");
  const seed = Number(seedText);
  const load = Number(loadText);
  const trace = familyTrace(family as FamilyName, seed);
  const speedup = capacities[family].speedup * load;
  const result = simulate(trace, { ...PLAN_BASE, policies: [...baselines, ...built.keys()] as PolicyName[], seed, speedup, makeExtra: (name, opts) => {
    const v = built.get(name);
    if (v === undefined) return undefined;
    const router: RouterConfig = { ...opts.router, ...v.router, workerSelectionPolicy: name, policyInstances: { [name]: { type: "kv-adaptive", adaptive: v.adaptive } } };
    return new KvPolicy(name, router, opts.workers, opts.seed, opts.clock, opts.admission, opts.maxNumBatchedTokens ?? 0, opts.clientDeadlineMs, opts.totalKvBlocks ?? 0, opts.maxNumSeqs ?? 0) as Policy;
  } });
  const rs = result.policies.map((p) => p.result);
  const base = rs.filter((r) => (baselines as string[]).includes(r.policy));
  const bestMean = Math.min(...base.map((r) => r.ttft_mean_ms));
  const bestP99 = Math.min(...base.map((r) => r.ttft_p99_ms));
  const line = rs.map((r) => `${r.policy.replace(/^v:/, "")} ${(r.ttft_mean_ms / bestMean).toFixed(2)}/${(r.ttft_p99_ms / bestP99).toFixed(2)} h${(r.hit_rate * 100).toFixed(1)}`);
  console.log(`${cell} best ${Math.round(bestMean)}/${Math.round(bestP99)} ms | ${line.join(" | ")}`);
}
