// A shard thread that dies after start-up (issue 21 reliability). The test
// ends one with Worker.terminate(), through the test-only onShardThread
// hook: like a thread killed for memory, it runs no more JavaScript and says
// nothing. Before the fix a synchronous call waited for it forever, queued
// batches never settled (so IngestKvEvents streams hung), queries kept
// answering from its frozen memory, and close() hung. Now every call that
// needs it fails promptly with IndexShardDownError (UNAVAILABLE over gRPC),
// its memory is no longer read, and the server reports not ready and not live.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Worker } from "node:worker_threads";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { IndexShardDownError } from "../src/indexer/types.js";
import { sequenceHash } from "../src/hashing/blockHash.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { IngestKvEventsRequestSchema } from "../gen/kvrouter/v1/router_pb.js";
import { stored } from "./support/events.js";
import { startTestRouter, tokens, metricsPage } from "./support/router.js";

/** A chain of `n` blocks stored by `worker` (event `eventId`), external hashes from `first`. */
function chain(worker: bigint, eventId: bigint, n: number, first = 1n): IndexEvent {
  const blocks = Array.from({ length: n }, (_, i) => ({ externalHash: first + BigInt(i), localHash: BigInt(i * 31 + 7) }));
  return { kind: "stored", workerId: worker, dpRank: 0, eventId, blocks };
}

/** The sequence hashes of chain()'s first `n` blocks: the query that matches them. */
function query(n: number): bigint[] {
  const out: bigint[] = [];
  let parent: bigint | undefined;
  for (let i = 0; i < n; i++) out.push((parent = sequenceHash(parent, BigInt(i * 31 + 7))));
  return out;
}

/** Two shards; worker 1 lands on shard 0 and worker 2 on shard 1 (new workers go to the emptiest shard). */
async function twoShards(): Promise<{ index: CompactIndex; threads: Worker[] }> {
  const threads: Worker[] = [];
  const index = await CompactIndex.create({ shards: 2, onShardThread: (i, t) => (threads[i] = t) });
  index.applyBatch(toEventBatch([chain(1n, 1n, 8), chain(2n, 1n, 8)]));
  assert.deepEqual([...index.findMatches(query(8))].sort(), [["1:0", 8], ["2:0", 8]]);
  return { index, threads };
}

const downOnShard = (shard: number) => (err: unknown) => {
  assert.ok(err instanceof IndexShardDownError, String(err));
  assert.equal(err.shard, shard);
  assert.match(err.message, new RegExp(`^index shard ${shard} is down \\(.+\\); the router cannot answer for that shard's workers until it is restarted$`));
  return true;
};

describe("an index shard thread that dies (in-process CompactIndex, 2 shards)", () => {
  it("batches queued to it fail instead of hanging; the ones it applied before dying still resolve", async () => {
    const { index, threads } = await twoShards();
    // About 200,000 blocks queued to shard 1: it is still applying them when it is ended.
    const pending = Array.from({ length: 50 }, (_, i) => index.applyBatchAsync(toEventBatch([chain(2n, BigInt(i + 2), 4096, BigInt(1000 + i * 4096))])));
    void threads[1].terminate();
    const settled = await Promise.allSettled(pending);
    const firstFailed = settled.findIndex((s) => s.status === "rejected");
    assert.ok(firstFailed >= 0, "some batches were still queued when the shard died");
    // In order: applied batches, then failed ones, every failure naming the shard.
    for (const [i, s] of settled.entries()) {
      assert.equal(s.status, i < firstFailed ? "fulfilled" : "rejected", `batch ${i}`);
      if (s.status === "rejected") downOnShard(1)(s.reason);
    }
    await index.close();
  });

  it("then: queries fail rather than read its frozen memory, its workers' events fail at once, the other shard's still apply, close() ends", async () => {
    const { index, threads } = await twoShards();
    await threads[1].terminate(); // its exit event has run
    assert.equal(index.down?.shard, 1);
    assert.equal(index.shardsDown, 1);
    assert.throws(() => index.findMatches(query(8)), downOnShard(1));
    assert.throws(() => index.applyBatch(toEventBatch([chain(2n, 2n, 1, 500n)])), downOnShard(1));
    await assert.rejects(index.applyBatchAsync(toEventBatch([chain(2n, 2n, 1, 500n)])), downOnShard(1));
    // A batch that also names a worker of the dead shard changes nothing on the live one.
    await assert.rejects(index.applyBatchAsync(toEventBatch([chain(1n, 2n, 1, 600n), chain(2n, 2n, 1, 500n)])), downOnShard(1));
    assert.equal(index.lastEventIds().get("1:0"), 1n);
    assert.throws(() => index.stats(), downOnShard(1));
    // Worker 1 lives on shard 0, which still applies its events.
    assert.deepEqual(index.applyBatch(toEventBatch([chain(1n, 2n, 1, 600n)])).map((r) => r.outcome), ["applied"]);
    assert.deepEqual((await index.applyBatchAsync(toEventBatch([chain(1n, 3n, 1, 700n)]))).map((r) => r.outcome), ["applied"]);
    await index.close();
  });

  it("a synchronous call blocked on it fails once its thread is gone, without waiting for the exit event", { skip: process.platform !== "linux" && "looks for the thread under /proc" }, async () => {
    const { index, threads } = await twoShards();
    void threads[1].terminate();
    // This loop never yields, so no exit event can run: only a look at the thread itself can end the wait.
    const nap = new Int32Array(new SharedArrayBuffer(4));
    let failure: unknown;
    for (let i = 0; i < 2_000 && failure === undefined; i++) {
      try {
        index.stats();
        Atomics.wait(nap, 0, 0, 5);
      } catch (err) {
        failure = err;
      }
    }
    downOnShard(1)(failure);
    assert.match((failure as Error).message, /its thread is gone/);
    assert.throws(() => index.findMatches(query(8)), downOnShard(1));
    await index.close();
  });
});

