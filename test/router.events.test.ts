// KV events in, decisions out: the index semantics of ROUTER.md, observed
// through a real kv-router over real gRPC.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { StorageTier } from "../gen/kvrouter/v1/router_pb.js";
import { cleared, removed, stored } from "./support/events.js";

const B = 4;

async function overlapOf(r: TestRouter, prompt: number[], workerId: number, dpRank = 0, loraName = ""): Promise<number> {
  const res = await r.client.findBestWorker({ tokenIds: prompt, explain: true, loraName });
  const score = res.scores.find((s) => s.worker!.workerId === BigInt(workerId) && s.worker!.dpRank === dpRank);
  assert.ok(score, `worker ${workerId}:${dpRank} is a candidate`);
  return score.overlapBlocks;
}

async function cachedBlocks(r: TestRouter): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const w of (await r.client.listWorkers()).workers) {
    out[`${w.worker!.workerId}:${w.worker!.dpRank}`] = Number(w.cachedBlocks);
  }
  return out;
}

async function metricValue(r: TestRouter, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = await r.server.metrics.registry.getSingleMetric(name)!.get();
  const match = metric.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
  return match?.value ?? 0;
}

describe("events in, decisions out", () => {
  let r: TestRouter;
  before(async () => {
    r = await startTestRouter({ blockSize: B });
  });
  after(() => r.close());

  it("routes a prompt to the worker holding the longest prefix", async () => {
    const prompt = tokens(20, 1000); // 5 full blocks
    const res = await r.client.sendEvents([
      stored(1, 1, prompt.slice(0, 16), B, 100n), // 4 blocks
      stored(2, 1, prompt.slice(0, 4), B, 200n), // 1 block
    ]);
    assert.equal(res.applied, 2n);
    const decision = await r.client.findBestWorker({ tokenIds: prompt, explain: true });
    assert.equal(decision.worker!.workerId, 1n);
    assert.equal(decision.overlapBlocks, 4);
    assert.equal(decision.promptBlocks, 5);
    assert.equal(await overlapOf(r, prompt, 2), 1);
    // Scores come best first and follow Dynamo's logit: weight * prefill_blocks + decode_blocks.
    const [best, second] = decision.scores;
    assert.equal(best.worker!.workerId, 1n);
    assert.equal(best.prefillBlocks, (20 - 16) / B);
    assert.equal(best.decodeBlocks, 5n);
    assert.equal(best.logit, 1.0 * best.prefillBlocks + Number(best.decodeBlocks));
    assert.equal(second.prefillBlocks, (20 - 4) / B);
  });

  it("continues a chain from its parent block", async () => {
    const prompt = tokens(12, 5000);
    await r.client.sendEvents([stored(3, 1, prompt.slice(0, 4), B, 300n)]);
    assert.equal(await overlapOf(r, prompt, 3), 1);
    await r.client.sendEvents([stored(3, 2, prompt.slice(4, 12), B, 301n, { parent: 300n })]);
    assert.equal(await overlapOf(r, prompt, 3), 3);
  });

  it("rejects a stored event whose parent is unknown, and changes nothing", async () => {
    const before = await r.client.dumpIndex();
    const res = await r.client.sendEvents([stored(3, 3, tokens(8, 9000), B, 400n, { parent: 99999n })]);
    assert.equal(res.applied, 0n);
    assert.equal(res.rejected, 1n);
    assert.equal(res.rejections[0].reason, "parent_block_not_found");
    assert.equal(res.rejections[0].eventId, 3n);
    assert.deepEqual(await r.client.dumpIndex(), before);
    assert.equal(await metricValue(r, "kvrouter_kv_events_total", { outcome: "parent_block_not_found" }), 1);
    // Not even a worker first seen in the rejected event becomes known.
    await r.client.sendEvents([stored(99, 1, tokens(4, 9000), B, 410n, { parent: 1n })]);
    assert.equal((await cachedBlocks(r))["99:0"], undefined);
  });

  it("treats a duplicate store as a no-op", async () => {
    const prompt = tokens(8, 7000);
    await r.client.sendEvents([stored(4, 1, prompt, B, 500n)]);
    const before = await cachedBlocks(r);
    await r.client.sendEvents([stored(4, 2, prompt, B, 500n)]);
    assert.deepEqual(await cachedBlocks(r), before);
    assert.equal(await overlapOf(r, prompt, 4), 2);
  });

  it("stops lookups at a removed block without cascading to its children", async () => {
    const prompt = tokens(16, 11000);
    await r.client.sendEvents([stored(5, 1, prompt, B, 600n)]); // blocks 600..603
    assert.equal(await overlapOf(r, prompt, 5), 4);
    await r.client.sendEvents([removed(5, 2, [601n])]);
    assert.equal(await overlapOf(r, prompt, 5), 1);
    assert.equal((await cachedBlocks(r))["5:0"], 3, "children of the removed block stay until removed themselves");
    // Re-storing the block (same parent) makes the children reachable again.
    await r.client.sendEvents([stored(5, 3, prompt.slice(4, 8), B, 601n, { parent: 600n })]);
    assert.equal(await overlapOf(r, prompt, 5), 4);
  });

  it("skips and counts removals of unknown blocks, applying the rest", async () => {
    const prompt = tokens(8, 13000);
    await r.client.sendEvents([stored(6, 1, prompt, B, 700n)]);
    const res = await r.client.sendEvents([removed(6, 2, [123456n, 701n])]);
    assert.equal(res.applied, 1n);
    assert.equal((await cachedBlocks(r))["6:0"], 1);
    assert.equal(await metricValue(r, "kvrouter_kv_event_anomalies_total", { kind: "unknown_removal" }), 1);
  });

  it("drops stale event ids and counts gaps", async () => {
    const prompt = tokens(8, 15000);
    await r.client.sendEvents([stored(7, 10, prompt.slice(0, 4), B, 800n)]);
    const stale = await r.client.sendEvents([stored(7, 10, prompt.slice(4, 8), B, 801n, { parent: 800n })]);
    assert.equal(stale.rejected, 1n);
    assert.equal(stale.rejections[0].reason, "stale_event_id");
    assert.equal(await overlapOf(r, prompt, 7), 1);
    const gap = await r.client.sendEvents([stored(7, 15, prompt.slice(4, 8), B, 801n, { parent: 800n })]);
    assert.equal(gap.applied, 1n);
    assert.equal(await overlapOf(r, prompt, 7), 2);
    assert.equal(await metricValue(r, "kvrouter_kv_event_anomalies_total", { kind: "event_id_gap" }), 1);
    const info = (await r.client.listWorkers()).workers.find((w) => w.worker!.workerId === 7n)!;
    assert.equal(info.lastEventId, 15n);
  });

  it("keeps dp ranks apart; a cleared wipes only the emitting (worker, dp_rank), as Dynamo scopes it", async () => {
    const prompt = tokens(8, 17000);
    await r.client.sendEvents([
      stored(8, 1, prompt, B, 900n, { dpRank: 0 }),
      stored(8, 1, prompt.slice(0, 4), B, 950n, { dpRank: 1 }),
      stored(9, 1, prompt, B, 990n),
    ]);
    assert.equal(await overlapOf(r, prompt, 8, 0), 2);
    assert.equal(await overlapOf(r, prompt, 8, 1), 1);
    await r.client.sendEvents([cleared(8, 2, 0)]);
    assert.equal(await overlapOf(r, prompt, 8, 0), 0);
    assert.equal(await overlapOf(r, prompt, 8, 1), 1, "the worker's other rank keeps its blocks");
    assert.equal(await overlapOf(r, prompt, 9), 2, "other workers keep their blocks");
    await r.client.sendEvents([cleared(8, 2, 1)]);
    assert.equal(await overlapOf(r, prompt, 8, 1), 0);
  });

  it("indexes gRPC events per storage tier: host blocks continue the GPU match at 0.75 of a GPU block", async () => {
    const prompt = tokens(12, 19500);
    const res = await r.client.sendEvents([
      stored(14, 1, prompt.slice(0, 4), B, 1400n),
      stored(14, 2, prompt.slice(0, 8), B, 1410n, { storageTier: StorageTier.HOST_PINNED }), // blocks 0-1 offloaded
      stored(15, 1, prompt.slice(0, 8), B, 1500n, { storageTier: StorageTier.HOST_PINNED }),
      // A host block whose parent this worker holds nowhere (1400 is worker 14's) cannot be placed.
      stored(15, 2, prompt.slice(8, 12), B, 1520n, { storageTier: StorageTier.HOST_PINNED, parent: 1400n }),
    ]);
    assert.deepEqual(res.rejections.map((e) => [e.worker!.workerId, e.reason]), [[15n, "parent_block_not_found"]]);
    const scores = (await r.client.findBestWorker({ tokenIds: prompt, explain: true })).scores;
    const of = (id: bigint) => scores.find((s) => s.worker!.workerId === id)!;
    assert.deepEqual([of(14n).overlapBlocks, of(14n).hostOverlapBlocks], [1, 1], "the host tier counts only beyond the GPU match");
    assert.deepEqual([of(15n).overlapBlocks, of(15n).hostOverlapBlocks], [0, 2]);
    assert.equal(3 - of(14n).prefillBlocks, 1.75);
    assert.equal(3 - of(15n).prefillBlocks, 1.5);
    const dump = await r.client.dumpIndex();
    assert.ok(dump.some((e) => e.workerId === 15n && e.storageTier === StorageTier.HOST_PINNED), "DumpIndex carries the tier");
  });

  it("a host block whose parent the worker holds only on the GPU continues its GPU chain (in-thread and sharded index)", async () => {
    const sharded = await startTestRouter({ blockSize: B }, { indexerShards: 2 });
    try {
      for (const router of [r, sharded]) {
        const prompt = tokens(16, 19600);
        const res = await router.client.sendEvents([
          stored(17, 1, prompt.slice(0, 8), B, 1700n), // blocks 0-1 on the GPU
          stored(17, 2, prompt.slice(8, 16), B, 1702n, { storageTier: StorageTier.HOST_PINNED, parent: 1701n }), // 2-3 offloaded
        ]);
        assert.deepEqual(res.rejections, []);
        const score = (await router.client.findBestWorker({ tokenIds: prompt, explain: true })).scores.find((s) => s.worker!.workerId === 17n)!;
        assert.deepEqual([score.overlapBlocks, score.hostOverlapBlocks], [2, 2]);
        assert.equal(4 - score.prefillBlocks, 2 + 2 * 0.75);
      }
    } finally {
      await sharded.close();
    }
  });

  it("salts block hashes with cache_namespace on events and requests, as Dynamo does", async () => {
    const prompt = tokens(8, 19700);
    await r.client.sendEvents([stored(16, 1, prompt, B, 1600n, { cacheNamespace: "tenant-a" })]);
    const overlap = async (cacheNamespace: string) =>
      (await r.client.findBestWorker({ tokenIds: prompt, explain: true, cacheNamespace })).scores.find((s) => s.worker!.workerId === 16n)!
        .overlapBlocks;
    assert.deepEqual([await overlap("tenant-a"), await overlap(""), await overlap("tenant-b")], [2, 0, 0]);
  });

  it("hashes LoRA blocks apart from the base model's", async () => {
    const prompt = tokens(8, 19000);
    await r.client.sendEvents([stored(10, 1, prompt, B, 1000n, { loraName: "sql-adapter" })]);
    assert.equal(await overlapOf(r, prompt, 10, 0, "sql-adapter"), 2);
    assert.equal(await overlapOf(r, prompt, 10, 0, ""), 0);
    assert.equal(await overlapOf(r, prompt, 10, 0, "other-adapter"), 0);
  });

  it("accepts blocks given by their local hash instead of their tokens", async () => {
    const prompt = tokens(8, 21000);
    const { hashPrompt } = await import("../src/hashing/blockHash.js");
    const local = hashPrompt(prompt, B).local;
    await r.client.sendEvents([
      {
        workerId: 11n,
        eventId: 1n,
        data: {
          case: "stored",
          value: { blocks: local.map((h, i) => ({ blockHash: 1100n + BigInt(i), tokensHash: h })) },
        },
      },
    ]);
    assert.equal(await overlapOf(r, prompt, 11), 2);
  });

  it("counts applied events in metrics", async () => {
    assert.ok((await metricValue(r, "kvrouter_kv_events_total", { outcome: "applied" })) >= 10);
    assert.ok((await metricValue(r, "kvrouter_index_blocks")) > 0);
  });
});

