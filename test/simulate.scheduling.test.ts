// The simulator's newer parts: chunked-prefill engine, heterogeneous workers,
// bursts, the router's queue on virtual time, and the dynamo-2026 and
// sglang-cache-aware policies. Times are virtual: exact and deterministic.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { type EngineParams, SimEngine, type SimRequest } from "../src/simulate/engine.js";
import { SglangCacheAwarePolicy } from "../src/simulate/policies.js";
import { resultJson } from "../src/simulate/report.js";
import { type SimOptions, prepareRequest, simulate } from "../src/simulate/run.js";
import { agenticTrace, DEFAULT_AGENTIC, sharedPrefixTrace } from "../src/simulate/synthetic.js";
import { parseTrace } from "../src/simulate/trace.js";
import { Recorder } from "./support/simRecorder.js";

const req = (index: number, ids: number[], input: number, output: number, at: number): SimRequest =>
  prepareRequest({ index, timestampMs: at, inputLength: input, outputLength: output, hashIds: ids }, 64, 1, `q${index}`);

describe("chunked-prefill engine", () => {
  const params: EngineParams = {
    blockSize: 64,
    kvBlocks: 1000,
    prefillMsPerToken: 0.01,
    decodeMsPerStep: 10,
    decodeMsPerToken: 1,
    maxBatch: 8,
    maxNumBatchedTokens: 256,
    kvReadMsPerBlock: 0.5,
  };

  test("a prompt is computed in budget-sized chunks, one per step, and decode reads the growing context", () => {
    const rec = new Recorder();
    const engine = new SimEngine(0, params, rec);
    engine.enqueue(req(0, [1, 2], 1000, 3, 0), 0);
    engine.advanceTo(Infinity);
    const [r] = rec.done;
    // 1000 tokens in chunks of 256: four steps of 10 + 256*0.01 ms plus the
    // KV read of the context so far (256, 512, 768, then 1000 tokens).
    const read = (tokens: number) => 0.5 * (tokens / 64);
    const prefillSteps = [256, 512, 768, 1024].map((ctx) => 10 + 0.01 * 256 + read(ctx));
    const expectedFirst = prefillSteps.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(r.firstTokenMs - expectedFirst) < 1e-6, `${r.firstTokenMs} vs ${expectedFirst}`);
    // Two decode steps, one running request with a ~1000-token context.
    assert.ok(Math.abs(r.finishMs - r.firstTokenMs - 2 * (10 + 1 + read(1000))) < 0.05);
  });

  test("a slower worker (speed 0.5) takes exactly twice as long", () => {
    const times = [1, 0.5].map((speed) => {
      const rec = new Recorder();
      const engine = new SimEngine(0, { ...params, speed }, rec);
      engine.enqueue(req(0, [1, 2], 1000, 3, 0), 0);
      engine.advanceTo(Infinity);
      return rec.done[0].finishMs;
    });
    assert.ok(Math.abs(times[1] - 2 * times[0]) < 1e-6);
  });

  test("decode keeps running while another request prefills (no prefill-first stall)", () => {
    const rec = new Recorder();
    const engine = new SimEngine(0, params, rec);
    engine.enqueue(req(0, [1], 128, 50, 0), 0);
    engine.enqueue(req(1, [5, 6, 7, 8], 2000, 2, 30), 30);
    engine.advanceTo(Infinity);
    const long = rec.done.find((r) => r.request.index === 0)!;
    const big = rec.done.find((r) => r.request.index === 1)!;
    assert.ok(big.firstTokenMs < long.finishMs, "the big prefill completes while the first request is still decoding");
    assert.equal(rec.done.length, 2);
  });
});

