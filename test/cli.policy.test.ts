// Dynamo's worker-selection and preset flags through the real command-line
// parser (issue 22): --router-worker-selection-policy, Dynamo's
// --router-policy-config YAML (worker_selection, read as Dynamo reads it:
// unknown keys refused naming key and file), --agentic,
// --router-session-affinity-mode, for `serve` and `simulate` alike.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import yargs from "yargs";
import { startupWarnings } from "../src/cli/config.js";
import { simOptionsFrom, simulateOptions } from "../src/cli/simulateCommand.js";
import { TWO_TIER_DEFAULTS } from "../src/scheduler/twoTierPolicy.js";
import { parseServe as parse, refusal, routerOf } from "./support/cliParse.js";

const dir = mkdtempSync(join(tmpdir(), "kv-router-policy-"));
let files = 0;
function yamlFile(text: string): string {
  const path = join(dir, `policy-${files++}.yaml`);
  writeFileSync(path, text);
  return path;
}


// The instance shape of Dynamo's configuration-and-tuning.md, "Tune a Policy".
const TWO_TIER_YAML = `worker_selection:
  aggregated: dynamo-two-tier-cost-fn
  instances:
    - name: dynamo-two-tier-cost-fn
      type: dynamo-two-tier-cost-fn
      parameters:
        cache_threshold: 0.6
        balance_abs_threshold: 16
        balance_rel_threshold: 1.5
`;