describe("DumpIndex", () => {
  it("rebuilds an identical index that makes identical decisions", async () => {
    const a = await startTestRouter({ blockSize: B });
    const b = await startTestRouter({ blockSize: B });
    try {
      const p1 = tokens(16, 0);
      const p2 = [...tokens(8, 0), ...tokens(8, 500)];
      await a.client.sendEvents([
        stored(1, 1, p1, B, 10n),
        stored(2, 1, p2, B, 20n),
        stored(2, 2, tokens(4, 900), B, 30n, { dpRank: 1 }),
        removed(1, 2, [11n]), // orphans blocks 12, 13 (unreachable)
        stored(3, 5, tokens(8, 0), B, 40n),
        cleared(3, 6),
      ]);
      const dump = await a.client.dumpIndex();
      const res = await b.client.sendEvents(dump, true);
      assert.equal(res.rejected, 0n);
      assert.deepEqual(await b.client.dumpIndex(), dump);
      for (const prompt of [p1, p2, tokens(4, 900)]) {
        const [da, db] = await Promise.all([
          a.client.findBestWorker({ tokenIds: prompt, explain: true }),
          b.client.findBestWorker({ tokenIds: prompt, explain: true }),
        ]);
        assert.deepEqual(db.scores.map((s) => [s.worker, s.overlapBlocks]), da.scores.map((s) => [s.worker, s.overlapBlocks]));
      }
      // Cursors survive the restore: the next live event applies, a replayed one is stale.
      const next = await b.client.sendEvents([stored(2, 2, tokens(4, 700), B, 50n)]);
      assert.equal(next.applied, 1n);
      const replayed = await b.client.sendEvents([stored(1, 2, tokens(4, 700), B, 60n)]);
      assert.equal(replayed.rejections[0]?.reason, "stale_event_id");
    } finally {
      await a.close();
      await b.close();
    }
  });
});
