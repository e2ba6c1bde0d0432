// Worker-selection policies (issue 22) over real gRPC: one fleet state, and each
// policy choosing as its rule says (kv-router's routing, Dynamo's built-in cost
// function, Dynamo's two-tier port of SGLang's cache-aware rule, least-loaded),
// chosen per router or per request; Dynamo's router_config_override; and
// Dynamo's hard/soft session affinity. Expected choices are worked out by hand.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import type { RouterConfig } from "../src/router/types.js";
import { TWO_TIER_DEFAULTS } from "../src/scheduler/twoTierPolicy.js";
import { stored } from "./support/events.js";
import { type TestRouter, tokens, withTestRouter } from "./support/router.js";

const B = 4;
/** A 10-block prompt; worker 1 holds its first 8 blocks (ratio 0.8, above the two-tier threshold 0.5). */
const PROMPT = tokens(40, 0);

/** Routes a prompt onto one worker and finishes its prefill: it then counts as one active request and its blocks. */
async function load(r: TestRouter, worker: number, id: string, n: number, offset: number) {
  await r.client.findBestWorker({ tokenIds: tokens(n, offset), requestId: id, allowedWorkers: [{ workerId: BigInt(worker) }] });
  await r.client.markPrefillCompleted(id);
}

/**
 * Worker 1: the cache, 3 requests of 10 blocks. Worker 2: 1 request of 100 blocks.
 * Worker 3: 2 requests of 1 block. Cost (scale 1, credit 1) of PROMPT:
 * w1 (10 - 8) + (30 + 10) = 42, w2 10 + 110 = 120, w3 10 + 12 = 22.
 */
async function fleet(r: TestRouter) {
  for (const id of [1n, 2n, 3n]) await r.client.registerWorker({ workerId: id });
  await r.client.sendEvents([stored(1, 1, tokens(32, 0), B, 100n)]);
  for (const k of [1, 2, 3]) await load(r, 1, `w1-${k}`, 40, 1000 * k);
  await load(r, 2, "w2-1", 400, 50_000);
  await load(r, 3, "w3-1", 4, 60_000);
  await load(r, 3, "w3-2", 4, 70_000);
}

function withFleet(config: Partial<RouterConfig>, body: (r: TestRouter) => Promise<void>) {
  return withTestRouter({ blockSize: B, ...config }, async (r) => {
    await fleet(r);
    await body(r);
  });
}

async function choose(r: TestRouter, req: { workerSelectionPolicy?: string; routerConfigOverride?: Record<string, number | boolean> } = {}) {
  const d = await r.client.findBestWorker({ tokenIds: PROMPT, explain: true, ...req });
  return { worker: Number(d.worker!.workerId), policy: d.workerSelectionPolicy, reason: d.selectionReason, scores: d.scores };
}

const TWO_TIER_INSTANCES: RouterConfig["policyInstances"] = {
  "eager-balance": { type: "dynamo-two-tier-cost-fn", twoTier: { ...TWO_TIER_DEFAULTS, balanceAbsThreshold: 1 } },
  "strict-cache": { type: "dynamo-two-tier-cost-fn", twoTier: { ...TWO_TIER_DEFAULTS, cacheThreshold: 0.9 } },
};

