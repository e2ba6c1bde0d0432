// IngestKvEvents with decoder threads (--ingest-threads) and with the main
// thread, over real gRPC: messages decoded in parallel still apply in stream
// order; an invalid message ends the stream with the same INVALID_ARGUMENT
// as before and nothing from it or after it is applied; messages the hot
// path hands back (multimodal hashes) are decoded by protobuf-es and agree.
// With index shard threads the applies are pipelined (queued to the shards
// while the next message decodes): the same answers, and a refused message
// still changes nothing.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import { stored } from "./support/events.js";
import { type TestRouter, startTestRouter } from "./support/router.js";

const B = 64;
const tokens = (seed: number, blocks: number) => Array.from({ length: blocks * B }, (_, i) => (seed * 7919 + i * 31) % 120_000);

const SETUPS = [
  { ingestThreads: 0, indexerShards: 0 },
  { ingestThreads: 2, indexerShards: 0 },
  { ingestThreads: 0, indexerShards: 2 },
  { ingestThreads: 2, indexerShards: 2 },
];

for (const { ingestThreads, indexerShards } of SETUPS) {
  const decoded = ingestThreads === 0 ? "decoded on the main thread" : `${ingestThreads} decoder threads`;
  const applied = indexerShards === 0 ? "" : `, applies pipelined to ${indexerShards} index shards`;
  describe(`IngestKvEvents (${decoded}${applied})`, () => {
    let r: TestRouter;
    before(async () => {
      r = await startTestRouter({ blockSize: B }, { ingestThreads, indexerShards });
    });
    after(() => r.close());

    it("200 messages of one worker's chain apply in stream order", async () => {
      // Each message extends the chain by one event: any reordering would be a stale or orphaned event.
      const messages = Array.from({ length: 200 }, (_, i) => ({
        events: [stored(1, i + 1, tokens(i, 2), B, BigInt(2 * i + 1), { parent: i === 0 ? undefined : BigInt(2 * i) })],
      }));
      const res = await r.client.ingestKvEvents(messages);
      assert.equal(res.applied, 200n);
      assert.equal(res.rejected, 0n);
      const w = (await r.client.listWorkers()).workers.find((x) => x.worker?.workerId === 1n)!;
      assert.equal(w.cachedBlocks, 400n);
      assert.equal(w.lastEventId, 200n);
      // A prompt of the first 4 blocks matches all 4 on worker 1.
      const prompt = [...tokens(0, 2), ...tokens(1, 2)];
      assert.equal((await r.client.findBestWorker({ tokenIds: prompt })).overlapBlocks, 4);
    });

    it("an invalid message ends the stream; what came before it stays, nothing after it applies", async () => {
      const good = (i: number) => ({ events: [stored(2, i, tokens(100 + i, 1), B, BigInt(1000 + i))] });
      const bad = {
        events: [{ workerId: 2n, eventId: 3n, data: { case: "stored" as const, value: { blocks: [{ blockHash: 5000n, tokenIds: tokens(1, 1).slice(0, 10) }] } } }],
      };
      await assert.rejects(r.client.ingestKvEvents([good(1), good(2), bad, good(4), good(5)]), (err: { code: number; details: string }) => {
        assert.equal(err.code, status.INVALID_ARGUMENT);
        assert.equal(
          err.details,
          "message 2 events[0] (worker 2 dp_rank 0 event_id 3): stored.blocks[0] has 10 token ids but the router's block size is 64; " +
            "start kv-router with the engine's --block-size; 2 events applied before this message",
        );
        return true;
      });
      const w = (await r.client.listWorkers()).workers.find((x) => x.worker?.workerId === 2n)!;
      assert.equal(w.cachedBlocks, 2n);
      assert.equal(w.lastEventId, 2n);
    });

    it("a message naming more new workers than the index has slots for is refused whole; what came before it stays", async () => {
      const small = await startTestRouter({ blockSize: B }, { ingestThreads, indexerShards, maxWorkerRanks: 3 });
      try {
        const one = (workerId: number, eventId: number) => ({ events: [stored(workerId, 0, tokens(300 + workerId, 1), B, BigInt(9000 + workerId * 10 + eventId))] });
        const many = { events: [4, 5, 6].map((w) => stored(w, 0, tokens(400 + w, 1), B, BigInt(9500 + w))) };
        await assert.rejects(small.client.ingestKvEvents([one(1, 1), one(2, 1), many, one(3, 1)]), (err: { code: number; details: string }) => {
          assert.equal(err.code, status.RESOURCE_EXHAUSTED);
          assert.match(err.details, /^message 2: the index holds at most 3 \(worker, dp_rank\) pairs; 2 are known and this would add 3; nothing was applied \(raise the limit with --max-worker-ranks\); 2 events applied before this message$/);
          return true;
        });
        const ids = (await small.client.listWorkers()).workers.map((w) => w.worker?.workerId).sort();
        assert.deepEqual(ids, [1n, 2n]);
      } finally {
        await small.close();
      }
    });

    it("a message with multimodal hashes (decoded by protobuf-es) applies like any other", async () => {
      const event = stored(3, 1, tokens(7, 1), B, 77n);
      if (event.data?.case === "stored") event.data.value.blocks![0].mmHashes = [5n, 3n];
      const res = await r.client.ingestKvEvents([{ events: [event] }, { events: [stored(3, 2, tokens(8, 1), B, 78n, { parent: 77n })] }]);
      assert.equal(res.applied, 2n);
      // Without the multimodal hashes the prompt's first block hashes differently: no overlap.
      assert.equal((await r.client.findBestWorker({ tokenIds: [...tokens(7, 1), ...tokens(8, 1)] })).overlapBlocks, 0);
    });
  });
}
