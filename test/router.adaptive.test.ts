// The kv-adaptive and cache-greedy worker-selection policies over real gRPC,
// on one fleet state: kv-adaptive follows the cache while the fleet's prefill
// queues are short, balances once they hold an engine step (each worker's
// max_num_batched_tokens, reported at registration) or a prompt per worker,
// and weights a worker's load by the share of its KV cache (total_kv_blocks)
// its requests would hold, and balances too once the fleet's prompts have
// waited a second for their first token (the median worker's oldest prompt
// not yet reported prefilled; the router's clock is driven by hand). Since
// the fifth round its cache credit no longer hides a worker's queue above the
// fleet's mean, and a worker holding part of a prompt is charged at least the
// blocks it would recompute. Since the sixth round the fleet's load weight is
// at least the fullest batch's share of its slots (RegisterWorker.max_num_seqs),
// so sessions spread before a worker's batch fills. The seventh round's candidate
// (selectable as a kv-adaptive instance with ADAPTIVE_SEVENTH_ROUND, not the default)
// drops the fourth round's charge for the wait for a batch slot. The expected choices are worked out by hand from
// src/scheduler/adaptivePolicy.ts.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ADAPTIVE_FIFTH_ROUND, ADAPTIVE_FIRST_ROUND, ADAPTIVE_FOURTH_ROUND, ADAPTIVE_SECOND_ROUND, ADAPTIVE_SEVENTH_ROUND, IDLE_LOAD_WEIGHT, kvShare, loadWeight, slotShare, upperMedian, queuedSteps } from "../src/scheduler/adaptivePolicy.js";
import { stored } from "./support/events.js";
import { type TestRouter, startTestRouter, tokens, withTestRouter, timedFleet } from "./support/router.js";

const B = 4;
/** A 10-block prompt; worker 1 holds its first 8 blocks. */
const PROMPT = tokens(40, 0);
/** Every worker's engine step: 20 tokens (5 blocks). */
const STEP = 20;

async function route(r: TestRouter, worker: number, id: string, n: number, offset: number, prefillDone: boolean) {
  await r.client.findBestWorker({ tokenIds: tokens(n, offset), requestId: id, allowedWorkers: [{ workerId: BigInt(worker) }] });
  if (prefillDone) await r.client.markPrefillCompleted(id);
}

/**
 * Worker 1: the cache and 3 decoding requests of 10 blocks; worker 2: one of 100 blocks; worker 3: two of 1 block.
 * Each reports a 20-token step and a KV cache of `kv[i]` blocks.
 */
async function fleet(r: TestRouter, kv: [number, number, number] = [1000, 1000, 1000]) {
  for (const id of [1, 2, 3]) {
    await r.client.registerWorker({ workerId: BigInt(id), maxNumBatchedTokens: BigInt(STEP), totalKvBlocks: BigInt(kv[id - 1]) });
  }
  await r.client.sendEvents([stored(1, 1, tokens(32, 0), B, 100n)]);
  for (const k of [1, 2, 3]) await route(r, 1, `w1-${k}`, 40, 1000 * k, true);
  await route(r, 2, "w2-1", 400, 50_000, true);
  await route(r, 3, "w3-1", 4, 60_000, true);
  await route(r, 3, "w3-2", 4, 70_000, true);
}

async function choose(r: TestRouter, policy: string) {
  const d = await r.client.findBestWorker({ tokenIds: PROMPT, explain: true, workerSelectionPolicy: policy });
  const logits = d.scores.map((s) => [Number(s.worker!.workerId), Number(s.logit.toFixed(2))]);
  return { worker: Number(d.worker!.workerId), reason: d.selectionReason, logits };
}

