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
import { after, before, describe, it } from "node:test";
import type { KvEvent } from "../gen/kvrouter/v1/router_pb.js";
import { type EventInit, removed, stored } from "./support/events.js";
import { type TestRouter, startTestRouter } from "./support/router.js";
import { seededRandom } from "../src/util/random.js";

const B = 16;

type Message = { events: EventInit[] };

/**
 * Streams for `workers` (each worker's events in one stream only, so the
 * final index does not depend on how the streams interleave): chains that
 * grow and shrink, sometimes a second worker or rank in the same message,
 * a stale or orphaned event, a clear, a multimodal block.
 */
function fleetStreams(seed: number, streams: number, workersPerStream: number, messages: number): Message[][] {
  const rand = seededRandom(seed);
  const out: Message[][] = [];
  for (let s = 0; s < streams; s++) {
    const keys = Array.from({ length: workersPerStream }, (_, i) => ({ workerId: 100 * (s + 1) + i, dpRank: i % 2 }));
    const state = keys.map(() => ({ nextId: 1, chain: [] as bigint[], nextHash: 0n }));
    const eventFor = (k: number): EventInit => {
      const { workerId, dpRank } = keys[k];
      const st = state[k];
      if (st.nextHash === 0n) st.nextHash = BigInt(workerId) * 1_000_000n;
      const r = rand();
      let id = st.nextId++;
      if (r < 0.04 && id > 2) id -= 2; // stale
      if (r < 0.1 && st.chain.length > 0) {
        // a removal of the chain's tail, sometimes of a block never stored too
        const n = 1 + Math.floor(rand() * Math.min(3, st.chain.length));
        const hashes = st.chain.splice(st.chain.length - n, n);
        if (rand() < 0.3) hashes.push(999_999_999n);
        return removed(workerId, id, hashes, dpRank);
      }
      if (r < 0.13) {
        st.chain = [];
        return { workerId: BigInt(workerId), dpRank, eventId: BigInt(id), data: { case: "cleared", value: {} } };
      }
      const blocks = 1 + Math.floor(rand() * 4);
      const orphan = r > 0.97;
      const parent = orphan ? 123n : st.chain.at(-1);
      const toks = Array.from({ length: blocks * B }, (_, i) => (workerId * 31 + Number(st.nextHash % 1000n) * 7 + i) % 50_000);
      const ev = stored(workerId, id, toks, B, st.nextHash, { parent, dpRank });
      if (rand() < 0.05 && ev.data?.case === "stored") ev.data.value.blocks![0].mmHashes = [7n];
      if (!orphan) for (let b = 0; b < blocks; b++) st.chain.push(st.nextHash + BigInt(b));
      st.nextHash += BigInt(blocks);
      return ev;
    };
    const stream: Message[] = [];
    for (let m = 0; m < messages; m++) {
      const main = Math.floor(rand() * keys.length);
      const events: EventInit[] = [];
      const n = 1 + Math.floor(rand() * 3);
      for (let e = 0; e < n; e++) events.push(eventFor(rand() < 0.15 ? Math.floor(rand() * keys.length) : main));
      stream.push({ events });
    }
    out.push(stream);
  }
  return out;
}

/** Each worker's dumped events in order (the order of workers in a dump follows creation, which concurrency may change). */
function byWorker(events: KvEvent[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const e of events) {
    const key = `${e.workerId}:${e.dpRank}`;
    if (!out.has(key)) out.set(key, []);
    out.get(key)!.push(JSON.stringify(e, (_, v) => (typeof v === "bigint" ? v.toString() : v)));
  }
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : 1)));
}

async function ingestMessagesByPath(r: TestRouter): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${r.server.metricsPort}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^kvrouter_ingest_messages_total\{path="(\w+)"\} (\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
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
      const streams = fleetStreams(shards + (decodeHere ? 10 : 0) + (ringWords ? 20 : 0), 3, 3, 120);
      const [want, got] = await Promise.all([
        Promise.all(streams.map((s) => ref.client.ingestKvEvents(s))),
        Promise.all(streams.map((s) => raw.client.ingestKvEvents(s))),
      ]);
      assert.deepEqual(got, want);
      assert.ok(want.some((r) => r.rejected > 0n), "the streams include rejected events");
      assert.deepEqual(byWorker(await raw.client.dumpIndex()), byWorker(await ref.client.dumpIndex()));
      const workers = async (r: TestRouter) =>
        (await r.client.listWorkers()).workers
          .map((w) => `${w.worker?.workerId}:${w.worker?.dpRank} ${w.cachedBlocks} ${w.lastEventId}`)
          .sort();
      assert.deepEqual(await workers(raw), await workers(ref));
      const paths = await ingestMessagesByPath(raw);
      assert.ok(paths.shard > 0, `some messages were applied raw on a shard: ${JSON.stringify(paths)}`);
      assert.ok(paths.main > 0, "new workers and clears were decoded on the main thread");
      assert.ok(paths.shard_refused > 0, "multimodal blocks were handed back by a shard");
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
