// Engine-native KV events over real ZeroMQ sockets: a Python publisher that
// sends what vLLM/SGLang send, a real kv-router subscribing to it, and the
// index and routing decisions checked against what the events imply.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { encode } from "@msgpack/msgpack";
import type { Registry } from "prom-client";
import { hashPrompt, localBlockHash } from "../src/hashing/blockHash.js";
import { ZmqEventSource } from "../src/sources/engineZmq/zmqEventSource.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";
import { Publisher, type PublisherFormat, brokenBatch, storedSpec } from "./zmq.support.js";

const B = 4;
const WORKER = 7n;
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))
    .reduce((sum, v) => sum + v.value, 0);
}

interface Rig {
  pub: Publisher;
  router: TestRouter;
  registry: Registry;
  source: ZmqEventSource;
  /** Waits until the subscriber has handled `n` messages in all (any outcome). */
  handled(n: number): Promise<void>;
  blocks(dpRank?: number): number;
}

async function rig(
  format: PublisherFormat,
  opts: { replay?: boolean; replayTopicFrame?: boolean; useReplay?: boolean; dpRank?: number; waitSubscribed?: boolean; eagle?: boolean; indexerShards?: number } = {},
): Promise<Rig> {
  const pub = await Publisher.start(format, { replay: opts.replay, replayTopicFrame: opts.replayTopicFrame });
  cleanups.push(() => pub.stop());
  const engine = format === "sglang" ? "sglang" : "vllm";
  const source = new ZmqEventSource({
    endpoints: [
      {
        workerId: WORKER,
        endpoint: pub.endpoint,
        replay: opts.useReplay === false ? undefined : pub.replay,
        dpRank: opts.dpRank ?? 0,
        engine,
        topic: "",
      },
    ],
    replayTimeoutMs: 3_000,
  });
  // ZMQ_TEST_SHARDS=2 runs the whole file with the index on shard threads (payloads decoded there).
  const shards = opts.indexerShards ?? (Number(process.env.ZMQ_TEST_SHARDS ?? 0) || undefined);
  const router = await startTestRouter({ blockSize: B, eagle: opts.eagle }, { eventSources: [source], indexerShards: shards });
  cleanups.push(() => router.close());
  const registry = router.server.metrics.registry;
  if (opts.waitSubscribed !== false) await pub.waitSubscribed();
  return {
    pub,
    router,
    registry,
    source,
    handled: (n) =>
      waitFor(async () => (await metric(registry, "kvrouter_zmq_frames_total")) >= n, `${n} ZeroMQ messages handled`),
    blocks: (dpRank = 0) => router.server.router.index.blockCounts().get(`${WORKER}:${dpRank}`) ?? 0,
  };
}

/** Overlap the router reports for worker WORKER (dp rank) on this prompt, over gRPC. */
async function overlap(r: Rig, prompt: number[], dpRank = 0, loraName = ""): Promise<number> {
  const res = await r.router.client.findBestWorker({ tokenIds: prompt, explain: true, loraName });
  const score = res.scores.find((s) => s.worker?.workerId === WORKER && s.worker?.dpRank === dpRank);
  return score?.overlapBlocks ?? 0;
}

const BIG = [(1n << 64n) - 1n, (1n << 64n) - 2n, (1n << 63n) + 5n];

