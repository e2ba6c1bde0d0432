// Trace families, the measured capacity and the policy-comparison harness,
// on small synthetic traces (tests never read the recorded Mooncake trace).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { KNEE_FACTOR, measureCapacity } from "../src/simulate/capacity.js";
import { aggregate, runComparison, seedVerdicts, verdicts } from "../src/simulate/compare.js";
import { comparisonMarkdown } from "../src/simulate/compareReport.js";
import type { EngineParams } from "../src/simulate/engine.js";
import { chatTrace, DEFAULT_CHAT, DEFAULT_RAG, familyTrace, longAgenticTrace, mooncakeWindowStart, ragTrace, traceWindow } from "../src/simulate/families.js";
import type { SimOptions } from "../src/simulate/run.js";

const ENGINE: EngineParams = {
  blockSize: 64,
  kvBlocks: 4096,
  prefillMsPerToken: 0.1,
  decodeMsPerStep: 10,
  decodeMsPerToken: 1,
  maxBatch: 32,
  maxNumBatchedTokens: 2048,
  kvReadMsPerBlock: 0.002,
};
const BASE: SimOptions = { workers: 2, engine: ENGINE, router: { ...DEFAULT_ROUTER_CONFIG, blockSize: 64 }, policies: [], seed: 1, speedup: 1 };

/** Requests by session (Node 20 has no Map.groupBy). */
function bySession(trace: ReturnType<typeof familyTrace>): Map<string, ReturnType<typeof familyTrace>> {
  const out = new Map<string, ReturnType<typeof familyTrace>>();
  for (const r of trace) out.set(r.sessionId!, [...(out.get(r.sessionId!) ?? []), r]);
  return out;
}

describe("trace families", () => {
  test("each generator is deterministic per seed and differs across seeds", () => {
    for (const make of [(s: number) => ragTrace({ ...DEFAULT_RAG, requests: 200, seed: s }), (s: number) => chatTrace({ ...DEFAULT_CHAT, sessions: 60, seed: s })]) {
      assert.deepEqual(make(4), make(4));
      assert.notDeepEqual(make(4), make(5));
    }
  });

  test("rag: every prompt opens with the shared instruction block then a document; popular documents open many prompts", () => {
    const trace = ragTrace({ ...DEFAULT_RAG, requests: 400, seed: 2 });
    assert.equal(trace.length, 400);
    const openers = new Map<number, number>();
    for (const r of trace) {
      assert.equal(r.hashIds[0], 0);
      openers.set(r.hashIds[1], (openers.get(r.hashIds[1]) ?? 0) + 1);
      assert.ok(r.inputLength > (r.hashIds.length - 1) * 512 && r.inputLength <= r.hashIds.length * 512, "the question is under one block");
    }
    const top = Math.max(...openers.values());
    assert.ok(top > 400 / DEFAULT_RAG.documents * 5, `the most popular document opens ${top} prompts`);
    // Bursty: the busiest 10 s hold far more than the mean 10 s.
    const counts = new Map<number, number>();
    for (const r of trace) counts.set(Math.floor(r.timestampMs / 10_000), (counts.get(Math.floor(r.timestampMs / 10_000)) ?? 0) + 1);
    const mean = trace.length / (Math.floor(trace.at(-1)!.timestampMs / 10_000) + 1);
    assert.ok(Math.max(...counts.values()) > 2 * mean, "bursts");
  });

  test("chat: short sessions whose turns re-send the conversation; long agentic sessions run 20-40 turns", () => {
    const chat = chatTrace({ ...DEFAULT_CHAT, sessions: 80, seed: 3 });
    for (const turns of bySession(chat).values()) {
      assert.ok(turns.length >= 1 && turns.length <= 4);
      for (let i = 1; i < turns.length; i++) assert.deepEqual(turns[i].hashIds.slice(0, turns[i - 1].hashIds.length), turns[i - 1].hashIds);
      assert.ok(turns.at(-1)!.inputLength < 4096);
    }
    const long = bySession(longAgenticTrace(1, 4));
    assert.equal(long.size, 4);
    for (const turns of long.values()) assert.ok(turns.length >= 20 && turns.length <= 40);
  });

  test("a recorded trace's window is rebased to start at 0", () => {
    const trace = familyTrace("agentic", 1).slice(0, 50);
    const w = traceWindow(trace, 20, 10);
    assert.equal(w.length, 10);
    assert.equal(w[0].timestampMs, 0);
    assert.deepEqual(w[3].hashIds, trace[23].hashIds);
    // Mooncake's windows: 0-3 every 3,500 requests; the held-out 4-6 in the gaps, sharing no request with 1-3.
    const windows = [1, 2, 3, 4, 5, 6].map((s) => [mooncakeWindowStart(s), mooncakeWindowStart(s) + 1500]);
    assert.deepEqual(windows.slice(3), [[1750, 3250], [5250, 6750], [8750, 10250]]);
    for (const [a, b] of windows.slice(3)) for (const [c, d] of windows.slice(0, 3)) assert.ok(b <= c || d <= a, `${a}-${b} overlaps ${c}-${d}`);
    assert.throws(() => familyTrace("mooncake", 0), /needs the recorded trace/);
  });
});

