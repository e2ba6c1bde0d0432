// Siblings of the issue-10 faults on the surfaces added beside them: Dynamo's
// ZMQ event plane and discovery, the lower storage tiers, the HTTP port.
// Each drives the real server through a public interface: a real ZeroMQ
// publisher (test/python/dynamo_zmq_publisher.py, sending exactly Dynamo's
// frames), Dynamo's file store in a real directory, gRPC, HTTP.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { StorageTier } from "../gen/kvrouter/v1/router_pb.js";
import type { DynamoDiscovery } from "../src/discovery/dynamoDiscovery.js";
import { localBlockHash } from "../src/hashing/blockHash.js";
import type { DynamoZmqEventPlane } from "../src/sources/dynamoZmq/dynamoZmqSource.js";
import { COMPONENT, ENDPOINT, NS, DynamoZmqPublisher, cardValue, channelValue, instanceValue, routerStoredEvent, dynamoInsert, fileDiscoveryWithZmqPlane } from "./support/dynamo.js";
import { removed, stored } from "./support/events.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;
const routers: TestRouter[] = [];
const dirs: string[] = [];
after(async () => {
  await Promise.all(routers.map((r) => r.close()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});


async function startDynamoRouter(server: { maxWorkerRanks?: number } = {}, router: { maxDpRanks?: number } = {}) {
  const root = mkdtempSync(join(tmpdir(), "kvr-siblings-"));
  dirs.push(root);
  const sources = fileDiscoveryWithZmqPlane(root);
  const r = await startTestRouter({ blockSize: B, ...router }, { eventSources: sources, metricsPort: 0, ...server });
  routers.push(r);
  return { r, root, plane: sources[0] as DynamoZmqEventPlane, discovery: sources[1] as DynamoDiscovery };
}

const workerIds = async (r: TestRouter) => (await r.client.listWorkers()).workers.map((w) => w.worker!.workerId);

/** A Dynamo event-plane frame (version 1, u32 BE length) around raw envelope bytes. */
function frameHex(envelope: Uint8Array): string {
  const head = Buffer.alloc(5);
  head[0] = 1;
  head.writeUInt32BE(envelope.length, 1);
  return Buffer.concat([head, envelope]).toString("hex");
}

describe("hardening siblings: Dynamo's ZMQ event plane", () => {
  it("a nested-garbage envelope and a message past --max-worker-ranks are counted skips; the feed keeps applying", async () => {
    const { r, root, plane } = await startDynamoRouter({ maxWorkerRanks: 4 });
    const publisherId = 0x5157n;
    const pub = await DynamoZmqPublisher.start(publisherId);
    try {
      dynamoInsert(root, "v1/event_channels", `namespace/${NS}/component/${COMPONENT}/topic/kv-events/${publisherId.toString(16)}`, channelValue(publisherId, pub.endpoint));
      await waitFor(() => plane.publisherCount === 1, "the announced publisher is followed", 10_000);
      await waitFor(async () => {
        await pub.publishRawFrame("0900000000"); // not Dynamo's frame version: counted, skipped
        return plane.stats.malformed > 0;
      }, "the subscription is live", 10_000);
      // Let probes still in flight land before counting.
      let malformed = -1;
      await waitFor(async () => {
        const before = plane.stats.malformed;
        await new Promise((r) => setTimeout(r, 300));
        malformed = plane.stats.malformed;
        return malformed === before;
      }, "the probes have landed");
      // 10,000 nested one-element arrays (MessagePack 0x91 ... nil) as the envelope.
      const nested = Buffer.concat([Buffer.alloc(10_000, 0x91), Buffer.from([0xc0])]);
      await pub.publishRawFrame(frameHex(nested));
      await waitFor(() => plane.stats.malformed === malformed + 1, "the nested envelope is counted as malformed");

      // Five new workers for an index with four slots: refused whole, nothing applied.
      const prompt = tokens(4, 900);
      const block = [{ hash: 77n, local: localBlockHash(prompt) }];
      await pub.publish([1n, 2n, 3n, 4n, 5n].map((w) => routerStoredEvent(w, 1, block)));
      await waitFor(() => plane.stats.refused === 1, "the oversized message is refused");
      assert.deepEqual(await workerIds(r), [], "a refused message changes nothing");

      await pub.publish(routerStoredEvent(9n, 1, block));
      await waitFor(() => plane.stats.applied === 1, "a good message after them applies");
      const res = await r.client.findBestWorker({ tokenIds: prompt, explain: true });
      assert.equal(res.worker!.workerId, 9n);
      assert.equal(res.overlapBlocks, 1);
    } finally {
      await pub.stop();
    }
  });
});

describe("hardening siblings: Dynamo discovery", () => {
  it("a model card with more dp ranks than --max-dp-ranks (16 of 8) is a counted skip; the watch goes on", async () => {
    const { r, root, discovery } = await startDynamoRouter({}, { maxDpRanks: 8 });
    const huge = 0xa1n;
    dynamoInsert(root, "v1/mdc", `${NS}/${COMPONENT}/${ENDPOINT}/${huge.toString(16)}`, cardValue(huge, { start: 0, size: 16 }));
    dynamoInsert(root, "v1/instances", `${NS}/${COMPONENT}/${ENDPOINT}/${huge.toString(16)}`, instanceValue(huge));
    await waitFor(() => discovery.refused > 0, "the worker with 16 dp ranks is refused", 10_000);
    const good = 0xb2n;
    dynamoInsert(root, "v1/instances", `${NS}/${COMPONENT}/${ENDPOINT}/${good.toString(16)}`, instanceValue(good));
    await waitFor(async () => (await workerIds(r)).includes(good), "a worker registered afterwards is seen", 10_000);
    // Whichever record the store delivered first, the 16 ranks were never registered.
    const ranks = (await r.client.listWorkers()).workers.filter((w) => w.worker!.workerId === huge);
    assert.ok(ranks.length <= 1, `the refused card's ranks are not held (${ranks.length} ranks)`);
    const metric = await r.server.metrics.registry.getSingleMetric("kvrouter_discovery_refused_total")!.get();
    assert.ok(metric.values[0].value >= 1);
  });
});

describe("hardening siblings: lower tiers through dump and restore", () => {
  it("a host-tier block whose parent was removed, and one stored again after its children, are rebuilt exactly", async () => {
    const a = await startTestRouter({ blockSize: B });
    const b = await startTestRouter({ blockSize: B });
    routers.push(a, b);
    const prompt = tokens(12, 500);
    const host = { storageTier: StorageTier.HOST_PINNED };
    await a.client.sendEvents([
      stored(1, 1, prompt, B, 10n, host),
      { ...removed(1, 2, [10n]), ...host }, // the parent goes; its children stay (Dynamo's semantics)
      stored(1, 3, prompt.slice(0, 4), B, 10n, host), // stored again: now after its children
    ]);
    await b.client.sendEvents(await a.client.dumpIndex(), true);
    const held = async (r: TestRouter) => (await r.client.listWorkers()).workers.map((w) => [w.worker!.workerId, w.hostCachedBlocks]);
    assert.deepEqual(await held(b), await held(a));
    assert.deepEqual(await held(a), [[1n, 3n]]);
    const hostOverlap = async (r: TestRouter) =>
      (await r.client.findBestWorker({ tokenIds: prompt, explain: true })).scores.map((s) => [s.worker!.workerId, s.hostOverlapBlocks]);
    assert.deepEqual(await hostOverlap(b), await hostOverlap(a));
    assert.deepEqual(await hostOverlap(a), [[1n, 3]]);
  });
});

describe("hardening siblings: the HTTP port follows --auth-reads and approximate mode", () => {
  const TOKEN = "sibling-secret";
  async function post(base: string, path: string, body: unknown, token?: string) {
    const res = await fetch(`${base}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
    await res.arrayBuffer();
    return res.status;
  }

  it("ListWorkers, explain and the scorer API need the token with --auth-reads", async () => {
    const r = await startTestRouter({ blockSize: B }, { httpPort: 0, authToken: TOKEN, authReads: true });
    routers.push(r);
    const base = `http://127.0.0.1:${r.server.httpPort}`;
    assert.equal(await post(base, "/kvrouter.v1.KvRouterService/RegisterWorker", { workerId: "1", leaseTtlSeconds: 600 }, TOKEN), 200);
    assert.equal(await post(base, "/kvrouter.v1.KvRouterService/ListWorkers", {}), 401);
    assert.equal(await post(base, "/kvrouter.v1.KvRouterService/ListWorkers", {}, TOKEN), 200);
    assert.equal(await post(base, "/kvrouter.v1.KvRouterService/FindBestWorker", { tokenIds: tokens(8), explain: true }), 401);
    assert.equal(await post(base, "/kvrouter.v1.KvRouterService/FindBestWorker", { tokenIds: tokens(8) }), 200);
    const query = { token_ids: tokens(8), model_name: "any" };
    assert.equal(await post(base, "/query", query), 401);
    assert.equal(await post(base, "/query", query, TOKEN), 200);
    assert.equal(await post(base, "/query_by_hash", { block_hashes: [1], model_name: "any" }), 401);
  });

  it("in approximate mode every FindBestWorker writes the index, so it needs the token over HTTP too", async () => {
    const r = await startTestRouter({ blockSize: B, useKvEvents: false }, { httpPort: 0, authToken: TOKEN });
    routers.push(r);
    const base = `http://127.0.0.1:${r.server.httpPort}`;
    assert.equal(await post(base, "/kvrouter.v1.KvRouterService/RegisterWorker", { workerId: "1", leaseTtlSeconds: 600 }, TOKEN), 200);
    assert.equal(await post(base, "/kvrouter.v1.KvRouterService/FindBestWorker", { tokenIds: tokens(8) }), 401);
    assert.equal((await r.client.listWorkers()).workers[0].cachedBlocks, 0n, "the refused call recorded nothing");
    assert.equal(await post(base, "/kvrouter.v1.KvRouterService/FindBestWorker", { tokenIds: tokens(8) }, TOKEN), 200);
  });
});