describe("kv-adaptive", () => {
  it("the fleet's weight: 0.1 idle, 1 at one engine step or one prompt of prefill queued per worker, whichever comes first", () => {
    const step = (prefillTokens: number) => ({ prefillTokens, stepTokens: 8192 });
    assert.equal(loadWeight(queuedSteps([step(0)], 40_000)), IDLE_LOAD_WEIGHT);
    assert.equal(queuedSteps([step(8192), step(0)], 40_000), 0.5);
    // A 40 k-token prompt: a step queued per worker is one step, where the first round read a fifth of a prompt.
    assert.equal(queuedSteps([step(8192)], 40_960), 1);
    assert.equal(queuedSteps([step(8192)], 40_960, "prompts"), 0.2);
    // A 1 k-token prompt: the same queue is 8 prompts (its wait is 8 times its own prefill).
    assert.equal(queuedSteps([step(8192)], 1024), 8);
    assert.equal(queuedSteps([step(8192)], 1024, "steps"), 1);
    // A worker that reports no step size counts in prompts.
    assert.equal(queuedSteps([{ prefillTokens: 8192, stepTokens: 0 }], 40_960), 0.2);
    assert.equal(queuedSteps([], 40), 0);
    assert.deepEqual([kvShare(500, 1000), kvShare(5000, 1000), kvShare(500, 0)], [0.5, 1, 0]);
    assert.deepEqual([upperMedian([0, 1500, 1500]), upperMedian([0, 0, 1500]), upperMedian([300, 100]), upperMedian([])], [1500, 0, 300, 0]);
  });

  it("follows the cache while queues are short, balances once they hold a step per worker (per request, over gRPC)", async () => {
    const firstRound = { r1: { type: "kv-adaptive" as const, adaptive: ADAPTIVE_FIRST_ROUND } };
    await withTestRouter({ blockSize: B, policyInstances: firstRound }, async (r) => {
      await fleet(r);
      // Idle queues, weight 0.1 (no worker's requests hold over a tenth of its KV). Prefill: 10 blocks x scale 4,
      // minus 8 cached x credit 2 on w1 (clamped at 0). Load: 0.1 x (decode blocks + 64 per request).
      // w1: 0 + 0.1 x (40 + 192) = 23.2; w3: 40 + 0.1 x (12 + 128) = 54; w2: 40 + 0.11 x (110 + 64) = 59.14 (KV share 0.11).
      const idle = await choose(r, "kv-adaptive");
      assert.equal(idle.worker, 1, "the cached worker, though it carries the most requests");
      assert.match(idle.reason, /load weight 0\.10 \(0\.00 steps or prompts of prefill queued per worker, median prefill wait \d+ ms; 1 worker weighted up by KV pressure\)/);
      assert.deepEqual(idle.logits, [[1, 23.2], [3, 54], [2, 59.14]]);
      assert.equal((await choose(r, "kv-router")).worker, 3, "kv-router's cost balances the decode blocks even here");

      // One uncached 20-token prompt (one step) queued on every worker: weight 1.
      for (const w of [1, 2, 3]) await route(r, w, `busy-${w}`, 20, 100_000 * w, false);
      // w1: 4 x max(0, (20 + 40) / 4 - 16) + (30 + 5 + 10) + 64 x 4 = 301; w3: 60 + 17 + 192 = 269; w2: 60 + 115 + 128 = 303.
      const busy = await choose(r, "kv-adaptive");
      assert.equal(busy.worker, 3, "balanced: the lightest worker");
      assert.match(busy.reason, /load weight 1\.00 \(1\.00 steps or prompts of prefill queued per worker, median prefill wait \d+ ms\)/);
      assert.deepEqual(busy.logits, [[3, 269], [1, 301], [2, 303]]);

      // The first round counted the same queue in prompts of this request (40 tokens): half a prompt, weight 0.5,
      // and it stayed on the cached worker: w1 0.5 x (45 + 256) = 150.5; w3 60 + 0.5 x 209 = 164.5; w2 60 + 0.5 x 243 = 181.5.
      const r1 = await choose(r, "r1");
      assert.equal(r1.worker, 1);
      assert.match(r1.reason, /load weight 0\.50 \(0\.50 prompts of prefill queued per worker\)/);
      assert.deepEqual(r1.logits, [[1, 150.5], [3, 164.5], [2, 181.5]]);
    });
  });

  it("a worker whose requests would fill most of its KV cache weighs its load by that share, however short the queues", async () => {
    await withTestRouter({ blockSize: B }, async (r) => {
      // Worker 1 reports a KV cache of 50 blocks: with this prompt its requests would hold 40 of them (0.8).
      await fleet(r, [50, 1000, 1000]);
      // w1: 0 + 0.8 x (40 + 192) = 185.6; w3 54 and w2 59.14 as above.
      const d = await choose(r, "kv-adaptive");
      assert.equal(d.worker, 3, "the cached worker is nearly out of KV: the lightest one instead");
      assert.match(d.reason, /load weight 0\.10 .*2 workers weighted up by KV pressure/);
      assert.deepEqual(d.logits, [[3, 54], [2, 59.14], [1, 185.6]]);
    });
  });
});

