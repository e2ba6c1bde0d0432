// The cost function and load tracking, observed over real gRPC.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { RouterConfig } from "../src/router/types.js";
import { type TestRouter, tokens, withTestRouter } from "./support/router.js";
import { stored } from "./support/events.js";
import { waitFor } from "./support/wait.js";

const B = 4;

function withRouter(config: Partial<RouterConfig>, body: (r: TestRouter) => Promise<void>) {
  return withTestRouter({ blockSize: B, ...config }, body);
}

async function register(r: TestRouter, ...ids: number[]) {
  for (const id of ids) await r.client.registerWorker({ workerId: BigInt(id) });
}

/** A shared 8-block system prompt followed by a 1-block user turn. */
function turn(i: number): number[] {
  return [...tokens(32, 0), ...tokens(4, 10_000 + i * 4)];
}

describe("scheduling", () => {
  it("a high prefill load scale keeps requests on the worker with the cached prefix", async () => {
    await withRouter({ prefillLoadScale: 4 }, async (r) => {
      await register(r, 1, 2, 3, 4);
      await r.client.sendEvents([stored(1, 1, tokens(32, 0), B, 100n)]);
      for (let i = 0; i < 8; i++) {
        const d = await r.client.findBestWorker({ tokenIds: turn(i), requestId: `req-${i}` });
        assert.equal(d.worker!.workerId, 1n, `request ${i}`);
        assert.equal(d.overlapBlocks, 8);
        await r.client.markPrefillCompleted(`req-${i}`);
      }
    });
  });

  it("credit 0 and scale 0 (Dynamo's old weight 0) balance load and ignore the cache", async () => {
    await withRouter({ overlapScoreCredit: 0, prefillLoadScale: 0 }, async (r) => {
      await register(r, 1, 2, 3, 4);
      await r.client.sendEvents([stored(1, 1, tokens(32, 0), B, 100n)]);
      const perWorker = new Map<bigint, number>();
      for (let i = 0; i < 8; i++) {
        const d = await r.client.findBestWorker({ tokenIds: turn(i), requestId: `req-${i}` });
        perWorker.set(d.worker!.workerId, (perWorker.get(d.worker!.workerId) ?? 0) + 1);
      }
      assert.equal(perWorker.size, 4, "every worker takes some of the load");
      for (const [w, n] of perWorker) assert.ok(n <= 3, `worker ${w} took ${n} of 8 requests`);
    });
  });

  it("identical prompts spread across workers as prefill load builds up", async () => {
    await withRouter({}, async (r) => {
      await register(r, 1, 2, 3);
      const prompt = tokens(64, 0);
      const chosen = new Set<bigint>();
      for (let i = 0; i < 3; i++) {
        const d = await r.client.findBestWorker({ tokenIds: prompt, requestId: `same-${i}` });
        chosen.add(d.worker!.workerId);
      }
      assert.equal(chosen.size, 3);
    });
  });

  it("tracks prefill then decode load, and Free releases it", async () => {
    await withRouter({}, async (r) => {
      await register(r, 1);
      const prompt = tokens(18, 0); // 4 full blocks + 2 tokens
      await r.client.findBestWorker({ tokenIds: prompt, requestId: "a" });
      let [w] = (await r.client.listWorkers()).workers;
      assert.equal(w.activeRequests, 1n);
      assert.equal(w.activePrefillTokens, 18n);
      assert.equal(w.activeDecodeBlocks, 4n);

      assert.equal((await r.client.markPrefillCompleted("a")).found, true);
      [w] = (await r.client.listWorkers()).workers;
      assert.equal(w.activePrefillTokens, 0n);
      assert.equal(w.activeDecodeBlocks, 4n);

      const explain = await r.client.findBestWorker({ tokenIds: tokens(8, 500), explain: true });
      assert.equal(explain.scores[0].decodeBlocks, 4n + 2n, "existing decode blocks plus this prompt's");

      assert.equal((await r.client.free("a")).found, true);
      assert.equal((await r.client.free("a")).found, false, "free is idempotent");
      [w] = (await r.client.listWorkers()).workers;
      assert.equal(w.activeRequests, 0n);
      assert.equal(w.activeDecodeBlocks, 0n);
      const after = await r.client.findBestWorker({ tokenIds: tokens(8, 500), explain: true });
      assert.equal(after.scores[0].decodeBlocks, 2n);
    });
  });

  it("shares decode blocks between requests with a common prefix", async () => {
    await withRouter({}, async (r) => {
      await register(r, 1);
      await r.client.findBestWorker({ tokenIds: turn(0), requestId: "a" });
      await r.client.findBestWorker({ tokenIds: turn(1), requestId: "b" });
      const [w] = (await r.client.listWorkers()).workers;
      assert.equal(w.activeDecodeBlocks, 8n + 1n + 1n);
    });
  });

  it("--no-track-active-blocks leaves decode load out", async () => {
    await withRouter({ trackActiveBlocks: false }, async (r) => {
      await register(r, 1);
      await r.client.findBestWorker({ tokenIds: tokens(16, 0), requestId: "a" });
      const d = await r.client.findBestWorker({ tokenIds: tokens(16, 100), explain: true });
      assert.equal(d.scores[0].decodeBlocks, 0n);
      assert.equal(d.scores[0].prefillBlocks, (16 + 16) / B, "prefill load is still tracked");
    });
  });

  it("temperature > 0 samples workers, favouring the cheaper one", async () => {
    await withRouter({ temperature: 1.0 }, async (r) => {
      await register(r, 1, 2);
      const prompt = tokens(40, 0);
      await r.client.sendEvents([stored(1, 1, prompt, B, 100n)]);
      const counts = new Map<bigint, number>();
      for (let i = 0; i < 300; i++) {
        const d = await r.client.findBestWorker({ tokenIds: prompt });
        counts.set(d.worker!.workerId, (counts.get(d.worker!.workerId) ?? 0) + 1);
      }
      const cached = counts.get(1n) ?? 0;
      const other = counts.get(2n) ?? 0;
      assert.ok(other > 0, "the costlier worker is sampled sometimes");
      // logits 10 vs 20 → s = 0 vs -1 → p(cached) = 1 / (1 + e^-1) ≈ 0.73
      assert.ok(cached > other, `cached worker chosen ${cached} times, other ${other}`);
      assert.ok(cached > 300 * 0.6 && cached < 300 * 0.86, `p(cached) ≈ 0.73, got ${cached / 300}`);
    });
  });

  it("temperature 0 always takes the lowest cost", async () => {
    await withRouter({ temperature: 0 }, async (r) => {
      await register(r, 1, 2);
      const prompt = tokens(40, 0);
      await r.client.sendEvents([stored(1, 1, prompt, B, 100n)]);
      for (let i = 0; i < 50; i++) {
        assert.equal((await r.client.findBestWorker({ tokenIds: prompt })).worker!.workerId, 1n);
      }
    });
  });

  it("breaks cost ties uniformly at random, whatever the workers hold (Dynamo's selector)", async () => {
    await withRouter({}, async (r) => {
      // Worker 1 holds 4 blocks, worker 2 holds 2: equal costs for a prompt neither holds.
      await r.client.sendEvents([stored(1, 1, tokens(16, 0), B, 100n), stored(2, 1, tokens(8, 50), B, 200n)]);
      const counts = new Map<bigint, number>();
      for (let i = 0; i < 200; i++) {
        const d = await r.client.findBestWorker({ tokenIds: tokens(8, 9000 + i * 8) });
        counts.set(d.worker!.workerId, (counts.get(d.worker!.workerId) ?? 0) + 1);
      }
      // Seeded sampling: the same counts every run.
      for (const w of [1n, 2n]) assert.ok((counts.get(w) ?? 0) > 60, `worker ${w} chosen ${counts.get(w) ?? 0} of 200 times`);
    });
  });

  it("chooses only among allowed_workers", async () => {
    await withRouter({}, async (r) => {
      await register(r, 1, 2, 3);
      await r.client.sendEvents([stored(1, 1, tokens(16, 0), B, 100n)]);
      const d = await r.client.findBestWorker({
        tokenIds: tokens(16, 0),
        explain: true,
        allowedWorkers: [{ workerId: 2n }, { workerId: 3n }],
      });
      assert.notEqual(d.worker!.workerId, 1n);
      assert.equal(d.scores.length, 2);
    });
  });

  it("frees requests never released once --active-request-ttl passes", async () => {
    await withRouter({ activeRequestTtlMs: 150 }, async (r) => {
      await register(r, 1);
      await r.client.findBestWorker({ tokenIds: tokens(16, 0), requestId: "forgotten" });
      assert.equal((await r.client.listWorkers()).workers[0].activeRequests, 1n);
      await waitFor(async () => (await r.client.listWorkers()).workers[0].activeRequests === 0n);
      assert.equal((await r.client.free("forgotten")).found, false);
      const expired = await r.server.metrics.registry.getSingleMetric("kvrouter_expired_requests_total")!.get();
      assert.equal(expired.values[0].value, 1);
    });
  });
});