describe("sglang-cache-aware", () => {
  test("follows the best prefix match above 30%, else the smallest tree; balances when loads differ by more than 64", () => {
    const policy = new SglangCacheAwarePolicy(2, 64);
    const engines = [0, 1].map((i) => new SimEngine(i, { blockSize: 64, kvBlocks: 1e6, prefillMsPerToken: 1, decodeMsPerStep: 1, decodeMsPerToken: 0, maxBatch: 1 }, new Recorder()));
    const a = req(0, [1, 2, 3, 4], 2048, 1, 0);
    const first = policy.choose(a, engines).worker;
    // Same prefix (3 of 4 trace blocks): match 75% -> same worker.
    assert.equal(policy.choose(req(1, [1, 2, 3, 9], 2048, 1, 0), engines).worker, first);
    // Unrelated prompt: no match -> the smaller tree (the other worker).
    assert.equal(policy.choose(req(2, [20, 21], 1024, 1, 0), engines).worker, 1 - first);
    // Load the first worker with 70 queued requests: imbalanced -> least loaded, despite the match.
    for (let i = 0; i < 70; i++) engines[first].enqueue(req(100 + i, [50 + i], 64, 1, 0), 0);
    assert.equal(policy.choose(req(3, [1, 2, 3, 4], 2048, 1, 0), engines).worker, 1 - first);
  });
});

function options(over: Partial<SimOptions> = {}): SimOptions {
  const engine: EngineParams = {
    blockSize: 64,
    kvBlocks: 4000,
    prefillMsPerToken: 0.05,
    decodeMsPerStep: 8,
    decodeMsPerToken: 0.5,
    maxBatch: 32,
    maxNumBatchedTokens: 2048,
    kvReadMsPerBlock: 0.002,
  };
  return {
    workers: 4,
    engine,
    router: { ...DEFAULT_ROUTER_CONFIG, blockSize: 64 },
    policies: ["kv", "dynamo-2026", "sglang-cache-aware", "least-loaded", "oracle-prefix"],
    seed: 5,
    speedup: 1,
    ...over,
  };
}

describe("simulate with the scheduling layer", () => {
  const agentic = parseTrace(agenticTrace({ ...DEFAULT_AGENTIC, sessions: 40, sessionGapMs: 300, seed: 2 }), "agentic");

  test("the agentic trace shares system prompts and grows per turn; runs are deterministic", () => {
    const sessions = new Set(agentic.map((r) => r.sessionId));
    assert.equal(sessions.size, 40);
    const s0 = agentic.filter((r) => r.sessionId === "s0");
    for (let i = 1; i < s0.length; i++) {
      assert.ok(s0[i].inputLength > s0[i - 1].inputLength);
      assert.deepEqual(s0[i].hashIds.slice(0, s0[i - 1].hashIds.length), s0[i - 1].hashIds, "a turn extends the previous prompt");
    }
    const opts = options({ workerSpeeds: [1, 1, 0.5], burst: 3 });
    assert.equal(resultJson(simulate(agentic, opts)), resultJson(simulate(agentic, opts)));
  });

  test("a burst past the queue threshold waits in the router, drains, and sheds past the client deadline", () => {
    const trace = parseTrace(sharedPrefixTrace({ requests: 240, groups: 4, prefixBlocks: 2, suffixBlocks: 6, gapMs: 5, outputLength: 30, seed: 1 }), "burst");
    const result = simulate(trace, {
      ...options({ policies: ["kv"], burst: 40 }),
      admission: { thresholds: { routerQueueThreshold: 1 }, queuePolicy: "fcfs", maxQueued: 1000 },
      clientDeadlineMs: 2_000,
    });
    const kv = result.policies[0].result;
    assert.ok(kv.router_queued > 0, "some requests waited in the router");
    assert.ok(kv.refused > 0, "the deadline shed some");
    assert.equal(kv.requests + kv.refused, trace.length, "every request either ran or was refused");
    assert.ok(kv.router_queue_wait_p99_ms <= 2_000 + 1000, "no completed request waited past its deadline (plus one upkeep tick)");
  });

  test("dynamo-2026 queues only far past saturation (threshold 16 x the step budget)", () => {
    const result = simulate(agentic, options({ policies: ["dynamo-2026"] }));
    assert.equal(result.policies[0].result.requests, agentic.length);
  });
});
