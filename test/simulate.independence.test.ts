// Each policy's fleet is simulated on its own: its figures are the same
// whether it runs alone or beside other policies (a fleet's queue used to make
// every fleet advance in fine steps, which moved the others' results).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import type { EngineParams } from "../src/simulate/engine.js";
import type { PolicyName } from "../src/simulate/policies.js";
import { type SimOptions, simulate } from "../src/simulate/run.js";
import { agenticTrace, DEFAULT_AGENTIC, sharedPrefixTrace } from "../src/simulate/synthetic.js";
import { parseTrace } from "../src/simulate/trace.js";

const ENGINE: EngineParams = {
  blockSize: 64,
  kvBlocks: 2048,
  prefillMsPerToken: 0.05,
  decodeMsPerStep: 8,
  decodeMsPerToken: 0.5,
  maxBatch: 32,
  maxNumBatchedTokens: 1024,
  kvReadMsPerBlock: 0.002,
};

function options(policies: PolicyName[]): SimOptions {
  return {
    workers: 3,
    engine: ENGINE,
    router: { ...DEFAULT_ROUTER_CONFIG, blockSize: 64, prefillLoadScale: 3, predictedTtlMs: 2000 },
    // A low threshold: some fleets queue in their routers (the kv ones), others never do.
    admission: { thresholds: { routerQueueThreshold: 1 }, queuePolicy: "fcfs", maxQueued: 1000 },
    clientDeadlineMs: 60_000,
    policies,
    seed: 4,
    speedup: 1,
  };
}

/** Every figure of every policy, keyed by policy: the summary and, as JSON, the load samples. */
function figures(result: ReturnType<typeof simulate>) {
  return new Map(result.policies.map((p) => [p.result.policy, { result: p.result, load: JSON.stringify(p.load) }]));
}

describe("simulate: fleets are independent", () => {
  const traces = {
    burst: parseTrace(sharedPrefixTrace({ requests: 160, groups: 4, prefixBlocks: 2, suffixBlocks: 4, gapMs: 8, outputLength: 30, seed: 1 }), "burst"),
    agentic: parseTrace(agenticTrace({ ...DEFAULT_AGENTIC, sessions: 30, sessionGapMs: 150, seed: 3 }), "agentic"),
  };
  const all: PolicyName[] = ["kv", "dynamo-2026", "dynamo-two-tier-cost-fn", "kv-least-loaded", "least-loaded", "round-robin"];

  for (const [name, trace] of Object.entries(traces)) {
    test(`${name}: each policy gives the same figures alone and beside the others`, () => {
      const together = figures(simulate(trace, options(all)));
      const queued = [...together.values()].filter((f) => f.result.router_queued > 0);
      assert.ok(queued.length > 0 && queued.length < all.length, "not vacuous: some fleets' routers queued requests, not all");
      for (const policy of all) {
        const alone = figures(simulate(trace, options([policy]))).get(policy)!;
        assert.deepEqual(alone.result, together.get(policy)!.result, `${policy} alone vs beside the others`);
        // Compared as strings: a mismatch would print thousands of samples.
        assert.ok(alone.load === together.get(policy)!.load, `${policy}: the same load samples alone and beside the others`);
      }
    });
  }
});