describe("vLLM feed (map-encoded events, current vLLM)", () => {
  test("stores with large u64 hashes, dp ranks, removals and a clear give exactly the implied index", async () => {
    const r = await rig("vllm-map");
    const prompt = tokens(12, 100);
    // dp rank 0: three blocks with hashes at the top of the u64 range.
    await r.pub.batch([storedSpec(prompt, B, 0n, { hashes: BIG })], { dpRank: 0 });
    // dp rank 1: the first two blocks, hashes as 32-byte digests (vLLM without int hashes).
    const digest = (n: number) => ({ bytes: n.toString(16).padStart(64, "0") });
    await r.pub.batch([storedSpec(prompt.slice(0, 8), B, 0n, { hashes: [digest(1), digest(2)] })], { dpRank: 1 });
    await r.handled(2);
    assert.equal(r.blocks(0), 3);
    assert.equal(r.blocks(1), 2);
    assert.equal(await overlap(r, prompt, 0), 3);
    assert.equal(await overlap(r, prompt, 1), 2);
    const best = await r.router.client.findBestWorker({ tokenIds: prompt });
    assert.deepEqual([best.worker?.workerId, best.worker?.dpRank, best.overlapBlocks], [WORKER, 0, 3]);

    // A child of the last block, its parent named by its u64 hash.
    const more = tokens(4, 500);
    await r.pub.batch([storedSpec(more, B, 0n, { hashes: [12345n], parent_block_hash: BIG[2] })], { dpRank: 0 });
    await r.handled(3);
    assert.equal(await overlap(r, [...prompt, ...more], 0), 4);

    // Removing the middle block cuts lookups there; the bytes hash removes by its u64 reduction.
    await r.pub.batch([{ type: "BlockRemoved", block_hashes: [BIG[1]], medium: "GPU" }], { dpRank: 0 });
    await r.pub.batch([{ type: "BlockRemoved", block_hashes: [digest(2)], medium: "GPU" }], { dpRank: 1 });
    await r.handled(5);
    assert.equal(await overlap(r, prompt, 0), 1);
    assert.equal(await overlap(r, prompt, 1), 1);
    assert.equal(r.blocks(1), 1);

    // AllBlocksCleared drops the blocks of its batch's dp rank only (Dynamo scopes Cleared to the rank).
    await r.pub.batch([{ type: "AllBlocksCleared" }], { dpRank: 0 });
    await r.handled(6);
    assert.equal(r.blocks(0), 0);
    assert.equal(r.blocks(1), 1);
    await r.pub.batch([{ type: "AllBlocksCleared" }], { dpRank: 1 });
    await r.handled(7);
    assert.equal(r.blocks(1), 0);
    assert.equal(await metric(r.registry, "kvrouter_zmq_frames_total", { outcome: "applied" }), 7);
    assert.equal(await metric(r.registry, "kvrouter_kv_events_total", { outcome: "applied" }), 7);
  });

  test("with the index on 2 shard threads (batches queued, not waited for) a chain of 40 batches applies in order", async () => {
    const r = await rig("vllm-map", { indexerShards: 2 });
    const prompt = tokens(40 * B, 700);
    // Each batch stores the next block under the previous one: any reordering would orphan the rest.
    for (let i = 0; i < 40; i++) {
      await r.pub.batch([storedSpec(prompt.slice(i * B, (i + 1) * B), B, 0n, { hashes: [7000n + BigInt(i)], parent_block_hash: i === 0 ? null : 7000n + BigInt(i - 1) })]);
    }
    await r.handled(40);
    await waitFor(() => r.blocks() === 40, "40 blocks applied");
    assert.equal(await overlap(r, prompt), 40);
    await r.pub.batch([{ type: "AllBlocksCleared" }]);
    await waitFor(() => r.blocks() === 0, "cleared");
    assert.equal(await overlap(r, prompt), 0);
  });

  test("LoRA blocks hash with the adapter's seed; offload tiers are indexed per tier; other groups stay out", async () => {
    const r = await rig("vllm-map");
    const prompt = tokens(8, 300);
    await r.pub.batch([storedSpec(prompt, B, 10n, { lora_name: "adapter-a", lora_id: 1 })]);
    await r.pub.batch([storedSpec(tokens(8, 900), B, 20n, { medium: "CPU" })]);
    await r.pub.batch([storedSpec(tokens(8, 950), B, 30n, { group_idx: 1 })]);
    await r.pub.batch([storedSpec(tokens(8, 990), B, 40n, { lora_id: 3 })]); // an id but no name
    await r.pub.batch([storedSpec(tokens(8, 1100), B, 50n, { medium: "TAPE" })]); // no tier of Dynamo's
    await r.handled(5);
    assert.equal(await overlap(r, prompt, 0, "adapter-a"), 2);
    assert.equal(await overlap(r, prompt, 0, ""), 0);
    assert.equal(await overlap(r, tokens(8, 900)), 0, "a CPU block is no GPU hit...");
    const cpu = (await r.router.client.findBestWorker({ tokenIds: tokens(8, 900), explain: true })).scores[0];
    assert.equal(cpu.hostOverlapBlocks, 2, "...but counts on the host tier (vLLM medium CPU -> host_pinned)");
    assert.equal(await overlap(r, tokens(8, 950)), 0);
    assert.equal(r.blocks(), 2);
    assert.equal(await metric(r.registry, "kvrouter_zmq_events_total", { outcome: "unknown_medium" }), 1);
    assert.equal(await metric(r.registry, "kvrouter_zmq_events_total", { outcome: "other_group" }), 1);
    assert.equal(await metric(r.registry, "kvrouter_zmq_events_total", { outcome: "lora_id_without_name" }), 1);
  });

  test("hybrid models: with kv_cache_spec_kind only the main attention groups count, whatever their group_idx", async () => {
    const r = await rig("vllm-map");
    await r.pub.batch([
      storedSpec(tokens(8, 2000), B, 60n, { group_idx: 1, kv_cache_spec_kind: "full_attention" }),
      storedSpec(tokens(8, 2100), B, 70n, { group_idx: 0, kv_cache_spec_kind: "sliding_window" }),
      storedSpec(tokens(8, 2200), B, 80n, { group_idx: 2, kv_cache_spec_kind: "mla_attention" }),
      storedSpec(tokens(8, 2300), B, 90n, { group_idx: 0, kv_cache_spec_kind: "warp_attention" }),
    ]);
    await r.handled(1);
    assert.equal(await overlap(r, tokens(8, 2000)), 2, "full_attention in group 1 counts");
    assert.equal(await overlap(r, tokens(8, 2100)), 0, "sliding_window does not, even in group 0");
    assert.equal(await overlap(r, tokens(8, 2200)), 2, "mla_attention counts");
    assert.equal(await overlap(r, tokens(8, 2300)), 0);
    assert.equal(await metric(r.registry, "kvrouter_zmq_events_total", { outcome: "other_group" }), 1);
    assert.equal(await metric(r.registry, "kvrouter_zmq_events_total", { outcome: "unknown_spec_kind" }), 1);
  });

  test("Eagle token pairs are flattened and hashed in windows of block_size + 1 tokens, as Dynamo does", async () => {
    const r = await rig("vllm-map");
    const flat = tokens(2 * B + 1, 3000); // 2 blocks: windows [0, B+1) and [B, 2B+1)
    const pairs = flat.slice(0, 2 * B).map((t, i) => [t, flat[i + 1]]);
    await r.pub.batch([{ ...storedSpec(flat.slice(0, 2 * B), B, 100n), token_ids: pairs }]);
    await r.handled(1);
    const held = [...r.router.server.router.index.dump()].filter((e) => e.kind === "stored" && e.blocks[0].externalHash >= 100n);
    const locals = held.flatMap((e) => (e.kind === "stored" ? e.blocks.map((b) => b.localHash) : []));
    assert.deepEqual(locals, [localBlockHash(flat.slice(0, B + 1)), localBlockHash(flat.slice(B, 2 * B + 1))]);
  });

  test("with --eagle, requests hash in the same windows, so an Eagle worker's blocks match its prompts", async () => {
    const flat = tokens(2 * B + 1, 3100);
    const pairs = flat.slice(0, 2 * B).map((t, i) => [t, flat[i + 1]]);
    for (const eagle of [false, true]) {
      const r = await rig("vllm-map", { eagle });
      await r.pub.batch([{ ...storedSpec(flat.slice(0, 2 * B), B, 200n), token_ids: pairs }]);
      await r.handled(1);
      assert.equal(await overlap(r, flat), eagle ? 2 : 0, eagle ? "Eagle windows on both sides" : "plain request windows miss Eagle blocks");
    }
  });

  test("multimodal digests in extra_keys change the block's hash", async () => {
    const r = await rig("vllm-map");
    const prompt = tokens(8, 700);
    const mm = "ab".repeat(32);
    await r.pub.batch([storedSpec(prompt, B, 50n, { extra_keys: [null, [[mm, 0]]] })]);
    await r.handled(1);
    // The first block has no MM object and matches; the second does not match plain tokens.
    assert.equal(await overlap(r, prompt), 1);
    const dump = await r.router.client.dumpIndex();
    const second = dump.find((e) => e.data.case === "stored" && e.data.value.blocks[0].blockHash === 51n);
    assert.ok(second && second.data.case === "stored");
    const { localBlockHash } = await import("../src/hashing/blockHash.js");
    assert.equal(second.data.value.blocks[0].tokensHash, localBlockHash(prompt.slice(4), 1337n, [BigInt(`0x${mm.slice(0, 16)}`)]));
  });

  test("a block size that is not the router's is rejected and counted, and the feed goes on", async () => {
    const r = await rig("vllm-map");
    await r.pub.batch([storedSpec(tokens(32), 16, 1n)]);
    await r.pub.batch([{ ...storedSpec(tokens(8, 40), B, 5n), token_ids: tokens(7, 40) }]);
    await r.pub.batch([storedSpec(tokens(8), B, 9n)]);
    await r.handled(3);
    assert.equal(await metric(r.registry, "kvrouter_zmq_events_total", { outcome: "block_size_mismatch" }), 1);
    assert.equal(await metric(r.registry, "kvrouter_zmq_events_total", { outcome: "token_count_mismatch" }), 1);
    assert.equal(r.blocks(), 2);
    assert.equal(await overlap(r, tokens(8)), 2);
  });
});

