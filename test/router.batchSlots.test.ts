// kv-adaptive's fourth-round signal over real gRPC: the engine's batch. A worker
// registers its batch slots (RegisterWorker.max_num_seqs, Dynamo's
// ModelRuntimeConfig.max_num_seqs) and reports, with KeepAlive, how many
// sequences it runs and how many wait for a slot, as Dynamo's workers publish
// their forward-pass metrics (scheduled and queued requests). A worker whose
// slots are all taken and that has requests waiting is charged the wait a new
// prompt would meet there, (waiting + 1) x decode time / slots, turned into
// prefill blocks at the fleet's measured prefill speed and weighed as uncached
// prefill (x prefill_load_scale 4), above the fleet's median such charge. The
// router's clock is driven by hand; the expected choices are worked out by hand
// from src/scheduler/adaptivePolicy.ts. The sixth round also floors the fleet's load
// weight by the fullest batch (test/router.adaptive.test.ts); these checks run the
// fifth round's form (kv-adaptive-r5's signals), so the wait is seen on its own.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ADAPTIVE_FIFTH_ROUND, ADAPTIVE_THIRD_ROUND, backedUpWaitMs, waitBlocks } from "../src/scheduler/adaptivePolicy.js";
import { ENGINE_BATCH_FRESH_MS, EngineBatches, backedUp, projectedBatch } from "../src/scheduler/engineBatch.js";
import { DecodeTime, PrefillSpeed } from "../src/scheduler/prefillSpeed.js";
import { type TestRouter, startTestRouter, tokens, timedFleet } from "./support/router.js";

const B = 4;
/** A 10-block prompt; worker 1 holds its first 8 blocks. */
const PROMPT = tokens(40, 0);
const SLOTS = 4;
const R5 = { r5: { type: "kv-adaptive" as const, adaptive: ADAPTIVE_FIFTH_ROUND } };

async function choose(r: TestRouter, policy: string) {
  const d = await r.client.findBestWorker({ tokenIds: PROMPT, explain: true, workerSelectionPolicy: policy });
  const logits = d.scores.map((s) => [Number(s.worker!.workerId), Number(s.logit.toFixed(2))]);
  return { worker: Number(d.worker!.workerId), reason: d.selectionReason, logits };
}

describe("an engine's batch", () => {
  it("is backed up only with every slot taken and requests waiting; the router projects it from its own requests without a report", () => {
    assert.equal(backedUp({ slots: 64, running: 64, waiting: 1, reported: true }), true);
    assert.equal(backedUp({ slots: 64, running: 64, waiting: 0, reported: true }), false, "full, nothing waiting");
    assert.equal(backedUp({ slots: 64, running: 12, waiting: 9, reported: true }), false, "a queue behind a prefill, free slots");
    assert.equal(backedUp({ slots: 0, running: 64, waiting: 9, reported: true }), false, "slots not reported");
    assert.deepEqual(projectedBatch(4, 6), { slots: 4, running: 4, waiting: 2, reported: false });
    let t = 0;
    const batches = new EngineBatches(() => t);
    batches.report("1:0", { running: 3, waiting: 1 });
    assert.deepEqual(batches.batch("1:0", 4, 9), { slots: 4, running: 3, waiting: 1, reported: true });
    t += ENGINE_BATCH_FRESH_MS + 1;
    assert.deepEqual(batches.batch("1:0", 4, 9), { slots: 4, running: 4, waiting: 5, reported: false }, "a stale report gives way to the projection");
  });

  it("waits (waiting + 1) slot releases; the wait becomes prefill blocks at the measured speed", () => {
    const c = { batch: { slots: 4, running: 4, waiting: 3, reported: true }, decodeMs: 100, prefillMsPerToken: 0.5 } as never;
    assert.equal(backedUpWaitMs(c), 100);
    assert.equal(waitBlocks(100, c, 4, 4), 200);
    assert.equal(backedUpWaitMs({ ...(c as object), decodeMs: 0 } as never), 0, "no decode timed yet");
    const speed = new PrefillSpeed();
    speed.sample(10, 1000); // shorter than a block's worth: the round trip, not a prefill
    assert.equal(speed.msPerToken, 0);
    speed.sample(100, 50);
    speed.sample(1000, 500);
    assert.equal(speed.msPerToken, 0.5);
    const decode = new DecodeTime();
    decode.sample(100);
    decode.sample(200);
    assert.equal(decode.ms, 110);
  });
});

