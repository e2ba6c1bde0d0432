// Hardening II (issue 10) against a real nats-server: messages that stalled
// the JetStream consumer for good or killed the process through the event
// plane, and snapshots that lost blocks. Rows in docs/RELIABILITY.md.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { IndexEvent } from "../src/protocols/events.js";
import { natsNames } from "../src/protocols/natsNames.js";
import { NatsEventSource, type NatsModeOptions } from "../src/sources/nats/natsSource.js";
import { publishKvEvents, routerEventJson } from "../src/sources/nats/jetstreamPublisher.js";
import { eventPlaneMessage } from "../src/sources/nats/corePublisher.js";
import { encodeMsgpack, stringifyJson, toRouterEvent } from "../src/protocols/routerEventCodec.js";
import { localBlockHash } from "../src/hashing/blockHash.js";
import { type NatsCluster, canonicalDump, natsSuite } from "./support/natsServer.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;
// Each test has its own endpoint (stream, event-plane subject): no test replays another's events.
const endpointOf = (test: string) => `${test}.backend.generate`;

function options(urls: string, routerId: string, over: Partial<NatsModeOptions> = {}): NatsModeOptions {
  return {
    connect: { urls },
    endpoint: endpointOf(routerId.replace(/-/g, "")),
    routerId,
    replicaSync: false,
    snapshotThreshold: 0,
    resetStates: false,
    streamReplicas: 1,
    eventPlane: true,
    discovery: false,
    ...over,
  };
}

const stored = (workerId: bigint, eventId: bigint, ext: bigint, local: bigint, parentHash?: bigint): IndexEvent => ({
  kind: "stored",
  workerId,
  dpRank: 0,
  eventId,
  parentHash,
  blocks: [{ externalHash: ext, localHash: local }],
});

/** A 10,000-deep MessagePack array: [[[[…nil…]]]] (fixarray-of-1 headers, then nil). */
function nestedMsgpack(depth: number): Uint8Array {
  const bytes = new Uint8Array(depth + 1).fill(0x91);
  bytes[depth] = 0xc0;
  return bytes;
}