describe("every encoding gives the same index", () => {
  for (const format of ["vllm-array", "vllm-map", "vllm-map-batch", "sglang"] as const) {
    test(format, async () => {
      const r = await rig(format);
      const prompt = tokens(12, 7);
      await r.pub.batch([storedSpec(prompt.slice(0, 8), B, 0n, { hashes: [BIG[0], -5n] })]);
      await r.pub.batch([
        storedSpec(prompt.slice(8), B, 0n, { hashes: [BIG[2]], parent_block_hash: -5n }),
        { type: "BlockRemoved", block_hashes: [BIG[0]], medium: "GPU" },
        storedSpec(prompt.slice(0, 4), B, 0n, { hashes: [77n] }),
      ]);
      // No dp rank in the batch (older SGLang): the endpoint's rank applies.
      await r.pub.batch([storedSpec(tokens(4, 5000), B, 88n)], { dpRank: null });
      await r.handled(3);
      // Block 0 now held under hash 77, blocks 1 and 2 under -5 (as u64) and BIG[2].
      assert.equal(await overlap(r, prompt), 3);
      assert.equal(r.blocks(), 4);
      // Our local hashes were computed from the token ids the engine sent.
      const dump = await r.router.client.dumpIndex();
      const byHash = new Map(dump.flatMap((e) => (e.data.case === "stored" ? e.data.value.blocks.map((b) => [b.blockHash, b.tokensHash]) : [])));
      assert.equal(byHash.get(77n), hashPrompt(prompt, B).local[0]);
      assert.equal(byHash.get(88n), hashPrompt(tokens(4, 5000), B).local[0]);
    });
  }
});