describe("worker-selection policies over gRPC", () => {
  it("one fleet state, four rules, four choices (per request)", async () => {
    await withFleet({ policyInstances: TWO_TIER_INSTANCES }, async (r) => {
      const kv = await choose(r);
      assert.deepEqual([kv.worker, kv.policy, kv.reason], [3, "kv-router", "lowest cost"], "no policy named: kv-router's, the cost function");
      assert.deepEqual(
        kv.scores.map((s) => [Number(s.worker!.workerId), s.logit]),
        [[3, 22], [1, 42], [2, 120]],
      );
      assert.equal((await choose(r, { workerSelectionPolicy: "default" })).worker, 3, "Dynamo's built-in selector: the same cost");

      const twoTier = await choose(r, { workerSelectionPolicy: "dynamo-two-tier-cost-fn" });
      assert.equal(twoTier.worker, 1, "spread 3 - 1 = 2 is under 32, and 8 of 10 blocks beats the 0.5 cache threshold");
      assert.equal(twoTier.reason, "cache tier: least loaded of the largest overlap");
      assert.deepEqual(twoTier.scores.map((s) => [Number(s.worker!.workerId), s.logit]), [[1, 3], [3, 2 + 4], [2, 1 + 4]].sort((a, b) => a[1] - b[1]));

      const leastLoaded = await choose(r, { workerSelectionPolicy: "least-loaded" });
      assert.deepEqual([leastLoaded.worker, leastLoaded.reason], [2, "fewest active requests"], "1 active request, against 3 and 2");

      const balanced = await choose(r, { workerSelectionPolicy: "eager-balance" });
      assert.deepEqual([balanced.worker, balanced.reason], [2, "load tier: imbalanced, least loaded"], "2 > 1 and 3 > 1.1 x 1");
      const strict = await choose(r, { workerSelectionPolicy: "strict-cache" });
      assert.deepEqual([strict.worker, strict.reason], [2, "no cache winner: least loaded"], "0.8 is not above 0.9");
    });
  });

  it("the router's policy applies when a request names none", async () => {
    await withFleet({ workerSelectionPolicy: "dynamo-two-tier-cost-fn" }, async (r) => {
      assert.deepEqual(await choose(r).then((c) => [c.worker, c.policy]), [1, "dynamo-two-tier-cost-fn"]);
      assert.equal((await choose(r, { workerSelectionPolicy: "kv-router" })).worker, 3, "a request may still name another");
    });
  });

  it("kv-router's policy keeps its own terms (here the ttft cost); Dynamo's default does not", async () => {
    await withTestRouter({ blockSize: B, routerCost: "ttft", assumeKvReuse: false }, async (r) => {
      for (const id of [1n, 2n]) await r.client.registerWorker({ workerId: id });
      await r.client.sendEvents([stored(1, 1, tokens(32, 0), B, 100n)]);
      // Five fully cached requests on worker 1: no prefill queued, 40 decode blocks (no reuse assumed).
      for (let k = 0; k < 5; k++) {
        await r.client.findBestWorker({ tokenIds: tokens(32, 0), requestId: `c${k}`, allowedWorkers: [{ workerId: 1n }] });
      }
      // Cost: w1 (10 - 8) + (40 + 10) = 52, w2 10 + 10 = 20. ttft: w1 8 uncached tokens, w2 40.
      assert.equal((await choose(r)).worker, 1);
      assert.equal((await choose(r, { workerSelectionPolicy: "default" })).worker, 2);
    });
  });

  it("an unknown policy name is INVALID_ARGUMENT naming it and the known ones", async () => {
    await withFleet({}, async (r) => {
      await assert.rejects(
        r.client.findBestWorker({ tokenIds: PROMPT, workerSelectionPolicy: "two-tier" }),
        (err: { code: number; details: string }) =>
          err.code === status.INVALID_ARGUMENT && /"two-tier" is not a policy; known: kv-router, default, dynamo-two-tier-cost-fn, least-loaded/.test(err.details),
      );
    });
  });
});