describe("hardening over NATS", () => {
  let nats: NatsCluster;
  let nc: NatsConnection;
  const routers: TestRouter[] = [];
  natsSuite(routers, (n, c) => {
    nats = n;
    nc = c;
  });
  const start = async (routerId: string, router: Parameters<typeof startTestRouter>[1] = {}, over: Partial<NatsModeOptions> = {}) => {
    const src = new NatsEventSource(options(nats.urls, routerId, over));
    const r = await startTestRouter({ blockSize: B }, { eventSources: [src], ...router });
    routers.push(r);
    return { r, src };
  };

  it("item 2: a 6 KB nested JSON array on the JetStream subject is poison: counted, acked, and the next event applies", async () => {
    const { r, src } = await start("hard-json");
    const names = natsNames(endpointOf("hardjson"));
    await src.ingest!.caughtUp();
    const js = jetstream(nc);
    const before = src.ingest!.stats.malformed;
    const nested = "[".repeat(3000) + "]".repeat(3000);
    await js.publish(names.publishSubject, nested);
    // Nested inside an otherwise valid RouterEvent too (the error text used to overflow).
    await js.publish(names.publishSubject, `{"worker_id":5,"event":{"event_id":1,"data":{"stored":{"blocks":${nested}}}}}`);
    await publishKvEvents(js, endpointOf("hardjson"), [stored(5n, 1n, 11n, 12n)]);
    await src.ingest!.caughtUp();
    assert.equal(src.ingest!.stats.malformed - before, 2);
    assert.equal((await r.client.listWorkers()).workers.find((w) => w.worker!.workerId === 5n)?.cachedBlocks, 1n);
  });

  it("item 2: a 10 KB nested MessagePack message on the event plane is counted and skipped; the process keeps serving", async () => {
    const { r, src } = await start("hard-msgpack");
    const names = natsNames(endpointOf("hardmsgpack"));
    nc.publish(names.eventPlaneSubject, nestedMsgpack(10_000));
    // Nested inside a valid envelope's payload, too.
    nc.publish(names.eventPlaneSubject, encodeMsgpack({ publisher_id: 1n, sequence: 1n, published_at: 0n, topic: "kv-events", payload: nestedMsgpack(10_000) }));
    nc.publish(names.eventPlaneSubject, eventPlaneMessage(stored(6n, 1n, 21n, 22n), 1n, 2n));
    await nc.flush();
    await waitFor(() => src.eventPlaneStats.applied === 1, "the valid event-plane message applied", 30_000);
    assert.equal(src.eventPlaneStats.malformed, 2);
    assert.equal((await r.client.listWorkers()).workers.length, 1);
  });

  it("item 1: a message naming more new workers than --max-worker-ranks allows is refused whole, counted and acked (JetStream and event plane)", async () => {
    const { r, src } = await start("hard-slots", { maxWorkerRanks: 4 });
    const ENDPOINT = endpointOf("hardslots");
    const names = natsNames(ENDPOINT);
    await src.ingest!.caughtUp();
    const js = jetstream(nc);
    const five = [1n, 2n, 3n, 4n, 5n].map((w) => toRouterEvent(stored(100n + w, 1n, w, w)));
    await js.publish(names.publishSubject, stringifyJson(five)); // a list: our batch extension
    await publishKvEvents(js, ENDPOINT, [stored(200n, 1n, 1n, 2n)]);
    await src.ingest!.caughtUp();
    assert.equal(src.ingest!.stats.refused, 1);
    assert.deepEqual((await r.client.listWorkers()).workers.map((w) => w.worker!.workerId), [200n], "nothing of the refused message applied");
    nc.publish(
      names.eventPlaneSubject,
      encodeMsgpack({ publisher_id: 1n, sequence: 1n, published_at: 0n, topic: "kv-events", payload: encodeMsgpack(five) }),
    );
    nc.publish(names.eventPlaneSubject, eventPlaneMessage(stored(201n, 1n, 1n, 2n), 1n, 2n));
    await nc.flush();
    await waitFor(() => src.eventPlaneStats.applied === 1, "the next event-plane message applied", 30_000);
    assert.equal(src.eventPlaneStats.refused, 1);
    assert.equal((await r.client.listWorkers()).workers.length, 2);
    // Further JetStream messages still flow (no stall).
    await publishKvEvents(js, ENDPOINT, [stored(200n, 2n, 3n, 4n, 1n)]);
    await src.ingest!.caughtUp();
    assert.equal((await r.client.listWorkers()).workers.find((w) => w.worker!.workerId === 200n)?.cachedBlocks, 2n);
  });

  it("item 5: a replica started from a snapshot holds removed parents' children and parents stored again, exactly", async () => {
    const endpoint = "hardsnap.backend.generate";
    const over = { endpoint, snapshotThreshold: 3, snapshotCheckMs: 100, eventPlane: false };
    const a = await start("snap-a", {}, over);
    const prompt = tokens(12);
    const local = [0, 1, 2].map((i) => localBlockHash(prompt.slice(i * B, (i + 1) * B)));
    const w = 9n;
    const events: IndexEvent[] = [
      { kind: "stored", workerId: w, dpRank: 0, eventId: 1n, blocks: local.map((l, i) => ({ externalHash: 100n + BigInt(i), localHash: l })) },
      { kind: "removed", workerId: w, dpRank: 0, eventId: 2n, blockHashes: [100n] },
      stored(w, 3n, 100n, local[0]), // stored again, after its children
      { kind: "stored", workerId: 10n, dpRank: 0, eventId: 1n, blocks: local.map((l, i) => ({ externalHash: 200n + BigInt(i), localHash: l })) },
      { kind: "removed", workerId: 10n, dpRank: 0, eventId: 2n, blockHashes: [200n] }, // only orphans left
    ];
    const js = jetstream(nc);
    for (const e of events) await js.publish(natsNames(endpoint).publishSubject, routerEventJson(e));
    await a.src.ingest!.caughtUp();
    await waitFor(async () => (await a.src.snapshots!.seq()) >= events.length, "a snapshot covering every event", 20_000);
    const b = await start("snap-b", {}, over);
    assert.ok(b.src.restored.seq >= events.length, "b restored from the snapshot");
    assert.deepEqual(canonicalDump(b.r.server.router.index.dump()), canonicalDump(a.r.server.router.index.dump()));
    const overlaps = async (r: TestRouter) =>
      (await r.client.findBestWorker({ tokenIds: prompt, explain: true })).scores.map((s) => `${s.worker!.workerId}:${s.overlapBlocks}`).sort();
    assert.deepEqual(await overlaps(b.r), await overlaps(a.r));
    assert.deepEqual(await overlaps(a.r), ["10:0", "9:3"]);
    const cursors = async (r: TestRouter) => (await r.client.listWorkers()).workers.map((x) => `${x.worker!.workerId}@${x.lastEventId}/${x.cachedBlocks}`).sort();
    assert.deepEqual(await cursors(b.r), await cursors(a.r));
  });
});