describe("sequence gaps", () => {
  for (const topicFrame of [false, true]) {
    test(`a gap is filled through the replay socket${topicFrame ? " (replies carrying the topic)" : ""}`, async () => {
      const r = await rig("vllm-map", { replay: true, replayTopicFrame: topicFrame });
      const prompt = tokens(12, 10);
      await r.pub.batch([storedSpec(prompt.slice(0, 4), B, 1n)]);
      await r.pub.batch([storedSpec(prompt.slice(4, 8), B, 2n, { parent_block_hash: 1n })], { skip: true });
      await r.pub.batch([storedSpec(prompt.slice(8), B, 3n, { parent_block_hash: 2n })]);
      await waitFor(async () => (await metric(r.registry, "kvrouter_zmq_gaps_total")) === 1, "gap handled");
      await r.handled(3);
      assert.equal(await metric(r.registry, "kvrouter_zmq_gaps_total", { outcome: "replayed" }), 1);
      assert.equal(await metric(r.registry, "kvrouter_worker_stale"), 0);
      assert.equal(await overlap(r, prompt), 3);
      // The replay takes only the missed range [1, 2): seq 2, which revealed the gap, applies from the live feed.
      assert.equal(await metric(r.registry, "kvrouter_zmq_frames_total", { outcome: "replayed" }), 1);
      assert.equal(await metric(r.registry, "kvrouter_zmq_frames_total", { outcome: "duplicate" }), 0);
    });
  }

  test("a gap with no replay socket marks the worker stale and drops its blocks until it clears", async () => {
    const r = await rig("vllm-map", { useReplay: false });
    await r.pub.batch([storedSpec(tokens(8, 10), B, 1n)]);
    await r.handled(1);
    assert.equal(r.blocks(), 2);
    await r.pub.batch([storedSpec(tokens(4, 60), B, 5n)], { skip: true });
    await r.pub.batch([storedSpec(tokens(4, 80), B, 6n)]);
    await r.pub.batch([storedSpec(tokens(4, 90), B, 7n, { parent_block_hash: 5n })]); // parent lost in the gap
    await r.handled(3);
    assert.equal(await metric(r.registry, "kvrouter_zmq_gaps_total", { outcome: "unrecoverable" }), 1);
    assert.equal(await metric(r.registry, "kvrouter_worker_stale", { worker_id: String(WORKER), dp_rank: "0" }), 1);
    assert.equal(await overlap(r, tokens(8, 10)), 0);
    assert.equal(await overlap(r, tokens(4, 80)), 1);
    assert.equal(r.blocks(), 1);
    assert.deepEqual(r.source.staleWorkers(), [WORKER]);
    await r.pub.batch([{ type: "AllBlocksCleared" }, storedSpec(tokens(4, 10), B, 1n)]);
    await r.handled(4);
    assert.equal(await metric(r.registry, "kvrouter_worker_stale", { worker_id: String(WORKER), dp_rank: "0" }), 0);
    assert.equal(await overlap(r, tokens(8, 10)), 1);
    assert.deepEqual(r.source.staleWorkers(), []);
  });

  test("a replay socket that does not answer counts as lost after the timeout", async () => {
    const pub = await Publisher.start("vllm-map");
    cleanups.push(() => pub.stop());
    const { freePort } = await import("./support/natsServer.js");
    const silent = `tcp://127.0.0.1:${await freePort()}`; // nothing listens there
    const source = new ZmqEventSource({
      endpoints: [{ workerId: WORKER, endpoint: pub.endpoint, replay: silent, dpRank: 0, engine: "vllm", topic: "" }],
      replayTimeoutMs: 300,
    });
    const router = await startTestRouter({ blockSize: B }, { eventSources: [source] });
    cleanups.push(() => router.close());
    const registry = router.server.metrics.registry;
    await pub.waitSubscribed();
    await pub.batch([storedSpec(tokens(4, 10), B, 1n)]);
    await pub.batch([storedSpec(tokens(4, 20), B, 2n)], { skip: true });
    await pub.batch([storedSpec(tokens(4, 30), B, 3n)]);
    await waitFor(async () => (await metric(registry, "kvrouter_zmq_gaps_total", { outcome: "unrecoverable" })) === 1, "gap given up");
    await waitFor(() => router.server.router.index.blockCounts().get(`${WORKER}:0`) === 1, "only the batch after the hole");
    assert.equal(await metric(registry, "kvrouter_worker_stale"), 1);
  });

  test("a replay whose buffer lost the start of the range still marks the worker stale", async () => {
    const r = await rig("vllm-map", { replay: true });
    await r.pub.batch([storedSpec(tokens(4, 10), B, 1n)]);
    await r.handled(1);
    await r.pub.batch([storedSpec(tokens(4, 20), B, 2n)], { skip: true });
    await r.pub.command({ cmd: "evict", below: 2 });
    await r.pub.batch([storedSpec(tokens(4, 30), B, 3n)]);
    await waitFor(async () => (await metric(r.registry, "kvrouter_zmq_gaps_total")) === 1, "gap handled");
    assert.equal(await metric(r.registry, "kvrouter_zmq_gaps_total", { outcome: "unrecoverable" }), 1);
    assert.equal(await metric(r.registry, "kvrouter_worker_stale"), 1);
    assert.equal(await overlap(r, tokens(4, 10)), 0);
    assert.equal(await overlap(r, tokens(4, 30)), 1);
  });

  test("a lost range on one dp rank's publisher drops the worker and marks its other publisher stale too", async () => {
    const p0 = await Publisher.start("vllm-map");
    const p1 = await Publisher.start("vllm-map");
    cleanups.push(() => p0.stop(), () => p1.stop());
    const spec = (pub: Publisher, dpRank: number) => ({ workerId: WORKER, endpoint: pub.endpoint, dpRank, engine: "vllm" as const, topic: "" });
    const source = new ZmqEventSource({ endpoints: [spec(p0, 0), spec(p1, 1)] });
    const router = await startTestRouter({ blockSize: B }, { eventSources: [source] });
    cleanups.push(() => router.close());
    const registry = router.server.metrics.registry;
    await p0.waitSubscribed();
    await p1.waitSubscribed();
    await p0.batch([storedSpec(tokens(8, 10), B, 1n)], { dpRank: 0 });
    await p1.batch([storedSpec(tokens(8, 10), B, 1n)], { dpRank: 1 });
    const counts = () => router.server.router.index.blockCounts();
    await waitFor(() => counts().get(`${WORKER}:0`) === 2 && counts().get(`${WORKER}:1`) === 2, "both ranks indexed");
    await p0.batch([storedSpec(tokens(4, 60), B, 5n)], { dpRank: 0, skip: true });
    await p0.batch([storedSpec(tokens(4, 70), B, 6n)], { dpRank: 0 });
    await waitFor(async () => (await metric(registry, "kvrouter_zmq_gaps_total")) === 1, "gap handled");
    await waitFor(() => counts().get(`${WORKER}:0`) === 1, "rank 0 holds only what followed the hole");
    assert.equal(counts().get(`${WORKER}:1`) ?? 0, 0);
    assert.equal(await metric(registry, "kvrouter_worker_stale", { dp_rank: "0" }), 1);
    assert.equal(await metric(registry, "kvrouter_worker_stale", { dp_rank: "1" }), 1);
  });

  test("a router that subscribes late catches up through replay", async () => {
    const pub = await Publisher.start("vllm-map", { replay: true });
    cleanups.push(() => pub.stop());
    // Sent before anyone subscribed: lost on the PUB socket, kept in the replay buffer.
    await pub.batch([storedSpec(tokens(8, 10), B, 1n)]);
    await pub.batch([storedSpec(tokens(4, 18), B, 3n, { parent_block_hash: 2n })]);
    const source = new ZmqEventSource({
      endpoints: [{ workerId: WORKER, endpoint: pub.endpoint, replay: pub.replay, dpRank: 0, engine: "vllm", topic: "" }],
    });
    const router = await startTestRouter({ blockSize: B }, { eventSources: [source] });
    cleanups.push(() => router.close());
    await pub.waitSubscribed();
    await pub.batch([storedSpec(tokens(4, 50), B, 9n)]);
    const registry = router.server.metrics.registry;
    // Seqs 0 and 1 come through the replay (the missed range), seq 2 from the live feed.
    await waitFor(async () => (await metric(registry, "kvrouter_zmq_frames_total", { outcome: "applied" })) === 1, "live seq 2 applied");
    assert.equal(await metric(registry, "kvrouter_zmq_frames_total", { outcome: "replayed" }), 2);
    const res = await router.client.findBestWorker({ tokenIds: tokens(12, 10) });
    assert.equal(res.overlapBlocks, 3);
    assert.equal(await metric(registry, "kvrouter_worker_stale"), 0);
  });

  test("a publisher restart (seq back to 0) drops the worker's blocks", async () => {
    const r = await rig("vllm-map", { useReplay: false });
    await r.pub.batch([storedSpec(tokens(8, 10), B, 1n)]);
    await r.pub.batch([storedSpec(tokens(4, 30), B, 3n)]);
    await r.handled(2);
    await r.pub.command({ cmd: "restart" });
    await r.pub.batch([storedSpec(tokens(4, 40), B, 4n)]);
    await r.handled(3);
    assert.equal(await metric(r.registry, "kvrouter_zmq_publisher_restarts_total"), 1);
    assert.equal(r.blocks(), 1);
    assert.equal(await overlap(r, tokens(4, 40)), 1);
    assert.equal(await metric(r.registry, "kvrouter_worker_stale"), 0);
  });
});

