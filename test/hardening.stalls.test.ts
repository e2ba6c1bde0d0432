// Hardening III (issue 24, §3): inputs that stalled the event loop for seconds,
// over the real transports. Each work is now linear or bounded before it
// starts. The tests assert answers, statuses and state, never timings: the
// measured stalls before and after are in docs/RELIABILITY.md.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;

/** Runs `n` calls, `width` at a time. */
async function inBatches(n: number, width: number, call: (i: number) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < n; i += width) await Promise.all(Array.from({ length: Math.min(width, n - i) }, (_, j) => call(i + j)));
}

describe("hardening: event-loop stalls", () => {
  it("1,000 leases expiring at once drop exactly their workers' requests; a renewed worker keeps its own", async () => {
    const clock = { t: 1_000_000 };
    // Predictions, session affinity and ttft rates keep per-worker state too: all of it is dropped.
    const r = await startTestRouter(
      { blockSize: B, predictedTtlMs: 600_000, sessionAffinityTtlMs: 600_000, routerCost: "ttft" },
      { now: () => clock.t, tickMs: 20 },
    );
    try {
      const expiring = 1_000;
      const perWorker = 4;
      // Worker 1 stays; workers 2..1001 include 10, 11, 100…: ids that start with 1's text.
      await r.client.registerWorker({ workerId: 1n, dpRanks: [0, 1], leaseTtlSeconds: 3_600 });
      await inBatches(expiring, 100, (i) => r.client.registerWorker({ workerId: BigInt(i + 2), leaseTtlSeconds: 1 }));
      const route = (id: string, workerId: bigint, dpRank: number, i: number) =>
        r.client.findBestWorker({ tokenIds: tokens(16, i * 16), requestId: id, sessionId: id, allowedWorkers: [{ workerId, dpRank }] });
      await inBatches(expiring * perWorker, 200, (i) => route(`gone-${i}`, BigInt((i % expiring) + 2), 0, i));
      await inBatches(6, 6, (i) => route(`kept-${i}`, 1n, i % 2, 100_000 + i));
      assert.equal(r.server.router.active.size, expiring * perWorker + 6);

      clock.t += 2_000; // every lease but worker 1's runs out at the next tick
      const listed = async () => (await r.client.listWorkers()).workers;
      const left = async () => (await listed()).map((w) => `${w.worker!.workerId}:${w.worker!.dpRank}`).sort().join();
      await waitFor(async () => (await left()) === "1:0,1:1", "the expired workers to be removed", 10_000);

      const loads = (await listed()).map((w) => Number(w.activeRequests));
      assert.deepEqual(loads, [3, 3], "worker 1 keeps all its requests, on both ranks");
      assert.equal(r.server.router.active.size, 6, "every request of the expired workers is dropped");
      assert.equal((await r.client.free("gone-0")).found, false);
      assert.equal((await r.client.free("gone-3999")).found, false);
      assert.equal((await r.client.free("kept-0")).found, true);
      const metrics = await r.server.metrics.registry.metrics();
      assert.match(metrics, /kvrouter_expired_workers_total 1000/);
      // The server keeps serving; a session bound to an expired worker starts afresh on worker 1.
      const next = await r.client.findBestWorker({ tokenIds: tokens(16, 7), requestId: "after", sessionId: "gone-5" });
      assert.equal(next.worker!.workerId, 1n);
    } finally {
      await r.close();
    }
  });
});
