// Hardening II (issue 10) over real gRPC: inputs that killed, wedged or
// misled the router, each now a precise status that changes nothing. Every
// case is a row in docs/RELIABILITY.md.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { DumpIndexRequestSchema, type DumpIndexResponse, type KvEvent } from "../gen/kvrouter/v1/router_pb.js";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { type EventInit, removed, stored } from "./support/events.js";
import { waitFor } from "./support/wait.js";

const B = 4;
const { status } = grpc;

function code(expected: number, details?: RegExp) {
  return (err: grpc.ServiceError) => {
    assert.equal(err.code, expected, `status ${err.code} (${err.details}), expected ${expected}`);
    if (details) assert.match(err.details, details);
    return true;
  };
}

/** A stored event of one block by hash (no tokens to hash): cheap to send by the ten thousand. */
function oneBlock(workerId: number, eventId: number, blockHash: bigint, tokensHash: bigint, dpRank = 0): EventInit {
  return {
    workerId: BigInt(workerId),
    dpRank,
    eventId: BigInt(eventId),
    data: { case: "stored", value: { blocks: [{ blockHash, tokensHash }] } },
  };
}

async function state(r: TestRouter) {
  const workers = (await r.client.listWorkers()).workers.map((w) => `${w.worker!.workerId}:${w.worker!.dpRank} b=${w.cachedBlocks} e=${w.lastEventId} r=${w.registered}`);
  return { workers: workers.sort(), dump: await r.client.dumpIndex() };
}

async function scrapeText(r: TestRouter): Promise<string> {
  return r.server.metrics.registry.metrics();
}

function metricValue(text: string, line: RegExp): number {
  const m = text.split("\n").find((l) => line.test(l));
  return m === undefined ? 0 : Number(m.split(" ").pop());
}

