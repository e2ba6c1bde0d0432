// The kv-adaptive and cache-greedy worker-selection policies over real gRPC,
// on one fleet state: kv-adaptive follows the cache while the fleet's prefill
// queues are short and balances once they hold a prompt per worker; the
// expected choices are worked out by hand from src/scheduler/adaptivePolicy.ts.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IDLE_LOAD_WEIGHT, loadWeight, queuedPrompts } from "../src/scheduler/adaptivePolicy.js";
import { stored } from "./support/events.js";
import { type TestRouter, tokens, withTestRouter } from "./support/router.js";

const B = 4;
/** A 10-block prompt; worker 1 holds its first 8 blocks. */
const PROMPT = tokens(40, 0);

async function route(r: TestRouter, worker: number, id: string, n: number, offset: number, prefillDone: boolean) {
  await r.client.findBestWorker({ tokenIds: tokens(n, offset), requestId: id, allowedWorkers: [{ workerId: BigInt(worker) }] });
  if (prefillDone) await r.client.markPrefillCompleted(id);
}

/** Worker 1: the cache and 3 decoding requests of 10 blocks; worker 2: one of 100 blocks; worker 3: two of 1 block. */
async function fleet(r: TestRouter) {
  for (const id of [1n, 2n, 3n]) await r.client.registerWorker({ workerId: id });
  await r.client.sendEvents([stored(1, 1, tokens(32, 0), B, 100n)]);
  for (const k of [1, 2, 3]) await route(r, 1, `w1-${k}`, 40, 1000 * k, true);
  await route(r, 2, "w2-1", 400, 50_000, true);
  await route(r, 3, "w3-1", 4, 60_000, true);
  await route(r, 3, "w3-2", 4, 70_000, true);
}

async function choose(r: TestRouter, policy: string) {
  const d = await r.client.findBestWorker({ tokenIds: PROMPT, explain: true, workerSelectionPolicy: policy });
  return { worker: Number(d.worker!.workerId), reason: d.selectionReason, logits: d.scores.map((s) => [Number(s.worker!.workerId), s.logit]) };
}

describe("kv-adaptive", () => {
  it("the load weight: 0.1 on an idle fleet, rising to 1 at one prompt of prefill queued per worker", () => {
    assert.equal(loadWeight(queuedPrompts([0, 0, 0], 40)), IDLE_LOAD_WEIGHT);
    assert.equal(loadWeight(queuedPrompts([40, 0, 20], 40)), 0.5);
    assert.equal(loadWeight(queuedPrompts([400, 400], 40)), 1);
    assert.equal(queuedPrompts([], 40), 0);
  });

  it("follows the cache while queues are short, balances once they are long (per request, over gRPC)", async () => {
    await withTestRouter({ blockSize: B }, async (r) => {
      await fleet(r);
      // Idle queues, weight 0.1. Prefill: 10 blocks x scale 4, minus 8 cached x credit 2 on w1 (clamped at 0).
      // w1: 0 + 0.1 x (30 + 10) + 6.4 x 3 = 23.2; w3: 40 + 0.1 x 12 + 6.4 x 2 = 54; w2: 40 + 0.1 x 110 + 6.4 = 57.4.
      const idle = await choose(r, "kv-adaptive");
      assert.equal(idle.worker, 1, "the cached worker, though it carries the most requests");
      assert.match(idle.reason, /load weight 0\.10 \(0\.00 prompts queued per worker\)/);
      assert.deepEqual(idle.logits.map(([w, l]) => [w, Number(l.toFixed(1))]), [[1, 23.2], [3, 54], [2, 57.4]]);
      assert.equal((await choose(r, "kv-router")).worker, 3, "kv-router's cost balances the decode blocks even here");

      // One uncached 40-token prompt queued on every worker: weight 1.
      for (const w of [1, 2, 3]) await route(r, w, `busy-${w}`, 40, 100_000 * w, false);
      // w1: 4 x ((40 + 40) / 4 - 16) + (40 + 10 + 10) ... worked: 16 + 50 + 256 = 322; w3: 80 + 22 + 192 = 294; w2: 80 + 120 + 128 = 328.
      const busy = await choose(r, "kv-adaptive");
      assert.equal(busy.worker, 3, "balanced: the lightest worker");
      assert.match(busy.reason, /load weight 1\.00 \(1\.00 prompts queued per worker\)/);
      assert.deepEqual(busy.logits, [[3, 294], [1, 322], [2, 328]]);
    });
  });
});

describe("cache-greedy", () => {
  it("takes the longest cached prefix whatever the load, the fewest active requests among equals", async () => {
    await withTestRouter({ blockSize: B }, async (r) => {
      await fleet(r);
      const d = await choose(r, "cache-greedy");
      assert.deepEqual([d.worker, d.reason], [1, "longest cached prefix, then fewest active requests"]);
      const cold = await r.client.findBestWorker({ tokenIds: tokens(40, 900_000), workerSelectionPolicy: "cache-greedy" });
      assert.equal(Number(cold.worker!.workerId), 2, "no worker caches it: the one with 1 active request");
    });
  });
});
