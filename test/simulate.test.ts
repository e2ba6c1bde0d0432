// The trace-replay simulator: real KvRouter + PrefixIndex fed by simulated
// engines' KV events, compared with the other policies.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import yargs from "yargs";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { runSimulate, simulateOptions } from "../src/cli/simulateCommand.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { type EngineParams, SimEngine } from "../src/simulate/engine.js";
import { KvPolicy } from "../src/simulate/policies.js";
import { resultJson } from "../src/simulate/report.js";
import { PolicyFleet, type SimOptions, type SimResult, prepareRequest, simulate } from "../src/simulate/run.js";
import { conversationTrace, sharedPrefixTrace } from "../src/simulate/synthetic.js";
import { TraceError, expandTokens, parseTrace } from "../src/simulate/trace.js";
import { Recorder } from "./support/simRecorder.js";

const dir = mkdtempSync(join(tmpdir(), "kvr-sim-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const ENGINE: EngineParams = { blockSize: 64, kvBlocks: 320, prefillMsPerToken: 0.05, decodeMsPerStep: 8, decodeMsPerToken: 0.5, maxBatch: 32 };

function options(over: Partial<SimOptions> = {}): SimOptions {
  return {
    workers: 4,
    engine: ENGINE,
    router: { ...DEFAULT_ROUTER_CONFIG, blockSize: ENGINE.blockSize },
    policies: ["kv", "kv-approx", "round-robin", "random", "least-loaded", "oracle-prefix"],
    seed: 11,
    speedup: 1,
    ...over,
  };
}

// 16 system prompts of 4 trace blocks (32 router blocks) shared by 400
// requests; a worker's 320-block cache keeps only a few of them next to the
// requests it runs, so where a request lands decides its hit.
const SHARED_TEXT = sharedPrefixTrace({ requests: 400, groups: 16, prefixBlocks: 4, suffixBlocks: 2, gapMs: 40, outputLength: 40, seed: 3 });
const shared = parseTrace(SHARED_TEXT, "shared");
const sharedPath = join(dir, "shared.jsonl");
writeFileSync(sharedPath, SHARED_TEXT);

function byPolicy(result: SimResult) {
  return new Map(result.policies.map((p) => [p.result.policy, p]));
}

describe("trace expansion", () => {
  test("equal hash ids give equal tokens, different ids different tokens, cut at input_length", () => {
    const [a, b] = parseTrace(
      [
        JSON.stringify({ timestamp: 5, input_length: 1000, output_length: 1, hash_ids: [7, 8] }),
        JSON.stringify({ timestamp: 1, input_length: 700, output_length: 1, hash_ids: [7, 9] }),
      ].join("\n"),
    );
    // Sorted by arrival: the second line arrived first.
    assert.equal(a.inputLength, 700);
    const ta = expandTokens(a);
    const tb = expandTokens(b);
    assert.equal(ta.length, 700);
    assert.equal(tb.length, 1000);
    assert.deepEqual(ta.subarray(0, 512), tb.subarray(0, 512));
    const diffs = ta.subarray(512).filter((t, i) => t !== tb[512 + i]).length;
    assert.ok(diffs > 180, `blocks of different ids must differ (only ${diffs} of 188 tokens did)`);
    // Tokens inside one block differ from each other (no constant filler).
    assert.ok(new Set(ta.subarray(0, 512)).size > 500);
  });

  test("a bad line is rejected with its line number and field", () => {
    const good = JSON.stringify({ timestamp: 0, input_length: 10, output_length: 1, hash_ids: [1] });
    assert.throws(() => parseTrace(`${good}\n{"timestamp": 1, "input_length": 10, "output_length": 1}\n`, "t.jsonl"), (e: unknown) => {
      assert.ok(e instanceof TraceError);
      assert.match((e as Error).message, /^t\.jsonl:2: "hash_ids"/);
      return true;
    });
    assert.throws(() => parseTrace(`${good}\nnot json`, "t.jsonl"), /t\.jsonl:2: not JSON/);
    assert.throws(
      () => parseTrace(JSON.stringify({ timestamp: 0, input_length: 600, output_length: 1, hash_ids: [1] })),
      /1 hash ids of 512 tokens cover only 512 of input_length 600/,
    );
  });
});

describe("simulate (virtual clock)", () => {
  test("same seed gives the same JSON; another seed changes the random choices", () => {
    const trace = shared.slice(0, 200);
    const hot = options({ router: { ...DEFAULT_ROUTER_CONFIG, blockSize: 64, temperature: 0.5 } });
    const first = resultJson(simulate(trace, hot));
    assert.equal(resultJson(simulate(trace, hot)), first);
    const other = JSON.parse(resultJson(simulate(trace, { ...hot, seed: 12 })));
    const base = JSON.parse(first);
    assert.notDeepEqual(other.policies.random.worker_requests, base.policies.random.worker_requests);
    assert.notDeepEqual(other.policies.kv.worker_requests, base.policies.kv.worker_requests);
  });

  test("oracle-prefix bounds every policy's hit, request by request (shared prefixes and conversations)", () => {
    // Shaped like Mooncake's conversation trace (common first block, later turns repeat earlier ones), made here.
    const conversations = parseTrace(
      conversationTrace({ conversations: 60, turns: 5, firstTurnBlocks: 8, blocksPerTurn: 4, startGapMs: 1700, turnGapMs: 20_000, outputLength: 300, seed: 7 }),
      "conversations",
    );
    for (const [name, trace, opts, floor] of [
      ["shared", shared, options(), 0.2],
      ["conversations", conversations, options({ workers: 8, engine: { ...ENGINE, kvBlocks: 4096 } }), 0.3],
    ] as const) {
      const result = simulate(trace, opts);
      const runs = byPolicy(result);
      const oracleHits = new Map(runs.get("oracle-prefix")!.records.map((r) => [r.request.index, r.hitBlocks]));
      assert.equal(oracleHits.size, trace.length, `${name}: the oracle completed every request`);
      for (const run of result.policies) {
        assert.ok(run.result.hit_rate <= runs.get("oracle-prefix")!.result.hit_rate, `${name}: ${run.result.policy}`);
        for (const r of run.records) {
          assert.ok(r.hitBlocks <= oracleHits.get(r.request.index)!, `${name}: ${run.result.policy} request ${r.request.index}`);
        }
      }
      // Not vacuous: the trace shares prefixes and kv finds some of them.
      assert.ok(runs.get("kv")!.result.hit_rate > floor, `${name}: kv hit rate ${runs.get("kv")!.result.hit_rate}`);
    }
  });

  test("kv beats round-robin's hit rate on shared prefixes; so does approximate mode", () => {
    const runs = byPolicy(simulate(shared, options()));
    const kv = runs.get("kv")!.result;
    const approx = runs.get("kv-approx")!.result;
    const rr = runs.get("round-robin")!.result;
    assert.ok(kv.hit_rate > rr.hit_rate * 1.2, `kv ${kv.hit_rate} vs round-robin ${rr.hit_rate}`);
    assert.ok(approx.hit_rate > rr.hit_rate * 1.2, `kv-approx ${approx.hit_rate} vs round-robin ${rr.hit_rate}`);
    assert.equal(kv.extras.rejected_events, 0, "every engine event applies to the router's index");
    assert.ok(kv.extras.predicted_hit_blocks > 0);
    for (const p of runs.values()) assert.equal(p.result.requests, shared.length);
  });

  test("the router's index mirrors the engines' caches through their events", () => {
    const opts = options();
    const clock = { t: 0, now: () => clock.t };
    const policy = new KvPolicy("kv", opts.router, opts.workers, 1, clock);
    // Small caches force evictions, so removed events are exercised too.
    const fleet = new PolicyFleet(policy, opts.workers, { ...ENGINE, kvBlocks: 300 });
    for (const tr of shared.slice(0, 150)) {
      const req = prepareRequest(tr, ENGINE.blockSize, 1, `r${tr.index}`);
      clock.t = req.arrivalMs;
      fleet.advanceTo(req.arrivalMs);
      fleet.dispatch(req, req.arrivalMs);
    }
    fleet.advanceTo(Infinity);
    // The router's dump lists, per worker, exactly the blocks that engine caches.
    const indexed = new Map<bigint, Set<bigint>>();
    for (const ev of policy.router.index.dump()) {
      if (ev.kind !== "stored") continue;
      const set = indexed.get(ev.workerId) ?? new Set();
      for (const b of ev.blocks) set.add(b.externalHash);
      indexed.set(ev.workerId, set);
    }
    let evicted = false;
    for (const e of fleet.engines) {
      const held = e.cachedBlockIds();
      assert.ok(held.length > 0);
      assert.deepEqual(indexed.get(e.workerId), new Set(held), `worker ${e.workerId}`);
      evicted ||= e.cachedBlocks >= 250;
    }
    assert.ok(evicted, "some engine filled its cache");
    assert.equal(policy.extras().rejected_events, 0);
    assert.equal(policy.router.active.size, 0, "every request was freed");
  });
});

describe("simulated engine", () => {
  const params: EngineParams = { blockSize: 64, kvBlocks: 20, prefillMsPerToken: 0.5, decodeMsPerStep: 10, decodeMsPerToken: 2, maxBatch: 8 };
  const req = (index: number, ids: number[], input: number, output: number, at: number) =>
    prepareRequest({ index, timestampMs: at, inputLength: input, outputLength: output, hashIds: ids }, 64, 1, `q${index}`);

  test("prefill pays for uncached tokens only, decode steps slow with the batch, events describe the cache", () => {
    const rec = new Recorder();
    const engine = new SimEngine(0, params, rec);
    const a = req(0, [1, 2], 1000, 5, 0); // 15 full blocks + 40 tokens
    engine.enqueue(a, 0);
    engine.advanceTo(Infinity);
    const [ra] = rec.done;
    assert.equal(ra.hitBlocks, 0);
    assert.equal(ra.firstTokenMs, 1000 * 0.5);
    // 4 more tokens, one request in the batch: steps of 10 + 2 ms.
    assert.equal(ra.finishMs, 500 + 4 * 12);
    assert.deepEqual(rec.events.map((e) => e.kind), ["stored"]);
    const stored = rec.events[0] as Extract<IndexEvent, { kind: "stored" }>;
    assert.equal(stored.parentHash, undefined);
    assert.deepEqual(stored.blocks.map((b) => b.localHash), a.local);

    // Same first 512 tokens, then different: 8 blocks reused, the rest computed.
    const b = req(1, [1, 3], 1000, 2, 1000);
    engine.enqueue(b, 1000);
    engine.advanceTo(Infinity);
    const rb = rec.done[1];
    assert.equal(rb.hitBlocks, 8);
    assert.equal(rb.firstTokenMs - rb.queuedMs, (1000 - 8 * 64) * 0.5);
    const second = rec.events.find((e, i) => i > 0 && e.kind === "stored") as Extract<IndexEvent, { kind: "stored" }>;
    assert.equal(second.parentHash, stored.blocks[7].externalHash, "the new blocks continue the reused prefix");
    assert.equal(second.blocks.length, 7);
    // 20 blocks: a left 15 cached; b needs 7 new + 1 for its tail and output, so 3 are evicted.
    const removed = rec.events.filter((e) => e.kind === "removed") as Extract<IndexEvent, { kind: "removed" }>[];
    const evictedIds = removed.flatMap((e) => e.blockHashes);
    assert.equal(evictedIds.length, 3);
    assert.ok(evictedIds.includes(stored.blocks[14].externalHash), "the least recently used tail goes first");
    assert.ok(!evictedIds.includes(stored.blocks[0].externalHash), "the shared prefix stays");
    assert.deepEqual(
      rec.events.map((e) => e.eventId),
      rec.events.map((_, i) => BigInt(i + 1)),
      "event ids count up from 1",
    );
  });

  test("a prompt larger than the whole cache is rejected, not stuck", () => {
    const rec = new Recorder();
    const engine = new SimEngine(0, params, rec);
    engine.enqueue(req(0, [1, 2, 3, 4, 5, 6], 3000, 2, 0), 0);
    engine.enqueue(req(1, [9], 100, 2, 0), 0);
    engine.advanceTo(Infinity);
    assert.equal(rec.rejected.length, 1);
    assert.match(rec.rejected[0], /needs 47 KV blocks; the engine holds 20/);
    assert.equal(rec.done.length, 1);
    assert.ok(engine.idle);
  });
});

function parseArgs(args: string[]) {
  const y = yargs()
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    });
  return simulateOptions(y).parseSync(args);
}

