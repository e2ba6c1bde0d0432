// Engine ZeroMQ feeds decoded on the index shard threads (issue 21 §3): the
// same real publishers (test/python/vllm_publisher.py, vLLM's wire format on
// real ZeroMQ sockets) feed a router whose index runs in its main thread and
// one with --indexer-shards 2, where payloads of known workers are decoded,
// hashed and applied on the shard that owns the worker. Everything the
// index holds and every counter must come out the same.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { encode } from "@msgpack/msgpack";
import type { Registry } from "prom-client";
import type { IndexEvent } from "../src/protocols/events.js";
import { ZmqEventSource } from "../src/sources/engineZmq/zmqEventSource.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";
import { type EventSpec, Publisher, type PublisherFormat, brokenBatch, storedSpec } from "./zmq.support.js";

const B = 4;
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Every series of a metric, as "label=value,...": value. */
async function series(registry: Registry, name: string): Promise<Record<string, number>> {
  const m = registry.getSingleMetric(name);
  if (!m) return {};
  const out: Record<string, number> = {};
  for (const v of (await m.get()).values) {
    const labels = Object.entries(v.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, x]) => `${k}=${x}`)
      .join(",");
    out[labels] = (out[labels] ?? 0) + v.value;
  }
  return out;
}

async function total(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const all = await series(registry, name);
  return Object.entries(all)
    .filter(([k]) => Object.entries(labels).every(([l, v]) => k.split(",").includes(`${l}=${v}`)))
    .reduce((n, [, v]) => n + v, 0);
}

