// Predict-on-route, session affinity and output-length hints over real gRPC.
// The router runs on a hand-driven clock, so TTLs pass when the test says so.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { RouterConfig } from "../src/router/types.js";
import { stored } from "./support/events.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;

async function withClockedRouter(config: Partial<RouterConfig>, body: (r: TestRouter, clock: { t: number }) => Promise<void>) {
  const clock = { t: 1_000_000 };
  const r = await startTestRouter({ blockSize: B, ...config }, { now: () => clock.t, tickMs: 20 });
  try {
    for (const id of [1n, 2n]) await r.client.registerWorker({ workerId: id, leaseTtlSeconds: 86_400 });
    await body(r, clock);
  } finally {
    await r.close();
  }
}

async function counter(r: TestRouter, name: string, labels: string): Promise<number> {
  const text = await r.server.metrics.registry.getSingleMetricAsString(name);
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.split(" ").pop());
}

describe("predict-on-route", () => {
  it("siblings follow a routed prefix before its event; the event confirms it at the TTL", async () => {
    await withClockedRouter({ predictedTtlMs: 5_000 }, async (r, clock) => {
      const prefix = tokens(32, 0);
      const first = await r.client.findBestWorker({ tokenIds: prefix, requestId: "a" });
      const sibling = await r.client.findBestWorker({ tokenIds: [...prefix, ...tokens(4, 900)], requestId: "b" });
      assert.equal(sibling.worker!.workerId, first.worker!.workerId, "the sibling lands with its prefix");
      assert.equal(sibling.overlapBlocks, 8);
      assert.equal(sibling.predictedBlocks, 8, "all of it predicted: no event has arrived");
      // The worker's stored events arrive (prefix, then the sibling's last block), then the TTL passes.
      const w = Number(first.worker!.workerId);
      await r.client.sendEvents([stored(w, 1, prefix, B, 100n), stored(w, 2, tokens(4, 900), B, 200n, { parent: 107n })]);
      clock.t += 5_001;
      await waitFor(async () => (await counter(r, "kvrouter_predicted_routes_total", 'outcome="confirmed"')) === 2, "both predictions confirmed");
      assert.equal(await counter(r, "kvrouter_predicted_routes_total", 'outcome="wrong"'), 0);
      for (const id of ["a", "b"]) await r.client.free(id);
      const third = await r.client.findBestWorker({ tokenIds: [...prefix, ...tokens(4, 950)] });
      assert.equal(third.overlapBlocks, 8);
      assert.equal(third.predictedBlocks, 0, "now known from the event, not predicted");
    });
  });

  it("a prediction no event confirms expires, is counted wrong, and stops attracting siblings", async () => {
    await withClockedRouter({ predictedTtlMs: 5_000 }, async (r, clock) => {
      const prefix = tokens(32, 0);
      await r.client.findBestWorker({ tokenIds: prefix, requestId: "a" });
      await r.client.free("a");
      clock.t += 5_001;
      await waitFor(async () => (await counter(r, "kvrouter_predicted_routes_total", 'outcome="wrong"')) === 1, "prediction expired wrong");
      const sibling = await r.client.findBestWorker({ tokenIds: [...prefix, ...tokens(4, 900)] });
      assert.equal(sibling.overlapBlocks, 0);
      assert.equal(sibling.predictedBlocks, 0);
    });
  });

  it("a pure query (no request_id, no token needed) leaves no prediction behind", async () => {
    await withClockedRouter({ predictedTtlMs: 5_000 }, async (r) => {
      const prefix = tokens(32, 0);
      await r.client.findBestWorker({ tokenIds: prefix });
      const sibling = await r.client.findBestWorker({ tokenIds: [...prefix, ...tokens(4, 900)], requestId: "b" });
      assert.equal(sibling.predictedBlocks, 0);
      assert.equal(sibling.overlapBlocks, 0);
    });
  });

  it("is off in the embedding API's DEFAULT_ROUTER_CONFIG (the CLI's default is on: src/scheduler/defaults.ts)", async () => {
    await withClockedRouter({}, async (r) => {
      const prefix = tokens(32, 0);
      await r.client.findBestWorker({ tokenIds: prefix, requestId: "a" });
      const sibling = await r.client.findBestWorker({ tokenIds: [...prefix, ...tokens(4, 900)] });
      assert.equal(sibling.overlapBlocks, 0);
    });
  });
});

describe("session affinity", () => {
  // Turn 1 (4 blocks) runs on a worker; turn 2 is a different prompt, so the
  // idle worker is cheaper by exactly the 4 decode blocks turn 1 holds.
  async function secondTurn(slack: number) {
    let result: { first: bigint; second: bigint; costGap: number } | undefined;
    await withClockedRouter({ sessionAffinityTtlMs: 60_000, sessionAffinitySlack: slack }, async (r) => {
      const t1 = await r.client.findBestWorker({ tokenIds: tokens(16, 0), requestId: "t1", sessionId: "chat-1" });
      await r.client.markPrefillCompleted("t1");
      const t2 = await r.client.findBestWorker({ tokenIds: tokens(16, 500), requestId: "t2", sessionId: "chat-1", explain: true });
      const cost = (w: bigint) => t2.scores.find((s) => s.worker!.workerId === w)!.logit;
      const other = t1.worker!.workerId === 1n ? 2n : 1n;
      result = { first: t1.worker!.workerId, second: t2.worker!.workerId, costGap: cost(t1.worker!.workerId) - cost(other) };
    });
    return result!;
  }

  it("keeps a session on its worker while the cost gap is within the slack", async () => {
    const { first, second, costGap } = await secondTurn(5);
    assert.equal(costGap, 4);
    assert.equal(second, first);
  });

  it("moves the session when the gap exceeds the slack", async () => {
    const { first, second, costGap } = await secondTurn(3);
    assert.equal(costGap, 4);
    assert.notEqual(second, first);
  });

  it("expected_output_tokens grows the chosen worker's projected decode load", async () => {
    await withClockedRouter({}, async (r) => {
      const a = await r.client.findBestWorker({ tokenIds: tokens(16, 0), requestId: "long", expectedOutputTokens: 400n });
      await r.client.markPrefillCompleted("long");
      const probe = await r.client.findBestWorker({ tokenIds: tokens(16, 900), explain: true });
      const onA = probe.scores.find((s) => s.worker!.workerId === a.worker!.workerId)!;
      const other = probe.scores.find((s) => s.worker!.workerId !== a.worker!.workerId)!;
      assert.equal(onA.decodeBlocks - other.decodeBlocks, 4n + 100n, "4 prompt blocks + 400/4 output blocks");
      assert.notEqual(probe.worker!.workerId, a.worker!.workerId);
    });
  });
});