describe("--router-worker-selection-policy and --router-policy-config", () => {
  it("default: kv-adaptive, no instances", async () => {
    const r = await routerOf([]);
    assert.equal(r.workerSelectionPolicy, "kv-adaptive");
    assert.deepEqual(r.policyInstances, {});
  });

  it("names a built-in policy", async () => {
    for (const name of ["kv-router", "default", "dynamo-two-tier-cost-fn", "least-loaded"]) {
      assert.equal((await routerOf(["--router-worker-selection-policy", name])).workerSelectionPolicy, name);
    }
  });

  it("reads Dynamo's YAML: its instances and the aggregated selection", async () => {
    const r = await routerOf(["--router-policy-config", yamlFile(TWO_TIER_YAML)]);
    assert.equal(r.workerSelectionPolicy, "dynamo-two-tier-cost-fn");
    assert.deepEqual(r.policyInstances, {
      "dynamo-two-tier-cost-fn": {
        type: "dynamo-two-tier-cost-fn",
        twoTier: { ...TWO_TIER_DEFAULTS, cacheThreshold: 0.6, balanceAbsThreshold: 16, balanceRelThreshold: 1.5, hostCacheWeight: undefined },
      },
    });
  });

  it("the flag (Dynamo's DYN_ROUTER_WORKER_SELECTION_POLICY) wins over the YAML's selection; default is Dynamo's built-in selector", async () => {
    const path = yamlFile(TWO_TIER_YAML);
    assert.equal((await routerOf(["--router-policy-config", path, "--router-worker-selection-policy", "default"])).workerSelectionPolicy, "default");
    assert.equal((await routerOf(["--router-policy-config", path, "--router-worker-selection-policy", " "])).workerSelectionPolicy, "dynamo-two-tier-cost-fn", "blank = none, as Dynamo trims");
  });

  it("an instance need not be selected by the YAML; the flag may name it", async () => {
    const path = yamlFile("worker_selection:\n  instances:\n    - name: cache-first\n      type: dynamo-two-tier-cost-fn\n      parameters: {cache_threshold: 0.2}\n");
    const r = await routerOf(["--router-policy-config", path, "--router-worker-selection-policy", "cache-first"]);
    assert.equal(r.workerSelectionPolicy, "cache-first");
    assert.equal(r.policyInstances!["cache-first"].twoTier!.cacheThreshold, 0.2);
  });

  it("refuses, naming the key and the file, what Dynamo refuses", async () => {
    const cases: [string, RegExp][] = [
      ["worker_selections:\n  aggregated: default\n", /unknown key "worker_selections" \(known: worker_selection,/],
      ["worker_selection:\n  default: x\n", /unknown key "worker_selection.default"/],
      ["worker_selection:\n  instances:\n    - name: a\n      type: dynamo-two-tier-cost-fn\n      params: {}\n", /unknown key "worker_selection.instances\[0\].params"/],
      ["worker_selection:\n  instances:\n    - name: a\n      type: dynamo-two-tier-cost-fn\n      parameters: {cache_treshold: 0.5}\n", /instances\[0\].parameters: unknown parameter "cache_treshold"/],
      ["worker_selection:\n  instances:\n    - name: a\n      type: dynamo-two-tier-cost-fn\n      parameters: {cache_threshold: 1.5}\n", /cache_threshold must be a number from 0.0 to 1.0, got 1.5/],
      ["worker_selection:\n  instances:\n    - name: a\n      type: dynamo-two-tier-cost-fn\n      parameters: {balance_rel_threshold: 0.5}\n", /balance_rel_threshold must be a number >= 1.0/],
      ["worker_selection:\n  instances:\n    - name: a\n      type: sticky\n", /type "sticky" is not a policy type kv-router has/],
      ["worker_selection:\n  instances:\n    - name: default\n      type: least-loaded\n", /"default" is reserved/],
      ["worker_selection:\n  aggregated: missing\n", /worker_selection.aggregated "missing" does not name a configured instance/],
      ["worker_selection: {}\n", /must define an instance or an aggregated/],
      ["router:\n  host_cache_hit_wieght: 0.5\n", /unknown key "router.host_cache_hit_wieght"/],
      ["- 1\n", /must be a YAML mapping/],
    ];
    for (const [text, expected] of cases) {
      const path = yamlFile(text);
      const message = await refusal(["--router-policy-config", path]);
      assert.match(message, expected, text);
      assert.ok(message.startsWith(`--router-policy-config ${path}: `), `names the flag and file: ${message}`);
    }
    assert.match(await refusal(["--router-policy-config", join(dir, "absent.yaml")]), /cannot read it \(ENOENT\)/);
  });

  it("an unknown policy name stops start-up, listing the known ones", async () => {
    assert.match(
      await refusal(["--router-worker-selection-policy", "two-tier"]),
      /^--router-worker-selection-policy "two-tier" is not a policy; built in: kv-router, default, dynamo-two-tier-cost-fn, least-loaded, cache-greedy, kv-adaptive$/m,
    );
  });

  it("accepts queue profiles, the router section and other stages with a warning each", async () => {
    const path = yamlFile(
      "default_policy_family: standard\nuncached_isl_buckets: [{min_tokens: 0, bucket: all}]\npolicy_classes: [{name: a, policy_family: standard, cache_bucket: all, quantum: 1}]\n" +
        "router:\n  router_ttl_secs: 60\nworker_selection:\n  prefill: default\n",
    );
    const argv = await parse(["--router-policy-config", path]);
    const warnings = startupWarnings(argv, ["--block-size", "16", "--router-policy-config", path], {});
    assert.equal(warnings.filter((w) => w.startsWith(`--router-policy-config ${path}: `)).length, 3, warnings.join("\n"));
  });
});

describe("Dynamo's presets and affinity mode", () => {
  const weights = (r: Awaited<ReturnType<typeof routerOf>>) => [r.overlapScoreCredit, r.prefillLoadScale, r.decodeActiveRequestWeight];

  it("--agentic: credit 2, prefill load scale 4, decode active-request weight 64, over those flags; Dynamo's defaults for the rest", async () => {
    const r = await routerOf(["--agentic"]);
    assert.deepEqual(weights(r), [2, 4, 64]);
    assert.equal(r.predictedTtlMs, 0, "Dynamo's default: no predict-on-route");
    assert.equal(r.queueThreshold, 16);
    const over = await routerOf(["--agentic", "--router-kv-overlap-score-credit", "0.5", "--router-prefill-load-scale", "9", "--kv-overlap-score-weight", "0"]);
    assert.deepEqual(weights(over), [2, 4, 64], "the preset wins, and clears the deprecated weight");
    const argv = await parse(["--agentic", "--router-prefill-load-scale", "9"]);
    assert.ok(startupWarnings(argv, ["--agentic", "--router-prefill-load-scale", "9"], {}).some((w) => w.includes("--router-prefill-load-scale ignored")));
    assert.equal((await routerOf(["--agentic", "--router-predicted-ttl-secs", "3"])).predictedTtlMs, 3000, "other flags keep their meaning");
  });

  it("--agentic and --load-aware exclude each other (as in Dynamo)", async () => {
    assert.match(await refusal(["--agentic", "--load-aware"]), /--agentic and --load-aware are Dynamo presets that exclude each other/);
  });

  it("--router-session-affinity-mode: hard or soft; unset is kv-router's slack rule, Dynamo's hard with --dynamo-defaults", async () => {
    assert.equal((await routerOf([])).sessionAffinityMode, undefined);
    assert.equal((await routerOf(["--router-session-affinity-mode", "soft"])).sessionAffinityMode, "soft");
    assert.equal((await routerOf(["--dynamo-defaults"])).sessionAffinityMode, "hard");
    assert.equal((await routerOf(["--dynamo-defaults", "--router-session-affinity-mode", "soft"])).sessionAffinityMode, "soft");
    assert.match(await refusal(["--router-session-affinity-mode", "sticky"]), /router-session-affinity-mode/);
    assert.equal((await routerOf(["--router-session-affinity-ttl-secs", "30"])).sessionAffinityTtlMs, 30_000, "Dynamo's spelling of the TTL");
  });

  it("--dynamo-defaults alone still routes as Dynamo: kv-router's cost policy (no kv-router terms set), Dynamo's weights", async () => {
    const r = await routerOf(["--dynamo-defaults"]);
    assert.equal(r.workerSelectionPolicy, "kv-router");
    assert.deepEqual(weights(r), [1, 1, 0]);
  });
});

describe("kv-router simulate takes the same flags", () => {
  it("--agentic, a policy and the YAML reach the kv policy's router", async () => {
    const argv = await simulateOptions(
      yargs(["--trace", "synthetic:agentic", "--agentic", "--router-policy-config", yamlFile(TWO_TIER_YAML), "--router-session-affinity-mode", "soft"]),
    )
      .strict()
      .exitProcess(false)
      .parse();
    const sim = simOptionsFrom(argv);
    assert.deepEqual([sim.router.overlapScoreCredit, sim.router.prefillLoadScale, sim.router.decodeActiveRequestWeight], [2, 4, 64]);
    assert.equal(sim.router.workerSelectionPolicy, "dynamo-two-tier-cost-fn");
    assert.equal(sim.router.sessionAffinityMode, "soft");
  });
});
