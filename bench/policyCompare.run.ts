// `node --import tsx bench/policyCompare.run.ts [flags]`: the routing-policy
// comparison of docs/simulation/policies.md. Every policy on every trace
// family at 50%, 80% and 100% of the fleet's measured capacity, several seeds;
// writes rows, aggregates, a Markdown table and charts into --out.
//   --families agentic,rag,chat,agentic-long,mooncake   --seeds 1,2,3
//   --policies dynamo-2026,...   --out docs/simulation/policies
//   --mooncake ../shared/data/mooncake_conversation_trace.jsonl
//   --capacity FILE   reuse measured capacities (JSON by family) instead of measuring
//   --candidate kv-adaptive   the policy the verdict table judges against the baselines
//   --rows FILE   re-render the table and charts from an earlier run's rows.json (no simulation)
// Row names: `kv-router` is the cost policy, `kv-adaptive` serve's default, `kv` whatever serve's
// default is at the time of the run. Until round 5 the comparison's routers named no policy, so
// the `kv` rows of rounds 1-4 (their rows.json and tables) are the cost policy, `kv-router`.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type Capacity, measureCapacity } from "../src/simulate/capacity.js";
import { writeComparison } from "../src/simulate/compareReport.js";
import { type ComparisonPlan, type ComparisonRow, LOAD_LEVELS, runComparison } from "../src/simulate/compare.js";
import { FAMILY_NAMES, type FamilyName, familyTrace } from "../src/simulate/families.js";
import { POLICY_NAMES, type PolicyName } from "../src/simulate/policies.js";
import { loadTrace, type TraceRequest } from "../src/simulate/trace.js";
import { PLAN_BASE } from "./policyPlan.js";

const { values } = parseArgs({
  options: {
    families: { type: "string", default: FAMILY_NAMES.join(",") },
    seeds: { type: "string", default: "1,2,3" },
    loads: { type: "string", default: LOAD_LEVELS.join(",") },
    policies: { type: "string", default: "dynamo-2026,dynamo-agentic,dynamo-two-tier-cost-fn,kv-cache-greedy,kv-least-loaded,kv-router,kv-adaptive" },
    candidate: { type: "string", default: "kv-adaptive" },
    baselines: { type: "string", default: "dynamo-2026,dynamo-agentic,dynamo-two-tier-cost-fn,kv-cache-greedy,kv-least-loaded" },
    "held-out": { type: "string", default: "" },
    mooncake: { type: "string", default: "../shared/data/mooncake_conversation_trace.jsonl" },
    capacity: { type: "string" },
    out: { type: "string", default: "docs/simulation/policies" },
    "no-charts": { type: "boolean", default: false },
    rows: { type: "string" },
  },
});

const list = (s: string) => s.split(",").map((x) => x.trim()).filter((x) => x !== "");
const families = list(values.families) as FamilyName[];
for (const f of families) if (!(FAMILY_NAMES as readonly string[]).includes(f)) throw new Error(`--families: unknown family "${f}"; known: ${FAMILY_NAMES.join(", ")}`);
const policies = list(values.policies) as PolicyName[];
for (const p of policies) if (!(POLICY_NAMES as readonly string[]).includes(p)) throw new Error(`--policies: unknown policy "${p}"`);
const seeds = list(values.seeds).map(Number);
const loads = list(values.loads).map(Number);

const plan: ComparisonPlan = { families, seeds, loads, policies, base: PLAN_BASE };

const t0 = performance.now();
const log = (m: string) => console.error(`[compare ${((performance.now() - t0) / 1000).toFixed(0)}s] ${m}`);
let recorded: TraceRequest[] | undefined;
const traceOf = (family: FamilyName, seed: number) => {
  if (family === "mooncake" && recorded === undefined) recorded = loadTrace(values.mooncake);
  return familyTrace(family, seed, recorded);
};

mkdirSync(values.out, { recursive: true });
const capacityPath = values.capacity ?? join(values.out, "capacity.json");
const capacities: Record<string, Capacity> = existsSync(capacityPath) ? JSON.parse(readFileSync(capacityPath, "utf8")) : {};
const capacityOf = (family: FamilyName): Capacity => {
  if (capacities[family] === undefined) {
    // Measured on the family's first seed, with the comparison's fleet.
    capacities[family] = measureCapacity(traceOf(family, seeds[0]), { ...plan.base, policies: [], seed: seeds[0], speedup: 1 });
    log(`${family}: capacity at speedup ${capacities[family].speedup.toFixed(3)} (light-load TTFT ${capacities[family].lightTtftMs} ms)`);
    writeFileSync(capacityPath, JSON.stringify(capacities, null, 2) + "\n");
  }
  return capacities[family];
};

const rows: ComparisonRow[] = values.rows
  ? JSON.parse(readFileSync(values.rows, "utf8"))
  : runComparison(plan, traceOf, capacityOf, (batch) => {
      const b = batch[0];
      log(`${b.family} seed ${b.seed} load ${b.load}: ` + batch.map((r) => `${r.policy} ${Math.round(r.ttft_mean_ms)}/${Math.round(r.ttft_p99_ms)}`).join(", "));
    });
await writeComparison(values.out, rows, {
  candidate: values.candidate,
  baselines: list(values.baselines),
  heldOut: list(values["held-out"]),
  capacities,
  command: `node --import tsx bench/policyCompare.run.ts ${process.argv.slice(2).join(" ")}`.trim(),
  charts: !values["no-charts"],
});
log(`wrote ${values.out}`);