describe("garbage never stops the subscriber", () => {
  test("malformed frames, undecodable payloads and bad events are counted and skipped", async () => {
    const r = await rig("vllm-map");
    const seq = (n: number) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(BigInt(n));
      return b;
    };
    await r.pub.batch([storedSpec(tokens(4, 10), B, 1n)]);
    await r.pub.raw([Buffer.from("only one frame")]);
    await r.pub.raw([Buffer.alloc(0), Buffer.from([1, 2, 3, 4, 5]), Buffer.from([0x90])]);
    await r.pub.raw([Buffer.alloc(0), seq(1), Buffer.from([0x90]), Buffer.from("fourth frame")]);
    await brokenBatch(r.pub, Buffer.from([0xc1, 0x00, 0xff])); // 0xc1 is never valid MessagePack
    await brokenBatch(r.pub, encode("a string, not a batch"));
    await brokenBatch(r.pub, Buffer.from(encode([1.5, [["BlockStored", [1]]], 0])).subarray(0, 6)); // truncated
    await brokenBatch(
      r.pub,
      encode([
        1.5,
        [
          ["Bogus", 1],
          { type: "BlockStored", block_hashes: [2], parent_block_hash: null, token_ids: ["x"], block_size: B },
          { type: "BlockStored", block_hashes: [3.5], parent_block_hash: null, token_ids: tokens(4, 20), block_size: B },
          ["BlockStored", [4], null, tokens(4, 20), B, null, "GPU"],
          42,
        ],
        0,
      ]),
    );
    await r.pub.batch([storedSpec(tokens(4, 30), B, 5n)]);
    await r.handled(9);
    assert.equal(await metric(r.registry, "kvrouter_zmq_frames_total", { outcome: "malformed" }), 3);
    assert.equal(await metric(r.registry, "kvrouter_zmq_frames_total", { outcome: "undecodable" }), 3);
    assert.equal(await metric(r.registry, "kvrouter_zmq_frames_total", { outcome: "applied" }), 3);
    assert.equal(await metric(r.registry, "kvrouter_zmq_events_total", { outcome: "bad_event" }), 4);
    assert.equal(await metric(r.registry, "kvrouter_zmq_gaps_total"), 0);
    // The good event inside the mixed batch applied, and so did the batches around the garbage.
    assert.equal(await overlap(r, tokens(4, 10)), 1);
    assert.equal(await overlap(r, tokens(4, 20)), 1);
    assert.equal(await overlap(r, tokens(4, 30)), 1);
    assert.equal(r.blocks(), 3);
  });
});