describe("capacity and the comparison", () => {
  const trace = ragTrace({ ...DEFAULT_RAG, requests: 150, seed: 1 });

  test("capacity: the reference's mean TTFT reaches the knee factor there, not at half of it", () => {
    const c = measureCapacity(trace, BASE);
    assert.ok(c.speedup > c.lightSpeedup);
    const near = c.probes.reduce((b, p) => (Math.abs(p.speedup - c.speedup) < Math.abs(b.speedup - c.speedup) ? p : b));
    assert.ok(near.ttftMeanMs > 0.5 * KNEE_FACTOR * c.lightTtftMs && near.ttftMeanMs < 2 * KNEE_FACTOR * c.lightTtftMs, JSON.stringify(near));
    const half = c.probes.filter((p) => p.speedup <= c.speedup / 2);
    assert.ok(half.every((p) => p.ttftMeanMs < KNEE_FACTOR * c.lightTtftMs), "below half the capacity the fleet is under the knee");
  });

  test("every policy at every load and seed; aggregates, verdicts and the table", () => {
    const capacity = { reference: "dynamo-2026" as const, lightSpeedup: 0.1, lightTtftMs: 1, speedup: 1, probes: [] };
    const rows = runComparison(
      { families: ["rag"], seeds: [1, 2], loads: [0.5, 1], policies: ["dynamo-2026", "kv-least-loaded", "kv-adaptive"], base: BASE },
      (_f, seed) => ragTrace({ ...DEFAULT_RAG, requests: 60, seed }),
      () => capacity,
    );
    assert.equal(rows.length, 2 * 2 * 3);
    const aggs = aggregate(rows);
    assert.equal(aggs.length, 2 * 3);
    assert.ok(aggs.every((a) => a.seeds === 2));
    const v = verdicts(aggs, "kv-adaptive", ["dynamo-2026", "kv-least-loaded"]);
    assert.deepEqual(v.map((x) => x.load).sort(), [0.5, 1]);
    const single = seedVerdicts(rows, "kv-adaptive", ["dynamo-2026", "kv-least-loaded"]);
    assert.equal(single.length, 4, "one verdict per (seed, load)");
    for (const x of single) {
      const cell = rows.filter((r) => r.seed === x.seed && r.load === x.load);
      const best = Math.min(...cell.filter((r) => r.policy !== "kv-adaptive").map((r) => r.ttft_mean_ms));
      assert.equal(x.meanRatio, Number((cell.find((r) => r.policy === "kv-adaptive")!.ttft_mean_ms / best).toFixed(3)));
    }
    const md = comparisonMarkdown(rows, { candidate: "kv-adaptive", baselines: ["dynamo-2026", "kv-least-loaded"], heldOut: ["rag"], capacities: { rag: capacity }, command: "cmd", charts: false });
    assert.match(md, /\| rag\* \| 50% \|/);
    assert.match(md, /\| family \| load \| dynamo-2026 \| kv-least-loaded \| kv-adaptive \|/);
    assert.match(md, /Single runs \(family, seed, load\) where kv-adaptive is worse than the best baseline in mean or p99: \d+ of 4\./);
  });
});
