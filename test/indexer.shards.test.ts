// The sharded index end to end: a real server started with index shards on
// worker threads answers over gRPC like the in-thread one, and requests far
// larger than the shards' initial shared buffers still go through.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { sequenceHash } from "../src/hashing/blockHash.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { PrefixIndex } from "../src/indexer/prefixIndex.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { stored } from "./support/events.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";

describe("server with --indexer-shards 2", () => {
  let r: TestRouter;
  before(async () => {
    r = await startTestRouter({ blockSize: 4 }, { indexerShards: 2 });
  });
  after(async () => {
    await r.close();
  });

  it("routes to the worker holding the longest prefix, over gRPC", async () => {
    const prompt = tokens(16, 500);
    // Worker 7 holds the first 3 blocks, worker 8 only the first; new workers land on different shards.
    const res = await r.client.sendEvents([stored(7, 1, prompt.slice(0, 12), 4, 1000n), stored(8, 1, prompt.slice(0, 4), 4, 2000n)]);
    assert.equal(res.applied, 2n);
    const best = await r.client.findBestWorker({ tokenIds: prompt });
    assert.equal(best.worker?.workerId, 7n);
    assert.equal(best.overlapBlocks, 3);
    const listed = await r.client.listWorkers();
    const cached = new Map(listed.workers.map((w) => [w.worker?.workerId, Number(w.cachedBlocks)]));
    assert.deepEqual([cached.get(7n), cached.get(8n)], [3, 1]);
    // An unknown parent is still rejected as a whole, through the shard.
    const bad = await r.client.sendEvents([stored(8, 2, prompt.slice(4, 8), 4, 2001n, { parent: 999n })]);
    assert.equal(bad.rejected, 1n);
  });

  it("counts how the shards' answers were had: read from shared memory on x86-64, else asked", async () => {
    const text = async () => r.server.metrics.registry.metrics();
    const count = (t: string, path: string) => Number(new RegExp(`^kvrouter_index_shard_answers_total\\{path="${path}"\\} (\\S+)$`, "m").exec(t)?.[1]);
    const before = await text();
    for (let i = 0; i < 3; i++) await r.client.findBestWorker({ tokenIds: tokens(16, 500) });
    const after = await text();
    // Two shards answer each of the three queries.
    const read = count(after, "read") - count(before, "read");
    const asked = count(after, "asked") - count(before, "asked");
    assert.equal(read + asked, 6);
    if (process.arch === "x64") assert.equal(read, 6);
  });
});

describe("sharded index with requests larger than its initial buffers", () => {
  let index: CompactIndex;
  before(async () => {
    index = await CompactIndex.create({ shards: 2 });
  });
  after(async () => {
    await index.close();
    await index.close(); // closing twice is harmless
  });

  it("stores a 100,000-block event and answers a 100,000-block query like PrefixIndex", () => {
    const n = 100_000; // 400,000 record words: the 1 MiB request buffer has to grow
    const blocks = Array.from({ length: n }, (_, i) => ({ externalHash: BigInt(i + 1), localHash: BigInt(i * 31 + 7) }));
    const events: IndexEvent[] = [
      { kind: "stored", workerId: 1n, dpRank: 0, eventId: 1n, blocks },
      { kind: "stored", workerId: 2n, dpRank: 0, eventId: 1n, blocks: blocks.slice(0, 500) },
    ];
    const ref = new PrefixIndex();
    assert.deepEqual(index.applyBatch(toEventBatch(events)), events.map((e) => ref.apply(e)));
    const query: bigint[] = [];
    let parent: bigint | undefined;
    for (const b of blocks) query.push((parent = sequenceHash(parent, b.localHash)));
    const got = [...index.findMatches(query)].sort();
    assert.deepEqual(got, [...ref.findMatches(query)].sort());
    assert.deepEqual(got, [
      ["1:0", n],
      ["2:0", 500],
    ]);
    assert.equal(index.size(), ref.size());
  });
});