describe("kv-adaptive's measured wait", () => {
  it("balances once the median worker's oldest prompt has waited a second unreported, and follows the cache again once it is reported prefilled", async () => {
    let t = 1_000_000;
    const r = await startTestRouter({ blockSize: B, policyInstances: { r2: { type: "kv-adaptive", adaptive: ADAPTIVE_SECOND_ROUND } } }, { now: () => t });
    try {
      await fleet(r);
      assert.equal((await choose(r, "kv-adaptive")).worker, 1, "idle: the cached worker");
      // One 4-token prompt on workers 2 and 3, not yet reported prefilled: a fifth of a step each, so the queue
      // alone gives weight (0 + 0.2 + 0.2) / 3 = 0.13; after 1.5 s the median worker's oldest prompt has waited 1.5 s.
      await route(r, 2, "slow-2", 4, 200_000, false);
      await route(r, 3, "slow-3", 4, 300_000, false);
      t += 1500;
      // Weight 1. w1: 0 + (40 + 192) = 232; w3 and w2 now queue 4 tokens: 4 x (4 + 40) / 4 = 44 of prefill, plus
      // w3 (13 + 192) = 249, w2 (111 + 128) = 283: the cached worker still, but by less.
      const waited = await choose(r, "kv-adaptive");
      assert.match(waited.reason, /load weight 1\.00 \(0\.13 steps or prompts of prefill queued per worker, median prefill wait 1500 ms\)/);
      assert.deepEqual(waited.logits, [[1, 232], [3, 249], [2, 283]]);
      // The second round reads only the token queue: weight 0.13, and the load barely counts.
      const r2 = await choose(r, "r2");
      assert.match(r2.reason, /load weight 0\.13 \(0\.13 steps or prompts of prefill queued per worker\)/);
      // Two more requests on worker 1 tip it: at weight 1 each adds 64 + 10 blocks, so w1 = 232 + 148 = 380 > 249.
      await route(r, 1, "w1-4", 40, 4000, true);
      await route(r, 1, "w1-5", 40, 5000, true);
      assert.equal((await choose(r, "kv-adaptive")).worker, 3, "a busy fleet: the lighter worker");
      assert.equal((await choose(r, "r2")).worker, 1, "the second round stays on the cache");
      // The engines report both prompts prefilled: nothing waits, the weight falls back, the cache wins again.
      await r.client.markPrefillCompleted("slow-2");
      await r.client.markPrefillCompleted("slow-3");
      const reported = await choose(r, "kv-adaptive");
      assert.equal(reported.worker, 1);
      assert.match(reported.reason, /median prefill wait 0 ms/);
    } finally {
      await r.close();
    }
  });
});