describe("router_config_override (Dynamo's per-request cost settings)", () => {
  it("changes this request's weights only", async () => {
    await withFleet({}, async (r) => {
      // Scale 10: w1 10 x 2 + 40 = 60, w3 10 x 10 + 12 = 112.
      assert.equal((await choose(r, { routerConfigOverride: { prefillLoadScale: 10 } })).worker, 1);
      // ...and no cache credit: w1 10 x 10 + 40 = 140.
      assert.equal((await choose(r, { routerConfigOverride: { prefillLoadScale: 10, overlapScoreCredit: 0 } })).worker, 3);
      // The deprecated weight maps as Dynamo maps it: 10 is the scale; 0 zeroes scale and credit (decode only: w3 12).
      assert.equal((await choose(r, { routerConfigOverride: { overlapScoreWeight: 10 } })).worker, 1);
      assert.equal((await choose(r, { routerConfigOverride: { overlapScoreWeight: 0, prefillLoadScale: 10 } })).worker, 3);
      assert.equal((await choose(r)).worker, 3, "the router's own weights are untouched");
    });
  });

  it("refuses values Dynamo refuses, naming the field", async () => {
    await withFleet({}, async (r) => {
      for (const [override, field] of [
        [{ overlapScoreCredit: -1 }, "overlap_score_credit"],
        [{ prefillLoadScale: Number.NaN }, "prefill_load_scale"],
        [{ routerTemperature: -0.5 }, "router_temperature"],
      ] as const) {
        await assert.rejects(
          r.client.findBestWorker({ tokenIds: PROMPT, routerConfigOverride: override }),
          (err: { code: number; details: string }) => err.code === status.INVALID_ARGUMENT && err.details.includes(`router_config_override.${field}`),
        );
      }
    });
  });

  it("track_prefill_tokens: false records the routed request with no prefill load", async () => {
    await withTestRouter({ blockSize: B }, async (r) => {
      await r.client.registerWorker({ workerId: 1n });
      await r.client.findBestWorker({ tokenIds: tokens(40, 0), requestId: "a", routerConfigOverride: { trackPrefillTokens: false } });
      await r.client.findBestWorker({ tokenIds: tokens(40, 500), requestId: "b" });
      const w = (await r.client.listWorkers()).workers[0];
      assert.equal(w.activePrefillTokens, 40n, "only b's 40 tokens count");
    });
  });
});

describe("Dynamo's session affinity modes", () => {
  /** Binds session s to worker 1 (r1, 2 blocks, prefill pending), then asks where its next prompt goes. */
  async function next(config: Partial<RouterConfig>, policy?: string) {
    let worker = 0;
    let reason = "";
    await withTestRouter({ blockSize: B, sessionAffinityTtlMs: 60_000, ...config }, async (r) => {
      for (const id of [1n, 2n]) await r.client.registerWorker({ workerId: id });
      await r.client.findBestWorker({ tokenIds: tokens(8, 100), requestId: "r1", sessionId: "s", allowedWorkers: [{ workerId: 1n }] });
      // Cost of the next prompt: w1 (8 + 8) / 4 + 2 + 2 = 8, w2 2 + 2 = 4.
      const d = await r.client.findBestWorker({ tokenIds: tokens(8, 200), sessionId: "s", workerSelectionPolicy: policy });
      worker = Number(d.worker!.workerId);
      reason = d.selectionReason;
    });
    return { worker, reason };
  }

  it("without a mode, kv-router's slack rule: the session moves when its worker costs more than the slack", async () => {
    assert.equal((await next({})).worker, 2);
    assert.deepEqual(await next({ sessionAffinitySlack: 4 }), { worker: 1, reason: "session binding (within slack)" });
  });

  it("hard: the session stays while its worker is a candidate, whatever the policy", async () => {
    assert.deepEqual(await next({ sessionAffinityMode: "hard" }), { worker: 1, reason: "session binding (hard)" });
    assert.equal((await next({ sessionAffinityMode: "hard" }, "least-loaded")).worker, 1);
  });

  it("soft: the cost policies keep the binding, the others may move it", async () => {
    assert.equal((await next({ sessionAffinityMode: "soft" })).worker, 1);
    assert.equal((await next({ sessionAffinityMode: "soft" }, "default")).worker, 1);
    assert.deepEqual(await next({ sessionAffinityMode: "soft" }, "least-loaded"), { worker: 2, reason: "fewest active requests" });
  });
});