describe("kv-adaptive and the engine's batch (over gRPC)", () => {
  it("moves a prompt off a cached worker whose batch is full with requests waiting, not off one busy with a prefill, nor when the whole fleet waits", async () => {
    let t = 1_000_000;
    const r3 = { r3: { type: "kv-adaptive" as const, adaptive: ADAPTIVE_THIRD_ROUND }, ...R5 };
    const r = await startTestRouter({ blockSize: B, policyInstances: r3 }, { now: () => t });
    try {
      // One request times the fleet: 80 uncached tokens prefilled in 80 ms (1 ms per token), then 100 ms of decode.
      await timedFleet(r, { blockSize: B, maxNumBatchedTokens: 20n, maxNumSeqs: BigInt(SLOTS) }, (ms) => (t += ms));

      // Idle, weight 0.1. w1: 4 x max(0, 10 - 2 x 8) + 0.1 x 10 = 1; w2, w3: 4 x 10 + 0.1 x 10 = 41.
      const idle = await choose(r, "r5");
      assert.deepEqual([idle.worker, idle.logits[0]], [1, [1, 1]]);

      // Worker 1's engine: all 4 slots running, 3 waiting. A prompt there starts after 4 releases, one every
      // 100 / 4 = 25 ms: 100 ms, which prefills 100 tokens = 25 blocks, x 4 = 100 blocks. The fleet's median charge is 0.
      await r.client.keepAlive(1n, [{ dpRank: 0, running: SLOTS, waiting: 3 }]);
      const full = await choose(r, "r5");
      assert.notEqual(full.worker, 1, "a backed-up home: recomputing the prompt elsewhere is cheaper than its wait");
      assert.match(full.reason, /1 backed-up worker charged their wait for a batch slot/);
      assert.deepEqual(full.logits.find(([w]) => w === 1), [1, 101]);
      assert.equal((await choose(r, "r3")).worker, 1, "the third round cannot see the batch: it stays");

      // The same queue with free slots (a prefill ahead, no full batch): the next prompt starts within steps.
      await r.client.keepAlive(1n, [{ dpRank: 0, running: 1, waiting: 3 }]);
      const prefilling = await choose(r, "r5");
      assert.deepEqual([prefilling.worker, prefilling.logits[0]], [1, [1, 1]]);

      // Every worker backed up alike: the prompt waits wherever it goes; only a wait above the median is charged.
      for (const id of [1n, 2n, 3n]) await r.client.keepAlive(id, [{ dpRank: 0, running: SLOTS, waiting: 3 }]);
      const everywhere = await choose(r, "r5");
      assert.deepEqual([everywhere.worker, everywhere.logits[0]], [1, [1, 1]]);

      // Worker 1 the most backed up (7 waiting: 200 blocks) against 100 elsewhere: charged the 100 above the median.
      await r.client.keepAlive(1n, [{ dpRank: 0, running: SLOTS, waiting: 7 }]);
      const worst = await choose(r, "r5");
      assert.notEqual(worst.worker, 1);
      assert.deepEqual(worst.logits.find(([w]) => w === 1), [1, 101]);

      // Reports stop: after 3 s the router's own count stands in, and it has routed nothing to worker 1.
      t += ENGINE_BATCH_FRESH_MS + 1;
      assert.equal((await choose(r, "r5")).worker, 1);

      // A report for a rank the worker did not register is refused.
      await assert.rejects(r.client.keepAlive(1n, [{ dpRank: 5, running: 1, waiting: 0 }]), /INVALID_ARGUMENT.*dp_rank 5/);
    } finally {
      await r.close();
    }
  });

  it("without engine reports, counts the requests it routed: past the slots they wait", async () => {
    let t = 1_000_000;
    const r = await startTestRouter({ blockSize: B, policyInstances: R5 }, { now: () => t });
    try {
      await timedFleet(r, { blockSize: B, maxNumBatchedTokens: 1000n, maxNumSeqs: 2n }, (ms) => (t += ms));
      // Three 4-token requests on worker 1, prefilled: two run, one waits for a slot (the router's projection).
      for (const k of [1, 2, 3]) {
        await r.client.findBestWorker({ tokenIds: tokens(4, 10_000 * k), requestId: `w1-${k}`, allowedWorkers: [{ workerId: 1n }] });
        await r.client.markPrefillCompleted(`w1-${k}`);
      }
      // Wait (1 + 1) x 100 / 2 = 100 ms = 100 blocks charged; w1 = 1 + 0.1 x (3 + 192) + 100 > 41.
      const d = await choose(r, "r5");
      assert.notEqual(d.worker, 1);
      assert.match(d.reason, /1 backed-up worker charged/);
      // One finishes: two run, none waits; the cache wins again (w1 = 1 + 0.1 x (2 + 128) = 14).
      await r.client.free("w1-3");
      assert.equal((await choose(r, "r5")).worker, 1);
    } finally {
      await r.close();
    }
  });
});
