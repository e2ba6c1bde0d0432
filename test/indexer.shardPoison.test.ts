// A batch that throws inside a shard thread while it is applied (issue 21
// reliability). No network input is known to make CompactCore throw, so the
// test makes it throw on a chosen event with the test-only option
// testOnlyThrowOnEvent (read by the shard thread at start-up; no flag or
// request reaches it). Before the fix the shard caught the exception, failed
// that one batch with a plain Error (INTERNAL over gRPC) and went on serving
// with the batch's earlier events applied: its index silently differed from
// what had been acknowledged. Now the throw is fatal for the shard: it says
// why as its last words and stops, and the dead-shard path takes over
// (IndexShardDownError, UNAVAILABLE, not ready, server.failed).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { IndexShardDownError } from "../src/indexer/types.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { stored } from "./support/events.js";
import { startTestRouter, tokens } from "./support/router.js";

/** Event `eventId` of `worker`: one block continuing the one stored by the event before it. */
function link(worker: bigint, eventId: bigint): IndexEvent {
  const ext = worker * 1000n + eventId;
  return {
    kind: "stored",
    workerId: worker,
    dpRank: 0,
    eventId,
    parentHash: eventId === 1n ? undefined : ext - 1n,
    blocks: [{ externalHash: ext, localHash: ext * 31n }],
  };
}
const links = (worker: bigint, from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => link(worker, BigInt(from + i)));

const poisoned = (shard: number) => (err: unknown) => {
  assert.ok(err instanceof IndexShardDownError, String(err));
  assert.equal(err.shard, shard);
  assert.match(err.message, /^index shard 1 is down \(its thread (threw|stopped): .*applying threw, so the shard may hold part of what it was applying.*test-only throw on worker 2 event 5.*\); the router cannot answer/);
  return true;
};

/** Two shards (worker 1 on shard 0, worker 2 on shard 1) whose shard thread throws applying worker 2's event 5. */
async function twoShards(): Promise<CompactIndex> {
  const index = await CompactIndex.create({ shards: 2, testOnlyThrowOnEvent: { workerId: 2n, eventId: 5n } });
  index.applyBatch(toEventBatch([link(1n, 1n), link(2n, 1n)]));
  return index;
}

describe("a batch that throws inside an index shard thread (in-process CompactIndex, 2 shards)", { timeout: 30_000 }, () => {
  it("queued: the batch and the shard fail; nothing later is served by it; the other shard still applies", async () => {
    const index = await twoShards();
    try {
      const before = index.applyBatchAsync(toEventBatch(links(2n, 2, 3)));
      const throwing = index.applyBatchAsync(toEventBatch(links(2n, 4, 6)));
      const after = index.applyBatchAsync(toEventBatch(links(2n, 7, 7)));
      assert.deepEqual((await before).map((r) => r.outcome), ["applied", "applied"]);
      await assert.rejects(throwing, poisoned(1));
      await assert.rejects(after, poisoned(1));
      assert.equal(index.down?.shard, 1);
      assert.throws(() => index.findMatches([1n]), poisoned(1));
      assert.throws(() => index.applyBatch(toEventBatch([link(2n, 8n)])), poisoned(1));
      assert.deepEqual(index.applyBatch(toEventBatch([link(1n, 2n)])).map((r) => r.outcome), ["applied"]);
    } finally {
      await index.close();
    }
  });

  it("synchronous: the apply throws IndexShardDownError and the shard is down", async () => {
    const index = await twoShards();
    try {
      // This thread waits in Atomics.wait and sees no exit event: the shard's last words say why.
      assert.throws(() => index.applyBatch(toEventBatch(links(2n, 2, 6))), (err: Error) => poisoned(1)(err) && /its thread threw: Error: applying threw/.test(err.message));
      assert.equal(index.shardsDown, 1);
      assert.throws(() => index.stats(), poisoned(1));
    } finally {
      await index.close();
    }
  });
});

describe("server with --indexer-shards 2 whose shard throws applying a raw IngestKvEvents message", { timeout: 30_000 }, () => {
  it("the stream ends UNAVAILABLE naming the message; the router reports not ready and fails", async () => {
    const B = 4;
    const r = await startTestRouter({ blockSize: B }, { indexerShards: 2, metricsPort: 0, testOnlyIndexThrowOnEvent: { workerId: 2n, eventId: 5n } });
    let failed: Error | undefined;
    void r.server.failed.then((err) => (failed = err));
    try {
      // Worker 1 lands on shard 0, worker 2 on shard 1; one event per message, each continuing the last.
      const msg = (w: number, id: number) => ({
        events: [stored(w, id, tokens(B, 100 * w + 10 * id), B, BigInt(1000 * w + id), { parent: id === 1 ? undefined : BigInt(1000 * w + id - 1) })],
      });
      assert.equal((await r.client.ingestKvEvents([msg(1, 1), msg(2, 1)])).applied, 2n);
      await assert.rejects(r.client.ingestKvEvents([2, 3, 4, 5, 6].map((id) => msg(2, id))), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.UNAVAILABLE, err.details);
        assert.match(err.details, /^message 3: index shard 1 is down \(its thread (threw|stopped): .*test-only throw on worker 2 event 5.*; 3 events applied before this message$/);
        return true;
      });
      for (let i = 0; i < 200 && failed === undefined; i++) await new Promise((res) => setTimeout(res, 10));
      assert.ok(failed instanceof IndexShardDownError, "server.failed settled: the CLI stops and exits 1 on it");
      const res = await fetch(`http://127.0.0.1:${r.server.metricsPort}/readyz`);
      assert.equal(res.status, 503);
      assert.match(await res.text(), /^not ready: index shard 1 is down/);
    } finally {
      await r.close();
    }
  });
});