describe("hardening: crashes and stalls over gRPC", () => {
  it("item 1: one IngestKvEvents message naming 65,537 new workers is RESOURCE_EXHAUSTED naming the limit and the flag, and applies nothing", async () => {
    const r = await startTestRouter({ blockSize: B });
    try {
      // All workers store the same block: one node, so the test measures slots, not memory.
      const events = Array.from({ length: 65_537 }, (_, i) => oneBlock(i + 1, 1, 7n, 42n));
      await assert.rejects(r.client.sendEvents(events), code(status.RESOURCE_EXHAUSTED, /65536 \(worker, dp_rank\) pairs.*--max-worker-ranks/s));
      assert.deepEqual(await state(r), { workers: [], dump: [] }, "a refused message changes nothing");
      // Exactly the limit fits; one more new pair is refused; known workers keep ingesting.
      const res = await r.client.sendEvents(events.slice(0, 65_536));
      assert.equal(res.applied, 65_536n);
      await assert.rejects(r.client.sendEvents([oneBlock(70_000, 1, 7n, 42n)]), code(status.RESOURCE_EXHAUSTED, /--max-worker-ranks/));
      assert.equal((await r.client.sendEvents([oneBlock(1, 2, 8n, 43n)])).applied, 1n);
      // Registrations are bounded the same way (the registry is a second source of candidates).
      const full = await startTestRouter({ blockSize: B }, { maxWorkerRanks: 4 });
      try {
        await full.client.registerWorker({ workerId: 1n, dpRanks: [0, 1, 2, 3] });
        await assert.rejects(full.client.registerWorker({ workerId: 2n }), code(status.RESOURCE_EXHAUSTED, /limit is 4 \(--max-worker-ranks\)/));
        await full.client.registerWorker({ workerId: 1n, dpRanks: [0, 1, 2, 3] }); // a renewal still works
      } finally {
        await full.close();
      }
    } finally {
      await r.close();
    }
  });

  it("item 1: approximate mode with the index out of slots refuses the route and records nothing", async () => {
    const r = await startTestRouter({ blockSize: B, useKvEvents: false }, { maxWorkerRanks: 2 });
    try {
      await r.client.sendEvents([oneBlock(1, 1, 7n, 42n), oneBlock(2, 1, 7n, 42n)]); // the index is full
      await r.client.registerWorker({ workerId: 3n });
      const before = await state(r);
      // Worker 3 may win (it has no load); then recording its prompt would need a third slot.
      const res = await r.client
        .findBestWorker({ tokenIds: tokens(8), requestId: "x", allowedWorkers: [{ workerId: 3n, dpRank: 0 }] })
        .then(() => "ok", (e: grpc.ServiceError) => e);
      assert.notEqual(res, "ok");
      code(status.RESOURCE_EXHAUSTED, /--max-worker-ranks/)(res as grpc.ServiceError);
      assert.deepEqual(await state(r), before);
      assert.equal((await r.client.free("x")).found, false, "the refused request was not recorded");
    } finally {
      await r.close();
    }
  });

  it("item 4: DumpIndex streams with back-pressure, at most --max-concurrent-dumps at once, and a stalled reader does not pin the index", async () => {
    const r = await startTestRouter({ blockSize: B }, { maxConcurrentDumps: 2 });
    const raw = new KvRouterClient(r.address);
    try {
      // Worker 1 holds 60,000 entries (~60 batches, far more than the transport buffers); worker 2 a few.
      const big: EventInit[] = [];
      for (let i = 0; i < 60_000; i++) big.push(oneBlock(1, i + 1, BigInt(i + 1), BigInt(1_000_000 + i)));
      for (let i = 0; i < 60_000; i += 10_000) await r.client.sendEvents(big.slice(i, i + 10_000));
      await r.client.sendEvents([stored(2, 1, tokens(8), B, 900n)]);

      const open = () =>
        (raw.raw as unknown as Record<string, Function>).dumpIndex(create(DumpIndexRequestSchema, {})) as grpc.ClientReadableStream<DumpIndexResponse>;
      const stalled = [open(), open()];
      // Each reader takes one message, then stops reading (its window fills).
      await Promise.all(stalled.map((s) => new Promise<void>((resolve) => s.once("data", () => { s.pause(); resolve(); }))));
      const third = open();
      await assert.rejects(
        new Promise((resolve, reject) => { third.on("data", () => {}); third.on("end", resolve); third.on("error", reject); }),
        code(status.RESOURCE_EXHAUSTED, /limit is 2 \(--max-concurrent-dumps\)/),
      );
      // Worker 2 goes away while the stalled dumps are still inside worker 1: they do not list it,
      // because nothing past the batch in flight was built yet.
      await r.client.deregisterWorker(2n);
      const rest: KvEvent[] = [];
      const first = stalled[0];
      const ended = new Promise<void>((resolve, reject) => { first.on("end", resolve); first.on("error", reject); });
      first.on("data", (m: DumpIndexResponse) => rest.push(...m.events));
      first.resume();
      await ended;
      assert.ok(rest.length > 40_000, `the resumed dump carried on (${rest.length} events)`);
      assert.ok(!rest.some((e) => e.workerId === 2n), "the dump was built as it was read, not up front");
      stalled[1].on("error", () => {}); // CANCELLED, as asked
      stalled[1].cancel();
      // Both slots come back (a cancelled reader releases its slot too).
      await waitFor(async () => (await r.client.dumpIndex().then(() => true, () => false)), "a dump slot is free again", 20_000);
      assert.equal((await r.client.dumpIndex()).length, 60_000);
    } finally {
      raw.close();
      await r.close();
    }
  });

  it("item 4 + disclosure: with --auth-token, DumpIndex needs the token; --auth-reads adds ListWorkers and explain", async () => {
    const token = "s3cret";
    for (const authReads of [false, true]) {
      const r = await startTestRouter({ blockSize: B }, { authToken: token, authReads });
      const bearer = new KvRouterClient(r.address, grpc.credentials.createInsecure(), {
        interceptors: [
          (options, next) =>
            new grpc.InterceptingCall(next(options), {
              start(metadata, listener, nxt) {
                metadata.set("authorization", `Bearer ${token}`);
                nxt(metadata, listener);
              },
            }),
        ],
      });
      try {
        await bearer.sendEvents([stored(1, 1, tokens(8), B, 100n)]);
        await assert.rejects(r.client.dumpIndex(), code(status.UNAUTHENTICATED));
        assert.equal((await bearer.dumpIndex()).length, 2);
        const list = r.client.listWorkers();
        const explain = r.client.findBestWorker({ tokenIds: tokens(8), explain: true });
        if (authReads) {
          await assert.rejects(list, code(status.UNAUTHENTICATED));
          await assert.rejects(explain, code(status.UNAUTHENTICATED));
          assert.equal((await bearer.listWorkers()).workers.length, 1);
        } else {
          assert.equal((await list).workers.length, 1);
          assert.equal((await explain).scores.length, 1);
        }
        // A plain query (no id, no explain) stays open either way.
        assert.equal((await r.client.findBestWorker({ tokenIds: tokens(8) })).worker!.workerId, 1n);
      } finally {
        bearer.close();
        await r.close();
      }
    }
  });
});