describe("simulate command", () => {
  test("--no-kv-events runs the kv policy in approximate mode, exactly like kv-approx", async () => {
    const base = ["--trace", sharedPath, "--workers", "4", "--kv-blocks", "320", "--seed", "5", "--max-requests", "250"];
    const approx = await runSimulate(parseArgs([...base, "--policies", "kv-approx,round-robin"]));
    const noEvents = await runSimulate(parseArgs([...base, "--policies", "kv", "--no-kv-events"]));
    const events = await runSimulate(parseArgs([...base, "--policies", "kv"]));
    const a = approx.policies[0].result;
    const n = noEvents.policies[0].result;
    assert.deepEqual({ ...n, policy: "kv-approx" }, a);
    assert.equal((noEvents.config.router as { kv_events: boolean }).kv_events, false);
    assert.ok(a.hit_rate > approx.policies[1].result.hit_rate, "approximate mode still finds shared prefixes");
    assert.notDeepEqual(events.policies[0].result, n, "with events the router sees evictions");
  });

  test("each worker-selection policy runs by name; --router-worker-selection-policy reaches the kv policy", async () => {
    const base = ["--trace", sharedPath, "--workers", "4", "--kv-blocks", "320", "--seed", "5", "--max-requests", "250"];
    const named = await runSimulate(parseArgs([...base, "--policies", "dynamo-2026,dynamo-agentic,dynamo-two-tier-cost-fn,kv-least-loaded"]));
    const by = byPolicy(named);
    for (const p of by.values()) assert.equal(p.result.requests, 250, p.result.policy);
    // 4 of a request's 6 blocks are a shared prompt: the two-tier cache tier follows it, least-loaded does not look.
    assert.ok(
      by.get("dynamo-two-tier-cost-fn")!.result.hit_rate > by.get("kv-least-loaded")!.result.hit_rate,
      `two-tier ${by.get("dynamo-two-tier-cost-fn")!.result.hit_rate} vs least-loaded ${by.get("kv-least-loaded")!.result.hit_rate}`,
    );
    const flagged = await runSimulate(parseArgs([...base, "--policies", "kv", "--router-worker-selection-policy", "least-loaded"]));
    const again = await runSimulate(parseArgs([...base, "--policies", "kv-least-loaded"]));
    assert.deepEqual({ ...flagged.policies[0].result, policy: "kv-least-loaded" }, again.policies[0].result);
  });

  test("kv runs serve's default, kv-adaptive; kv-cost the cost policy kv-router, serve's default before", async () => {
    const base = ["--trace", sharedPath, "--workers", "4", "--kv-blocks", "320", "--seed", "5", "--max-requests", "250"];
    const plain = await runSimulate(parseArgs([...base, "--policies", "kv,kv-adaptive,kv-cost"]));
    const [kv, adaptive, cost] = plain.policies.map((p) => p.result);
    assert.deepEqual({ ...kv, policy: "kv-adaptive" }, adaptive);
    const named = await runSimulate(parseArgs([...base, "--policies", "kv", "--router-worker-selection-policy", "kv-router"]));
    assert.deepEqual({ ...named.policies[0].result, policy: "kv-cost" }, cost);
  });

  test("writes the JSON figures and a Markdown report with SVG charts", async () => {
    const out = join(dir, "report");
    const jsonPath = join(dir, "out.json");
    const result = await runSimulate(
      parseArgs(["--trace", sharedPath, "--workers", "4", "--kv-blocks", "320", "--max-requests", "120", "--json", jsonPath, "--report", out]),
    );
    const json = JSON.parse(readFileSync(jsonPath, "utf8"));
    assert.deepEqual(Object.keys(json.policies), ["kv", "round-robin", "random", "least-loaded", "oracle-prefix"]);
    for (const p of Object.values(json.policies) as Record<string, number>[]) {
      for (const key of ["hit_rate", "ttft_p50_ms", "ttft_p99_ms", "throughput_tokens_per_s", "load_cov", "requests"]) {
        assert.equal(typeof p[key], "number", key);
      }
      assert.equal(p.requests, 120);
      assert.ok(p.ttft_p99_ms >= p.ttft_p50_ms);
    }
    assert.equal(json.policies.kv.hit_rate, result.policies[0].result.hit_rate);
    const md = readFileSync(join(out, "report.md"), "utf8");
    for (const chart of ["ttft-cdf.svg", "hit-rate.svg", "load-over-time.svg", "ttft-percentiles.svg"]) {
      assert.ok(md.includes(`](${chart})`), chart);
      const svg = readFileSync(join(out, chart), "utf8");
      assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      assert.ok(svg.includes("oracle-prefix"), `${chart} names the policies`);
    }
    assert.ok(md.includes("| kv |"));
  });

  test("bad flags are refused with a precise message", () => {
    assert.throws(() => parseArgs(["--trace", sharedPath, "--policies", "kv,nope"]), /unknown policy "nope"/);
    assert.throws(() => parseArgs(["--trace", sharedPath, "--kv-blocks", "0"]), /--kv-blocks must be an integer >= 1, got 0/);
    assert.throws(() => parseArgs(["--trace", sharedPath, "--speedup", "-2"]), /--speedup must be a number > 0/);
  });

  test("the CLI runs `simulate` and reports a bad trace precisely", () => {
    const cli = ["--import", "tsx", "src/cli/main.ts", "simulate"];
    const ok = spawnSync(process.execPath, [...cli, "--trace", sharedPath, "--max-requests", "50", "--workers", "2", "--policies", "kv,round-robin"], {
      encoding: "utf8",
    });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /\| kv \| [\d.]+% \|/);
    const bad = join(dir, "bad.jsonl");
    writeFileSync(bad, '{"timestamp": 0, "input_length": -1, "output_length": 1, "hash_ids": [1]}\n');
    const res = spawnSync(process.execPath, [...cli, "--trace", bad], { encoding: "utf8" });
    assert.equal(res.status, 2);
    assert.match(res.stderr, /bad\.jsonl:1: "input_length" must be an integer >= 1/);
  });
});
