// IngestKvEvents with raw messages on index shard threads, over real gRPC: a
// message naming only known workers of one shard goes there as wire bytes
// and the shard decodes, hashes and applies it. The same streams sent to a
// router with the index on the main thread must give the same responses and
// the same index, whatever the mix: new workers (decoded on the main thread
// first), messages naming workers of two shards, clears, multimodal blocks
// and removals of unknown blocks (handed back by the shard, then decoded on
// the main thread, in order), stale and orphaned events (rejected with the
// same reasons). /metrics says which path each message took.
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import type { Worker } from "node:worker_threads";
import { IngestKvEventsRequestSchema } from "../gen/kvrouter/v1/router_pb.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { IndexShardDownError } from "../src/indexer/types.js";
import { IngestDecoder } from "../src/decoding/ingestDecoder.js";
import { stored } from "./support/events.js";
import { type Message, byWorker, fleetStreams } from "./support/eventStreams.js";
import { type TestRouter, startTestRouter } from "./support/router.js";

const B = 16;

async function ingestMessagesByPath(r: TestRouter): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${r.server.metricsPort}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^kvrouter_ingest_messages_total\{path="(\w+)"\} (\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/** Each worker's block count and last event id. */
async function workerStates(r: TestRouter): Promise<string[]> {
  return (await r.client.listWorkers()).workers.map((w) => `${w.worker?.workerId}:${w.worker?.dpRank} ${w.cachedBlocks} ${w.lastEventId}`).sort();
}

// "decode here": a raw stream's message is decoded on the main thread whenever its shard has anything
// queued (as when a shard falls behind), so both kinds of queue entries mix in every stream.
// "small rings": 2,048-word rings fill (raw messages then wait their turn instead of blocking the
// main thread) and wrap, and the bigger messages do not fit one (they take the decoded path).
const SETUPS = [
  { shards: 1 },
  { shards: 2 },
  { shards: 4 },
  { shards: 2, decodeHere: true },
  { shards: 2, ringWords: 2048 },
];
for (const { shards, decodeHere = false, ringWords } of SETUPS) {
  const how = `${decodeHere ? ", some decoded on the main thread while the shard is busy" : ""}${ringWords ? `, ${ringWords}-word rings` : ""}`;
  describe(`IngestKvEvents as raw bytes on ${shards} index shard thread(s)${how}`, () => {
    let ref: TestRouter;
    let raw: TestRouter;
    before(async () => {
      ref = await startTestRouter({ blockSize: B }, { indexerShards: 0 });
      raw = await startTestRouter({ blockSize: B }, { indexerShards: shards, metricsPort: 0, rawDecodeHerePastWords: decodeHere ? 0 : undefined, indexRingWords: ringWords });
    });
    after(async () => {
      await ref.close();
      await raw.close();
    });

    it("concurrent streams give the same responses and the same index as the main thread", async () => {
      const streams = fleetStreams(shards + (decodeHere ? 10 : 0) + (ringWords ? 20 : 0), 3, 3, 120, B);
      const [want, got] = await Promise.all([
        Promise.all(streams.map((s) => ref.client.ingestKvEvents(s))),
        Promise.all(streams.map((s) => raw.client.ingestKvEvents(s))),
      ]);
      assert.deepEqual(got, want);
      assert.ok(want.some((r) => r.rejected > 0n), "the streams include rejected events");
      assert.deepEqual(byWorker(await raw.client.dumpIndex()), byWorker(await ref.client.dumpIndex()));
      assert.deepEqual(await workerStates(raw), await workerStates(ref));
      const paths = await ingestMessagesByPath(raw);
      assert.ok(paths.shard > 0, `some messages were applied raw on a shard: ${JSON.stringify(paths)}`);
      assert.ok(paths.main > 0, "new workers and clears were decoded on the main thread");
      assert.ok(paths.shard_refused > 0, "multimodal blocks were handed back by a shard");
    });

    it("relay streams (several workers per message) give the same responses and the same index as the main thread", async () => {
      const before = await ingestMessagesByPath(raw);
      const streams = fleetStreams(40 + shards + (decodeHere ? 10 : 0) + (ringWords ? 20 : 0), 2, 8, 100, B, true);
      const [want, got] = await Promise.all([
        Promise.all(streams.map((s) => ref.client.ingestKvEvents(s))),
        Promise.all(streams.map((s) => raw.client.ingestKvEvents(s))),
      ]);
      assert.deepEqual(got, want);
      assert.deepEqual(byWorker(await raw.client.dumpIndex()), byWorker(await ref.client.dumpIndex()));
      assert.deepEqual(await workerStates(raw), await workerStates(ref));
      const paths = await ingestMessagesByPath(raw);
      if (shards > 1) assert.ok(paths.shard_split - before.shard_split > 50, `relay messages were applied in parts by the shards: ${JSON.stringify(paths)}`);
      else assert.ok(paths.shard - before.shard > 50, `relay messages were applied raw by the one shard: ${JSON.stringify(paths)}`);
      assert.ok(paths.shard_refused > before.shard_refused, "multimodal blocks were handed back");
    });

    it("a message the shard hands back is applied before the messages after it", async () => {
      // Worker 7's chain: the third message has a multimodal block (decoded on the main thread), and
      // every later message continues from it, so any reordering orphans them.
      const chain = (i: number, mm: boolean): Message => {
        const ev = stored(7, i + 1, Array.from({ length: B }, (_, t) => i * 100 + t), B, 7000n + BigInt(i), { parent: i === 0 ? undefined : 6999n + BigInt(i) });
        if (mm && ev.data?.case === "stored") ev.data.value.blocks![0].mmHashes = [1n];
        return { events: [ev] };
      };
      const messages = Array.from({ length: 40 }, (_, i) => chain(i, i === 2 || i === 20));
      const res = await raw.client.ingestKvEvents(messages);
      assert.equal(res.applied, 40n);
      assert.equal(res.rejected, 0n);
      const w = (await raw.client.listWorkers()).workers.find((x) => x.worker?.workerId === 7n)!;
      assert.equal(w.cachedBlocks, 40n);
      assert.equal(w.lastEventId, 40n);
    });
  });
}

// A relay message whose events live on several shards is prepared by each of them and committed only
// when every part is valid: one bad event on one shard's part must leave every shard as it was, and the
// stream must end with the main thread's error, exactly as with the index on the main thread.
for (const shards of [2, 4]) {
  describe(`IngestKvEvents relay messages across ${shards} index shard threads`, () => {
    const workers = [901, 902, 903, 904, 905, 906, 907, 908];
    const block = (w: number, id: number) => Array.from({ length: B }, (_, t) => (w * 97 + id * 13 + t) % 50_000);
    /** One event per worker, each continuing that worker's chain; `bad`: this worker's block has 10 tokens. */
    const relay = (id: number, bad?: number): Message => ({
      events: workers.map((w) => {
        const ev = stored(w, id, block(w, id), B, BigInt(w * 1000 + id), { parent: id === 1 ? undefined : BigInt(w * 1000 + id - 1) });
        if (w === bad && ev.data?.case === "stored") ev.data.value.blocks![0].tokenIds = ev.data.value.blocks![0].tokenIds!.slice(0, 10);
        return ev;
      }),
    });

    it("an invalid event in one shard's part: nothing of the message applies on any shard, and the error is the main thread's", async () => {
      const ref = await startTestRouter({ blockSize: B }, { indexerShards: 0 });
      const raw = await startTestRouter({ blockSize: B }, { indexerShards: shards, metricsPort: 0 });
      try {
        // Message 0 names new workers (the decoded path places them on every shard); 1-3 go in parts; 4 has the bad event (on the last worker's shard).
        const stream = [relay(1), relay(2), relay(3), relay(4), relay(5, 908), relay(6)];
        const outcome = (r: TestRouter) => r.client.ingestKvEvents(stream).then(() => "applied", (err: { code: number; details: string }) => `${err.code} ${err.details}`);
        const [want, got] = [await outcome(ref), await outcome(raw)];
        assert.match(want, /^3 message 4 events\[7\] \(worker 908 dp_rank 0 event_id 5\): stored\.blocks\[0\] has 10 token ids .*; 32 events applied before this message$/);
        assert.equal(got, want);
        // Events 1-4 of every worker, none of message 4's (the seven valid ones live on other shards).
        assert.deepEqual(await workerStates(raw), await workerStates(ref));
        assert.deepEqual(await workerStates(raw), workers.map((w) => `${w}:0 4 4`).sort());
        assert.deepEqual(byWorker(await raw.client.dumpIndex()), byWorker(await ref.client.dumpIndex()));
        const paths = await ingestMessagesByPath(raw);
        assert.ok(paths.shard_split >= 3, `messages 1-3 were applied in parts: ${JSON.stringify(paths)}`);
        assert.ok(paths.shard_refused >= 1, "message 4 (and 5, if sent before the stream ended) came back refused and went to the main thread");
        // The stream after it: the same workers go on from event 5.
        assert.equal((await raw.client.ingestKvEvents([relay(5), relay(6)])).applied, 16n);
      } finally {
        await ref.close();
        await raw.close();
      }
    });

    it("with --max-blocks the bound holds and every worker keeps its newest blocks (a message's stamps are drawn, in stream order, when it is decided)", async () => {
      const r = await startTestRouter({ blockSize: B }, { indexerShards: shards, metricsPort: 0, maxBlocks: 100 });
      try {
        const res = await r.client.ingestKvEvents(Array.from({ length: 40 }, (_, i) => relay(i + 1)));
        assert.equal(res.applied, 320n);
        assert.ok((await ingestMessagesByPath(r)).shard_split > 30);
        const held = new Map<bigint, bigint[]>();
        for (const e of await r.client.dumpIndex()) {
          if (e.data.case !== "stored") continue;
          if (!held.has(e.workerId)) held.set(e.workerId, []);
          held.get(e.workerId)!.push(...e.data.value.blocks.map((b) => b.blockHash % 1000n));
        }
        const total = [...held.values()].reduce((n, ids) => n + ids.length, 0);
        assert.ok(total <= 100 && total > 80, `the index holds ${total} entries, within the bound of 100`);
        // Each worker's blocks are its newest ones (ids up to 40, contiguous), and every worker lost about
        // as many as the others: eviction went by store stamps across shards, oldest first.
        const oldest = [...held.values()].map((ids) => {
          const sorted = ids.sort((a, b) => Number(a - b));
          assert.equal(sorted.at(-1), 40n);
          assert.equal(sorted.length, Number(40n - sorted[0] + 1n), `contiguous: ${sorted.join(",")}`);
          return Number(sorted[0]);
        });
        assert.equal(held.size, workers.length);
        assert.ok(Math.max(...oldest) - Math.min(...oldest) <= 1, `oldest blocks held: ${oldest.join(", ")}`);
      } finally {
        await r.close();
      }
    });

    it("a shard that dies at commit ends the stream UNAVAILABLE naming the message; nothing waits for it", async () => {
      const r = await startTestRouter({ blockSize: B }, { indexerShards: shards, metricsPort: 0, testOnlyIndexThrowOnEvent: { workerId: 902n, eventId: 5n } });
      try {
        // Worker 902 is on shard 1; its part of message 4 is prepared (decoding does not apply), and its shard throws applying it.
        await assert.rejects(r.client.ingestKvEvents([relay(1), relay(2), relay(3), relay(4), relay(5), relay(6), relay(7)]), (err: { code: number; details: string }) => {
          assert.equal(err.code, grpc.status.UNAVAILABLE, err.details);
          assert.match(err.details, /^message 4: index shard 1 is down \(its thread (threw|stopped): .*test-only throw on worker 902 event 5.*; 32 events applied before this message$/);
          return true;
        });
        const paths = await ingestMessagesByPath(r);
        assert.ok(paths.shard_split >= 3, `messages 1-3 were applied in parts: ${JSON.stringify(paths)}`);
        // The next stream naming the dead shard's workers fails at once, before anything is queued.
        await assert.rejects(r.client.ingestKvEvents([relay(8)]), (err: { code: number; details: string }) => err.code === grpc.status.UNAVAILABLE);
      } finally {
        await r.close();
      }
    });
  });
}

describe("relay messages in parts while a shard thread is terminated (in-process CompactIndex, 2 shards)", () => {
  it("every message settles: applied, or failed naming the dead shard; the live shard goes on", async () => {
    const threads: Worker[] = [];
    const index = await CompactIndex.create({ shards: 2, blockSize: B, onShardThread: (i, t) => (threads[i] = t) });
    try {
      // Worker 1 on shard 0, worker 2 on shard 1; each message: 16 blocks of token ids for each (hashing takes a while).
      const message = (id: number, workers = [1, 2]) =>
        toBinary(
          IngestKvEventsRequestSchema,
          create(IngestKvEventsRequestSchema, {
            events: workers.map((w) => stored(w, id, Array.from({ length: 16 * B }, (_, t) => (w * 7919 + id * 104_729 + t) % 50_000), B, BigInt(w * 100_000 + id * 100), { parent: id === 1 ? undefined : BigInt(w * 100_000 + (id - 1) * 100 + 15) })),
          }),
        );
      index.applyBatch(new IngestDecoder(B).decode(message(1))!.batch);
      const stream = index.openRawStream()!;
      const submitted = Array.from({ length: 30 }, (_, i) => stream.submit(message(i + 2)));
      assert.ok(submitted.every((p) => p !== undefined), "every message was queued in parts");
      await threads[1].terminate();
      let timer: NodeJS.Timeout | undefined;
      const outcomes = await Promise.race([
        Promise.allSettled(submitted as Promise<unknown>[]),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("a message never settled")), 20_000))),
      ]);
      clearTimeout(timer);
      let failed = 0;
      for (const o of outcomes) {
        if (o.status === "fulfilled") {
          assert.notEqual(o.value, "refused");
          assert.equal((o.value as { split: boolean }).split, true);
        } else {
          assert.ok(o.reason instanceof IndexShardDownError && o.reason.shard === 1, String(o.reason));
          failed++;
        }
      }
      assert.ok(failed > 0, "the messages after the shard died failed");
      // Outcomes in stream order: once one failed, every later one did.
      const firstFailed = outcomes.findIndex((o) => o.status === "rejected");
      assert.ok(outcomes.slice(firstFailed).every((o) => o.status === "rejected"), outcomes.map((o) => o.status[0]).join(""));
      stream.close();
      // The live shard still takes its worker's messages (nothing waits on a part it prepared).
      const live = index.openRawStream()!;
      const last = Number(index.lastEventIds().get("1:0"));
      const applied = await live.submit(message(last + 1, [1]));
      assert.ok(applied !== undefined && applied !== "refused" && applied.results[0].outcome === "applied");
      live.close();
    } finally {
      await index.close();
    }
  });
});
