// `simulate --live`: the simulated engines drive a real kv-router over gRPC
// (RegisterWorker, IngestKvEvents, FindBestWorker, MarkPrefillCompleted, Free).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { simulateLive } from "../src/simulate/live.js";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { simulate } from "../src/simulate/run.js";
import { sharedPrefixTrace } from "../src/simulate/synthetic.js";
import { parseTrace } from "../src/simulate/trace.js";
import { type TestRouter, startTestRouter } from "./support/router.js";

const BLOCK = 64;
let router: TestRouter;
before(async () => {
  router = await startTestRouter({ blockSize: BLOCK });
});
after(() => router.close());

// 120 requests over 6 s of trace time, replayed 4x faster: about 1.5 s of wall time.
const trace = parseTrace(sharedPrefixTrace({ requests: 120, groups: 6, prefixBlocks: 3, suffixBlocks: 1, gapMs: 50, outputLength: 8, seed: 9 }));
const engine = { blockSize: BLOCK, kvBlocks: 200, prefillMsPerToken: 0.002, decodeMsPerStep: 2, decodeMsPerToken: 0.1, maxBatch: 16 };

test("live mode routes every request through the router and feeds it the engines' events", async () => {
  const base = 500;
  const result = await simulateLive(trace, {
    address: router.address,
    workerIdBase: base,
    workers: 3,
    engine,
    router: { ...DEFAULT_ROUTER_CONFIG, blockSize: BLOCK },
    policies: ["kv"],
    seed: 1,
    speedup: 4,
  });
  const live = result.policies[0].result;
  assert.equal(live.policy, "kv-live");
  assert.equal(live.requests, trace.length);
  assert.equal(live.extras.routing_errors, 0);
  assert.equal(live.extras.rejected_events, 0, "the router accepted every engine event");
  // The router saw the stored events: it predicted overlaps, and they were real hits.
  assert.ok(live.extras.predicted_hit_blocks > 0);
  const rr = simulate(trace, {
    workers: 3,
    engine,
    router: { ...DEFAULT_ROUTER_CONFIG, blockSize: BLOCK },
    policies: ["round-robin"],
    seed: 1,
    speedup: 4,
  }).policies[0].result;
  assert.ok(live.hit_rate > rr.hit_rate, `live kv ${live.hit_rate} vs round-robin ${rr.hit_rate}`);
  // Every request was freed and the simulated workers deregistered.
  const workers = (await router.client.listWorkers()).workers;
  assert.equal(workers.filter((w) => Number(w.worker?.workerId) > base).length, 0);
  assert.equal(router.server.router.active.size, 0);
});

test("live mode against an unreachable router fails with a clear message", async () => {
  await assert.rejects(
    simulateLive(trace.slice(0, 3), {
      address: "127.0.0.1:1",
      workerIdBase: 0,
      workers: 1,
      engine,
      router: { ...DEFAULT_ROUTER_CONFIG, blockSize: BLOCK },
      policies: ["kv"],
      seed: 1,
      speedup: 1,
    }),
    /cannot register simulated workers with the kv-router at 127\.0\.0\.1:1/,
  );
});