describe("server with --indexer-shards 2 whose shard thread dies", () => {
  it("answers UNAVAILABLE naming the shard, fails an open IngestKvEvents stream, reports not ready and not live, and stops", async () => {
    const threads: Worker[] = [];
    const r = await startTestRouter({ blockSize: 4 }, { indexerShards: 2, metricsPort: 0, onIndexShardThread: (i, t) => (threads[i] = t) });
    const probe = (path: string) => metricsPage(r, path);
    let failed: Error | undefined;
    void r.server.failed.then((err) => (failed = err));
    try {
      const prompt = tokens(16, 500);
      // Worker 7 lands on shard 0, worker 8 on shard 1.
      const res = await r.client.sendEvents([stored(7, 1, prompt.slice(0, 8), 4, 1000n), stored(8, 1, prompt.slice(0, 12), 4, 2000n)]);
      assert.equal(res.applied, 2n);
      assert.equal((await r.client.findBestWorker({ tokenIds: prompt })).worker?.workerId, 8n);
      assert.equal(await probe("/readyz"), "200 ready\n");
      assert.equal(await probe("/healthz"), "200 ok\n");

      // A stream open across the death: its first message applies, the one after fails.
      let streamDone!: Promise<unknown>;
      const stream = await new Promise<grpc.ClientWritableStream<unknown>>((resolve) => {
        streamDone = new Promise((settle) => {
          const raw = (r.client as unknown as { raw: Record<string, Function> }).raw;
          resolve(raw.ingestKvEvents((err: grpc.ServiceError | null, ok: unknown) => settle(err ?? ok)) as grpc.ClientWritableStream<unknown>);
        });
      });
      stream.write(create(IngestKvEventsRequestSchema, { events: [stored(8, 2, prompt.slice(12, 16), 4, 2003n, { parent: 2002n })] }));
      for (let i = 0; i < 200 && (await r.client.listWorkers()).workers.find((w) => w.worker?.workerId === 8n)?.lastEventId !== 2n; i++) {
        await new Promise((res) => setTimeout(res, 10));
      }

      await threads[1].terminate();
      const unavailable = (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.UNAVAILABLE, err.details);
        assert.match(err.details, /index shard 1 is down \(its thread exited with code 1\)/);
        return true;
      };
      stream.write(create(IngestKvEventsRequestSchema, { events: [stored(8, 3, tokens(4, 900), 4, 2004n, { parent: 2003n })] }));
      stream.end();
      const ended = (await streamDone) as grpc.ServiceError;
      unavailable(ended);
      assert.match(ended.details, /^message 1: .*; 1 events applied before this message$/);
      await assert.rejects(r.client.findBestWorker({ tokenIds: prompt }), unavailable);
      await assert.rejects(r.client.sendEvents([stored(8, 3, tokens(4, 900), 4, 2004n, { parent: 2003n })]), unavailable);
      // Events of a worker on the live shard still apply (the router is going down, but nothing it acknowledges is lost).
      assert.equal((await r.client.sendEvents([stored(7, 2, prompt.slice(8, 12), 4, 1002n, { parent: 1001n })])).applied, 1n);

      assert.match(await probe("/readyz"), /^503 not ready: index shard 1 is down/);
      assert.match(await probe("/healthz"), /^503 not live: index shard 1 is down/);
      assert.match(await probe("/metrics"), /^kvrouter_index_shards_down 1$/m);
      assert.equal(await healthStatus(r.address), 2, "grpc.health.v1 NOT_SERVING");
      assert.ok(failed instanceof IndexShardDownError, "server.failed settled: the CLI stops and exits 1 on it");
    } finally {
      await r.close(); // must not wait for the dead shard
    }
  });
});

/** The router's overall status from the standard gRPC health service (1 SERVING, 2 NOT_SERVING). */
async function healthStatus(address: string): Promise<number> {
  const { protoPath } = await import("grpc-health-check");
  const protoLoader = await import("@grpc/proto-loader");
  const def = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath)) as unknown as {
    grpc: { health: { v1: { Health: new (a: string, c: grpc.ChannelCredentials) => grpc.Client & Record<string, Function> } } };
  };
  const client = new def.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  try {
    const res = await new Promise<{ status: number }>((resolve, reject) =>
      client.check({ service: "" }, (err: Error | null, v: { status: number }) => (err ? reject(err) : resolve(v))),
    );
    return res.status;
  } finally {
    client.close();
  }
}