describe("kv-adaptive's local jams (fifth round)", () => {
  const r4 = { r4: { type: "kv-adaptive" as const, adaptive: ADAPTIVE_FOURTH_ROUND } };

  it("charges a worker's queued prefill above the fleet's mean in full, where the cache credit hid it", async () => {
    const t = 1_000_000;
    const r = await startTestRouter({ blockSize: B, policyInstances: r4 }, { now: () => t });
    try {
      for (const id of [1, 2, 3]) await r.client.registerWorker({ workerId: BigInt(id) });
      // Worker 1 caches the whole 10-block prompt; a 40-token uncached prompt (10 blocks) waits for its prefill
      // there: the jam. Worker 3 decodes a 1-block request; worker 2 is idle.
      await r.client.sendEvents([stored(1, 1, PROMPT, B, 100n)]);
      await route(r, 1, "jam", 40, 500_000, false);
      await route(r, 3, "w3-1", 4, 600_000, true);
      // Fleet weight: 40 / 40 = 1 prompt queued on w1, 1/3 per worker. Load: 1/3 x (decode blocks + 64 per request).
      // Round 4: w1 4 x max(0, (40 + 40) / 4 - 2 x 10) = 0, + (10 + 10 + 64) / 3 = 28, the jam hidden by the credit;
      // w2 4 x 10 + 10 / 3 = 43.33; w3 40 + (11 + 64) / 3 = 65.
      const before = await choose(r, "r4");
      assert.equal(before.worker, 1, "round 4 waits behind the jam");
      assert.deepEqual(before.logits, [[1, 28], [2, 43.33], [3, 65]]);
      // Round 5: the fleet's mean queue is 40 / 3 tokens; w1's 26.67 above it (6.67 blocks) are charged outside the
      // credit: 4 x (max(0, 20 - 20 - 6.67) + 6.67) = 26.67, so w1 = 54.67 and the idle w2 (43.33) wins.
      const after = await choose(r, "kv-adaptive");
      assert.equal(after.worker, 2, "round 5 leaves the jam for an idle worker");
      assert.deepEqual(after.logits, [[2, 43.33], [1, 54.67], [3, 65]]);
      assert.match(after.reason, /1 worker charged a queue above the fleet's mean or a recompute in full/);
      // Once the jam is reported prefilled the cache wins again: w1 = (20 + 64) x 0.1 = 8.4.
      await r.client.markPrefillCompleted("jam");
      assert.equal((await choose(r, "kv-adaptive")).worker, 1);
    } finally {
      await r.close();
    }
  });

  it("charges a worker holding half the prompt for the half it would recompute, where the clamp made it look fully cached", async () => {
    await withTestRouter({ blockSize: B, policyInstances: r4 }, async (r) => {
      for (const id of [1, 2, 3]) await r.client.registerWorker({ workerId: BigInt(id) });
      // Worker 1 caches all 10 blocks and decodes one 10-block request; worker 2 caches the first 5 blocks.
      await r.client.sendEvents([stored(1, 1, PROMPT, B, 100n), stored(2, 1, PROMPT.slice(0, 20), B, 200n)]);
      await route(r, 1, "w1-1", 40, 1000, true);
      // Idle fleet: weight 0.1. Round 4: w1 0 + 0.1 x (10 + 10 + 64) = 8.4; w2 4 x max(0, 10 - 2 x 5) = 0 + 0.1 x 10 = 1,
      // as cheap as the full cache but for the load; w3 40 + 1 = 41.
      const before = await choose(r, "r4");
      assert.equal(before.worker, 2, "round 4 moves for a 5-block recompute to save 7.4 blocks of load");
      assert.deepEqual(before.logits, [[2, 1], [1, 8.4], [3, 41]]);
      // Round 5: w2's term is at least the 10 - 5 blocks it would recompute: 4 x 5 + 1 = 21.
      const after = await choose(r, "kv-adaptive");
      assert.equal(after.worker, 1, "round 5 keeps the prompt on its cache");
      assert.deepEqual(after.logits, [[1, 8.4], [2, 21], [3, 41]]);
    });
  });
});

describe("kv-adaptive's fullest batch (sixth round)", () => {
  it("a worker's batch share counts its running and waiting sequences and this prompt over its slots", () => {
    const batch = (running: number, waiting: number, slots = 4) => ({ batch: { slots, running, waiting, reported: true } }) as never;
    assert.deepEqual([slotShare(batch(2, 0)), slotShare(batch(4, 3)), slotShare(batch(0, 0, 64)), slotShare(batch(3, 0, 0)), slotShare({} as never)], [0.75, 1, 1 / 64, 0, 0]);
  });

  it("weighs the load by the fullest batch's share of its slots, however short the prefill queues, and follows the cache again once it drains", async () => {
    const r5 = { r5: { type: "kv-adaptive" as const, adaptive: ADAPTIVE_FIFTH_ROUND } };
    await withTestRouter({ blockSize: B, policyInstances: r5 }, async (r) => {
      // Every worker runs at most 4 sequences; worker 1 caches 8 of the prompt's 10 blocks and decodes two
      // 10-block requests (prefilled: no prefill queued anywhere, nothing waiting for its first token).
      for (const id of [1, 2, 3]) await r.client.registerWorker({ workerId: BigInt(id), totalKvBlocks: 1000n, maxNumSeqs: 4n });
      await r.client.sendEvents([stored(1, 1, tokens(32, 0), B, 100n)]);
      for (const k of [1, 2]) await route(r, 1, `w1-${k}`, 40, 1000 * k, true);
      // Round 5 reads an idle fleet, weight 0.1: w1 0 + 0.1 x (20 + 10 + 64 x 2) = 15.8; w2, w3 4 x 10 + 0.1 x 10 = 41.
      const before = await choose(r, "r5");
      assert.equal(before.worker, 1, "round 5 fills the cached worker's batch");
      assert.deepEqual(before.logits, [[1, 15.8], [2, 41], [3, 41]]);
      // Round 6: with this prompt worker 1 would run 3 of its 4 slots, weight 0.75: w1 0.75 x 158 = 118.5,
      // w2 and w3 40 + 0.75 x 10 = 47.5.
      const full = await choose(r, "kv-adaptive");
      assert.notEqual(full.worker, 1, "round 6 spreads before the batch fills");
      assert.deepEqual(full.logits.find(([w]) => w === 1), [1, 118.5]);
      assert.match(full.reason, /load weight 0\.75 \(0\.00 steps or prompts of prefill queued per worker, median prefill wait 0 ms, fullest batch 75% of its slots\)/);
      // One request finishes: 2 of 4 slots with this prompt, weight 0.5: w1 0.5 x (10 + 10 + 64) = 42 < 40 + 5 = 45.
      await r.client.free("w1-2");
      const drained = await choose(r, "kv-adaptive");
      assert.equal(drained.worker, 1, "the cache again");
      assert.deepEqual(drained.logits, [[1, 42], [2, 45], [3, 45]]);
    });
  });
});

describe("kv-adaptive without the slot-wait charge (seventh round's candidate)", () => {
  it("weighs a full batch by the fleet's load weight only, where the default also charges the wait for a slot", async () => {
    let t = 1_000_000;
    const r7 = { r7: { type: "kv-adaptive" as const, adaptive: ADAPTIVE_SEVENTH_ROUND } };
    const r = await startTestRouter({ blockSize: B, policyInstances: r7 }, { now: () => t });
    try {
      // Three workers of 4 slots; worker 1 caches 8 of the prompt's 10 blocks. One request times the fleet:
      // 80 uncached tokens prefilled in 80 ms (1 ms per token), then 100 ms of decode.
      await timedFleet(r, { blockSize: B, maxNumBatchedTokens: BigInt(STEP), maxNumSeqs: 4n }, (ms) => (t += ms));
      // Worker 1's engine: all 4 slots running, 3 waiting. The fullest batch (8 of 4 slots with this prompt) sets the
      // load weight to 1 for both forms: w1 4 x max(0, 10 - 2 x 8) + 1 x 10 = 10; w2, w3 4 x 10 + 10 = 50.
      await r.client.keepAlive(1n, [{ dpRank: 0, running: 4, waiting: 3 }]);
      // The default (round 6) adds the slot wait: 4 releases at 100 / 4 ms each = 100 ms = 25 blocks of prefill,
      // x 4 = 100: w1 110.
      const before = await choose(r, "kv-adaptive");
      assert.notEqual(before.worker, 1, "the default moves the prompt off its cache");
      assert.deepEqual(before.logits.find(([w]) => w === 1), [1, 110]);
      assert.match(before.reason, /1 backed-up worker charged their wait for a batch slot/);
      // Round 7's candidate does not: the prompts waiting there are a prefill queue the prefill term already prices.
      const after = await choose(r, "r7");
      assert.equal(after.worker, 1, "round 7 keeps the cache");
      assert.deepEqual(after.logits, [[1, 10], [2, 50], [3, 50]]);
      assert.match(after.reason, /load weight 1\.00 .*fullest batch 100% of its slots\)$/);
    } finally {
      await r.close();
    }
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

describe("a router whose policy sets its own weights", () => {
  it("routes a request that overrides a cost weight by the kv-router cost policy, so the override keeps Dynamo's meaning", async () => {
    await withTestRouter({ blockSize: B, workerSelectionPolicy: "kv-adaptive" }, async (r) => {
      await fleet(r);
      const plain = await r.client.findBestWorker({ tokenIds: PROMPT, explain: true });
      assert.equal(plain.workerSelectionPolicy, "kv-adaptive");
      const weighted = await r.client.findBestWorker({ tokenIds: PROMPT, explain: true, routerConfigOverride: { prefillLoadScale: 10 } });
      assert.equal(weighted.workerSelectionPolicy, "kv-router", "the override's weight applies");
      // A temperature alone is no cost weight: kv-adaptive samples with it too.
      const warm = await r.client.findBestWorker({ tokenIds: PROMPT, explain: true, routerConfigOverride: { routerTemperature: 0 } });
      assert.equal(warm.workerSelectionPolicy, "kv-adaptive");
      // A request naming its policy gets it, override or not.
      const named = await r.client.findBestWorker({ tokenIds: PROMPT, workerSelectionPolicy: "kv-adaptive", routerConfigOverride: { prefillLoadScale: 10 } });
      assert.equal(named.workerSelectionPolicy, "kv-adaptive");
    });
  });
});
