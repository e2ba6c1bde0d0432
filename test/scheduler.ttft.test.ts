// --router-cost ttft over real gRPC: per-worker prefill rates learned from the
// FindBestWorker -> MarkPrefillCompleted interval, on a hand-driven clock so
// the "engine" takes exactly as long as the test says.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";

const B = 4;
/** Tokens per ms of the two simulated workers: worker 2 is made 4x slower. */
const TRUE_RATE = new Map([
  [1n, 20],
  [2n, 5],
]);

async function rates(r: TestRouter): Promise<Map<bigint, number>> {
  return new Map((await r.client.listWorkers()).workers.map((w) => [w.worker!.workerId, w.prefillTokensPerSecond / 1000]));
}

describe("ttft cost", () => {
  it("learns each worker's prefill rate and converges on the one made slower", async () => {
    const clock = { t: 1_000_000 };
    const r = await startTestRouter(
      { blockSize: B, routerCost: "ttft", prefillTokensPerSec: 10_000 },
      { now: () => clock.t },
    );
    try {
      for (const id of [1n, 2n]) await r.client.registerWorker({ workerId: id, leaseTtlSeconds: 86_400 });
      assert.deepEqual([...(await rates(r)).values()], [10, 10], "both start at the seed");
      for (let i = 0; i < 40; i++) {
        const worker = i % 2 === 0 ? 1n : 2n;
        const prompt = tokens(400, 10_000 * (i + 1));
        const d = await r.client.findBestWorker({ tokenIds: prompt, requestId: `r${i}`, allowedWorkers: [{ workerId: worker }] });
        assert.equal(d.worker!.workerId, worker);
        clock.t += prompt.length / TRUE_RATE.get(worker)!; // the engine computes the prompt at its true rate
        await r.client.markPrefillCompleted(`r${i}`);
        await r.client.free(`r${i}`);
      }
      const learned = await rates(r);
      for (const [w, rate] of TRUE_RATE) {
        assert.ok(Math.abs(learned.get(w)! - rate) / rate < 0.02, `worker ${w}: learned ${learned.get(w)} tokens/ms, true ${rate}`);
      }
      // The estimate is now in ms, and the slow worker's is 4x the fast one's.
      const probe = await r.client.findBestWorker({ tokenIds: tokens(400, 7), explain: true });
      assert.equal(probe.worker!.workerId, 1n);
      const cost = new Map(probe.scores.map((s) => [s.worker!.workerId, s.logit]));
      assert.ok(Math.abs(cost.get(1n)! - 400 / 20) < 1e-9);
      assert.ok(Math.abs(cost.get(2n)! - 400 / 5) < 1e-9);
    } finally {
      await r.close();
    }
  });

  it("weighs queued prefill work by each worker's rate: a fast worker with work queued can still win", async () => {
    const clock = { t: 1_000_000 };
    const r = await startTestRouter({ blockSize: B, routerCost: "ttft", prefillTokensPerSec: 10_000 }, { now: () => clock.t });
    try {
      for (const id of [1n, 2n]) await r.client.registerWorker({ workerId: id, leaseTtlSeconds: 86_400 });
      for (let i = 0; i < 20; i++) {
        const worker = i % 2 === 0 ? 1n : 2n;
        const prompt = tokens(400, 10_000 * (i + 1));
        await r.client.findBestWorker({ tokenIds: prompt, requestId: `r${i}`, allowedWorkers: [{ workerId: worker }] });
        clock.t += prompt.length / TRUE_RATE.get(worker)!;
        await r.client.markPrefillCompleted(`r${i}`);
        await r.client.free(`r${i}`);
      }
      // 800 tokens queued on the fast worker: (800 + 400) / 20 = 60 ms < 400 / 5 = 80 ms on the idle slow one.
      await r.client.findBestWorker({ tokenIds: tokens(800, 555_555), requestId: "queued", allowedWorkers: [{ workerId: 1n }] });
      const d = await r.client.findBestWorker({ tokenIds: tokens(400, 777_777) });
      assert.equal(d.worker!.workerId, 1n);
    } finally {
      await r.close();
    }
  });
});