/** The index as per-worker lists of events (dump order across workers follows creation, which may differ). */
function dumpOf(r: TestRouter): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  const json = (e: IndexEvent) => JSON.stringify(e, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  for (const e of r.server.router.dump()) (out[`${e.workerId}:${e.dpRank}`] ??= []).push(json(e));
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

interface Feed {
  workerId: bigint;
  format: PublisherFormat;
  pub: Publisher;
}

async function publishers(): Promise<Feed[]> {
  const feeds: Feed[] = [];
  for (const [workerId, format] of [
    [7n, "vllm-map"],
    [8n, "vllm-array"],
  ] as const) {
    const pub = await Publisher.start(format);
    cleanups.push(() => pub.stop());
    feeds.push({ workerId, format, pub });
  }
  return feeds;
}

async function routerOn(feeds: Feed[], indexerShards: number): Promise<TestRouter> {
  const source = new ZmqEventSource({
    endpoints: feeds.map((f) => ({ workerId: f.workerId, endpoint: f.pub.endpoint, dpRank: 0, engine: "vllm" as const, topic: "" })),
  });
  const router = await startTestRouter({ blockSize: B }, { eventSources: [source], indexerShards });
  cleanups.push(() => router.close());
  return router;
}

const handled = (r: TestRouter, n: number) =>
  waitFor(async () => (await total(r.server.metrics.registry, "kvrouter_zmq_frames_total")) >= n, `${n} ZeroMQ messages handled`);

/**
 * One worker's feed: chains on two dp ranks, removals, quiet skips (another
 * KV cache group, a bare LoRA id), a block size that is not the router's, an
 * offload tier, a bad event beside good ones, an undecodable payload, a
 * store whose parent is unknown (its event id is spent, so the next one is a
 * gap), a clear of one rank, and stores after all that. Returns the messages sent.
 */
async function feed(f: Feed): Promise<number> {
  const base = Number(f.workerId) * 10_000;
  const hash = (i: number) => BigInt(base + i);
  let sent = 0;
  const send = async (events: EventSpec[], dpRank = 0) => {
    await f.pub.batch(events, { dpRank });
    sent++;
  };
  const chain = (rank: number, i: number) =>
    storedSpec(tokens(B, base + 100 * rank + i * B), B, 0n, { hashes: [hash(1000 * rank + i)], parent_block_hash: i === 0 ? null : hash(1000 * rank + i - 1) });
  for (let i = 0; i < 12; i++) {
    await send([chain(0, i)], 0);
    await send([chain(1, i)], 1);
  }
  await send([{ type: "BlockRemoved", block_hashes: [hash(5), hash(999_999)], medium: "GPU" }], 0);
  await send([storedSpec(tokens(8, base + 5000), B, hash(5000), { group_idx: 1 }), chain(0, 12)], 0);
  await send([storedSpec(tokens(8, base + 5100), B, hash(5100), { lora_id: 3 }), storedSpec(tokens(8, base + 5200), B, hash(5200), { lora_name: "adapter-a", lora_id: 1 })], 0);
  await send([storedSpec(tokens(32, base + 5300), 16, hash(5300))], 0); // block size 16: refused by the shard, rejected on the main thread
  await send([storedSpec(tokens(8, base + 5400), B, hash(5400), { medium: "CPU" }), chain(0, 13)], 0); // an offload tier
  await send([{ ...storedSpec(tokens(4, base + 5500), B, hash(5500)), token_ids: ["x"] as unknown as number[] }, chain(0, 14)], 0); // a bad event
  await brokenBatch(f.pub, Buffer.from([0xc1, 0x00, 0xff]));
  sent++;
  await send([storedSpec(tokens(B, base + 5600), B, 0n, { hashes: [hash(5600)], parent_block_hash: hash(999_998) })], 0); // unknown parent
  await send([chain(0, 15)], 0); // a gap in event ids after the rejected one, as on the main thread
  await send([{ type: "AllBlocksCleared" }], 1);
  for (let i = 0; i < 4; i++) await send([chain(1, i)], 1);
  return sent;
}

describe("engine ZeroMQ feeds decoded on the index shard threads", () => {
  test("two publishers into --indexer-shards 0 and 2: dumps, cursors and every counter equal; payloads decoded on the shards", async () => {
    // The same feed, from publishers of its own, into each router (a PUB drops what a late subscriber missed).
    const feedsMain = await publishers();
    const feedsSharded = await publishers();
    const main = await routerOn(feedsMain, 0);
    const sharded = await routerOn(feedsSharded, 2);
    for (const f of [...feedsMain, ...feedsSharded]) await f.pub.waitSubscribed();
    const sent = await Promise.all([...feedsMain, ...feedsSharded].map(feed));
    await handled(main, sent[0] + sent[1]);
    await handled(sharded, sent[2] + sent[3]);

    const dump = dumpOf(main);
    assert.ok(Object.keys(dump).length === 4, `4 (worker, dp_rank) pairs: ${Object.keys(dump)}`);
    assert.deepEqual(dumpOf(sharded), dump);
    assert.deepEqual(sharded.server.router.index.blockCounts(), main.server.router.index.blockCounts());
    assert.deepEqual(sharded.server.router.index.lastEventIds(), main.server.router.index.lastEventIds());
    const m = (r: TestRouter) => r.server.metrics.registry;
    for (const name of ["kvrouter_zmq_events_total", "kvrouter_kv_events_total", "kvrouter_kv_event_anomalies_total"]) {
      assert.deepEqual(await series(m(sharded), name), await series(m(main), name), name);
    }
    const frames = await series(m(main), "kvrouter_zmq_frames_total");
    assert.deepEqual(await series(m(sharded), "kvrouter_zmq_frames_total"), frames);
    assert.equal(frames["outcome=undecodable"] - 0, 2, "the broken payloads are counted as undecodable");
    assert.ok((await total(m(main), "kvrouter_kv_event_anomalies_total", { kind: "event_id_gap" })) >= 2, "the spent event id shows as a gap");
    // Where they were decoded.
    assert.equal(await total(m(main), "kvrouter_zmq_decoded_total", { path: "shard" }), 0);
    const onShard = await total(m(sharded), "kvrouter_zmq_decoded_total", { path: "shard" });
    const refused = await total(m(sharded), "kvrouter_zmq_decoded_total", { path: "shard_refused" });
    // Per feed 37 payloads: the first of the worker decodes here (no slot yet), 6 are handed back (a new dp rank, a block
    // size, an offload tier, a bad event, the broken payload, the clear), and one that arrives while the shard's refusals
    // are redone here may decode here too, in order.
    assert.ok(onShard >= 2 * 25, `most payloads decoded on the shards (${onShard})`);
    assert.ok(refused >= 2 * 5, `the shard hands back what it cannot settle alone (${refused})`);
  });

  test("a malformed payload changes nothing on the shard and is counted as on the main thread; the feed goes on", async () => {
    const [f] = await publishers();
    const r = await routerOn([f], 2);
    await f.pub.waitSubscribed();
    const reg = r.server.metrics.registry;
    const frames = () => total(reg, "kvrouter_zmq_frames_total");
    await f.pub.batch([storedSpec(tokens(8, 10), B, 1n)]);
    await f.pub.batch([storedSpec(tokens(4, 20), B, 0n, { hashes: [3n], parent_block_hash: 2n })]);
    await handled(r, 2);
    const before = dumpOf(r);
    const undecodable = await total(reg, "kvrouter_zmq_frames_total", { outcome: "undecodable" });
    const refused = await total(reg, "kvrouter_zmq_decoded_total", { path: "shard_refused" });
    const here = await total(reg, "kvrouter_zmq_decoded_total", { path: "main" });
    const bad = [
      Buffer.from([0xc1, 0x00, 0xff]), // never valid MessagePack
      Buffer.from(encode([1.5, [["BlockStored", [9], null, tokens(4, 30), B, null, "GPU"]], 0])).subarray(0, 12), // truncated
      encode("a string, not a batch"),
    ];
    for (const payload of bad) await brokenBatch(f.pub, payload);
    await handled(r, 2 + bad.length);
    assert.deepEqual(dumpOf(r), before, "nothing changed");
    assert.equal(await total(reg, "kvrouter_zmq_frames_total", { outcome: "undecodable" }), undecodable + bad.length);
    // The first goes to the shard and is handed back; one that comes while that is redone here may decode here at once.
    const handedBack = (await total(reg, "kvrouter_zmq_decoded_total", { path: "shard_refused" })) - refused;
    assert.ok(handedBack >= 1, "the shard handed back what it could not decode");
    assert.equal(handedBack + (await total(reg, "kvrouter_zmq_decoded_total", { path: "main" })) - here, bad.length);
    const onShard = await total(reg, "kvrouter_zmq_decoded_total", { path: "shard" });
    await f.pub.batch([storedSpec(tokens(4, 40), B, 0n, { hashes: [4n], parent_block_hash: 3n })]);
    await waitFor(async () => (await frames()) >= 3 + bad.length, "the next payload");
    assert.equal(await total(reg, "kvrouter_zmq_decoded_total", { path: "shard" }), onShard + 1, "the next payload is decoded on the shard again");
    assert.equal(r.server.router.index.blockCounts().get("7:0"), 4);
    assert.equal(await total(reg, "kvrouter_kv_event_anomalies_total", { kind: "event_id_gap" }), 0, "event ids stay consecutive");
  });
});