describe("hardening: wrong answers", () => {
  it("item 5: dump -> restore rebuilds removed parents with living children and parents stored again after their children", async () => {
    const a = await startTestRouter({ blockSize: B });
    const b = await startTestRouter({ blockSize: B });
    try {
      const prompt = tokens(12); // blocks 100, 101, 102 on worker 1
      await a.client.sendEvents([
        stored(1, 1, prompt, B, 100n),
        removed(1, 2, [100n]), // the parent goes, its children stay (Dynamo's semantics)
        stored(1, 3, prompt.slice(0, 4), B, 100n), // and comes back, now after its children in the list
        stored(2, 1, prompt, B, 200n),
        removed(2, 2, [200n]), // worker 2 is left with orphans only
      ]);
      const overlapOf = async (r: TestRouter, p: number[]) =>
        Object.fromEntries((await r.client.findBestWorker({ tokenIds: p, explain: true })).scores.map((s) => [`${s.worker!.workerId}`, s.overlapBlocks]));
      const want = await overlapOf(a, prompt);
      assert.deepEqual(want, { "1": 3, "2": 0 });
      await b.client.sendEvents(await a.client.dumpIndex(), true);
      assert.deepEqual(await overlapOf(b, prompt), want);
      assert.deepEqual((await state(b)).workers, (await state(a)).workers, "block counts and cursors survive");
      assert.deepEqual(await b.client.dumpIndex(), await a.client.dumpIndex(), "a second dump equals the first");
      // A child of an orphan still applies on both, and the cursors continue.
      const next = [stored(2, 3, tokens(4, 50), B, 300n, { parent: 202n })];
      const [ra, rb] = [await a.client.sendEvents(next), await b.client.sendEvents(next)];
      assert.deepEqual([ra.applied, rb.applied], [1n, 1n]);
      // sequence_hash is a restore-only field.
      const dumped = await a.client.dumpIndex();
      await assert.rejects(b.client.sendEvents(dumped.slice(0, 1)), code(status.INVALID_ARGUMENT, /sequence_hash is only accepted with restore/));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("item 6: in approximate mode FindBestWorker writes the index, so it needs the token even without request_id", async () => {
    const r = await startTestRouter({ blockSize: B, useKvEvents: false }, { authToken: "s3cret", metricsPort: 0 });
    try {
      const anonymous = r.client.findBestWorker({ tokenIds: tokens(16) });
      await assert.rejects(anonymous, code(status.UNAUTHENTICATED));
      const text = await scrapeText(r);
      assert.equal(metricValue(text, /^kvrouter_unauthenticated_total\{method="FindBestWorker"\}/), 1, "counted");
    } finally {
      await r.close();
    }
  });
});

describe("hardening: unbounded growth", () => {
  it("item 7: RegisterWorker with 1,000,000 dp_ranks is RESOURCE_EXHAUSTED naming --max-dp-ranks; 1,024 are fine", async () => {
    const r = await startTestRouter({ blockSize: B });
    try {
      const million = Array.from({ length: 1_000_000 }, (_, i) => i);
      await assert.rejects(r.client.registerWorker({ workerId: 1n, dpRanks: million }), code(status.RESOURCE_EXHAUSTED, /at most 1024 \(--max-dp-ranks\)/));
      assert.deepEqual((await r.client.listWorkers()).workers, []);
      await r.client.registerWorker({ workerId: 1n, dpRanks: million.slice(0, 1024) });
      assert.equal((await r.client.listWorkers()).workers.length, 1024);
    } finally {
      await r.close();
    }
  });

  it("item 8: the index's per-block worker bitsets shrink back once workers are gone", async () => {
    const fresh = await startTestRouter({ blockSize: B }, { metricsPort: 0 });
    const used = await startTestRouter({ blockSize: B }, { metricsPort: 0 });
    const bytes = async (r: TestRouter) => metricValue(await scrapeText(r), /^kvrouter_index_memory_bytes /);
    try {
      // 2,048 workers existed (one block each), then went away.
      await used.client.sendEvents(Array.from({ length: 2048 }, (_, i) => oneBlock(i + 1, 1, 1n, BigInt(i + 1))));
      for (let i = 0; i < 2048; i += 256) {
        await Promise.all(Array.from({ length: 256 }, (_, j) => used.client.deregisterWorker(BigInt(i + j + 1))));
      }
      // Now one worker stores 20,000 blocks on both routers.
      const blocks = Array.from({ length: 20_000 }, (_, i) => oneBlock(1, i + 1, BigInt(i + 1), BigInt(10_000_000 + i)));
      await fresh.client.sendEvents(blocks);
      await used.client.sendEvents(blocks);
      const [f, u] = [await bytes(fresh), await bytes(used)];
      assert.ok(f > 0, "kvrouter_index_memory_bytes is exported");
      assert.ok(u <= f * 1.5, `a router that once had 2,048 workers holds ${u} bytes for what a fresh one holds in ${f}`);
    } finally {
      await fresh.close();
      await used.close();
    }
  });

  it("item 9: active requests are capped in count and held blocks; allowed_workers in length", async () => {
    const r = await startTestRouter({ blockSize: B, maxActiveRequests: 3, maxActiveBlocks: 10 });
    try {
      await r.client.registerWorker({ workerId: 1n });
      for (const id of ["a", "b"]) await r.client.findBestWorker({ tokenIds: tokens(16), requestId: id }); // 4 blocks each
      await assert.rejects(r.client.findBestWorker({ tokenIds: tokens(16), requestId: "c" }), code(status.RESOURCE_EXHAUSTED, /limit is 10 \(--max-active-blocks\)/));
      await r.client.findBestWorker({ tokenIds: tokens(8), requestId: "c" }); // 2 more blocks fit
      await assert.rejects(r.client.findBestWorker({ tokenIds: tokens(4), requestId: "d" }), code(status.RESOURCE_EXHAUSTED, /limit is 3 \(--max-active-requests\)/));
      assert.equal((await r.client.free("d")).found, false, "the refused request was not recorded");
      await r.client.free("a");
      await r.client.findBestWorker({ tokenIds: tokens(4), requestId: "d" });
      // A query without request_id holds nothing and is never refused for load.
      await r.client.findBestWorker({ tokenIds: tokens(64) });
      const huge = Array.from({ length: 200_000 }, (_, i) => ({ workerId: BigInt(i), dpRank: 0 }));
      await assert.rejects(r.client.findBestWorker({ tokenIds: tokens(4), allowedWorkers: huge }), code(status.INVALID_ARGUMENT, /allowed_workers has 200000 entries; at most 131072/));
    } finally {
      await r.close();
    }
  });
});
