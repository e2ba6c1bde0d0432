// Dynamo discovery over a real etcd (Debian's etcd-server on loopback): a
// worker registered exactly as Dynamo registers it (a lease, and its JSON
// record under v1/instances) is routed to with no kv-router-specific step, and
// forgotten with its blocks when its lease ends; a KV event publisher
// announced under v1/event_channels (Dynamo's ZMQ event plane, played by
// test/python/dynamo_zmq_publisher.py) is followed as it comes and goes.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Etcd3 } from "etcd3";
import { dynamoDiscoverySources } from "../src/cli/discoveryFlags.js";
import { DynamoDiscovery } from "../src/discovery/dynamoDiscovery.js";
import { dynamoEndpoint } from "../src/discovery/dynamoRecords.js";
import { EtcdStore } from "../src/discovery/etcdStore.js";
import { localBlockHash } from "../src/hashing/blockHash.js";
import type { DynamoZmqEventPlane } from "../src/sources/dynamoZmq/dynamoZmqSource.js";
import {
  COMPONENT,
  DynamoZmqPublisher,
  ENDPOINT,
  NS,
  cardKey,
  cardValue,
  channelKey,
  channelValue,
  instanceKey,
  instanceValue,
  routerStoredEvent,
} from "./support/dynamo.js";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { spawnCli, spawnRouter } from "./support/cliProcess.js";
import { type EtcdServer, startEtcd } from "./support/etcdServer.js";
import { stored } from "./support/events.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;

async function startRouter(etcd: EtcdServer, zmqEventPlane = false) {
  const sources = dynamoDiscoverySources({
    backend: "etcd",
    endpoint: `${NS}.${COMPONENT}.${ENDPOINT}`,
    etcdEndpoints: [etcd.url],
    fileKvRoot: "",
    fileKvTtlMs: 10_000,
    workerLeaseMs: 1_000,
    zmqEventPlane,
  });
  const r = await startTestRouter({ blockSize: B }, { eventSources: sources, metricsPort: 0 });
  const discovery = sources[sources.length - 1] as DynamoDiscovery;
  const plane = zmqEventPlane ? (sources[0] as DynamoZmqEventPlane) : undefined;
  return { r, discovery, plane };
}

async function workerIds(r: TestRouter): Promise<bigint[]> {
  return (await r.client.listWorkers()).workers.map((w) => w.worker!.workerId);
}

async function metric(r: TestRouter, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const m = await r.server.metrics.registry.getSingleMetric(name)?.get();
  return m?.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value;
}

/** Registers like Dynamo: grant a lease (ETCD_LEASE_TTL, 10 s), then put the record on it; instance_id = lease id. */
async function registerLikeDynamo(client: Etcd3, ep = ENDPOINT) {
  const lease = client.lease(10);
  const instanceId = BigInt(await lease.grant());
  await lease.put(instanceKey(instanceId, ep)).value(instanceValue(instanceId, ep));
  return { lease, instanceId };
}

describe("Dynamo discovery over etcd", () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  const routers: TestRouter[] = [];
  before(async () => {
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.url });
  });
  after(async () => {
    for (const r of routers) await r.close().catch(() => undefined);
    client?.close();
    await etcd?.stop();
  });

  it("routes to a worker registered as Dynamo registers it, and forgets it with its blocks when its lease ends", async () => {
    const { lease, instanceId } = await registerLikeDynamo(client);
    const { r } = await startRouter(etcd);
    routers.push(r);
    await waitFor(async () => (await workerIds(r)).includes(instanceId), "the registered worker is listed");
    const res = await r.client.findBestWorker({ tokenIds: tokens(8) });
    assert.equal(res.worker!.workerId, instanceId, "the only worker gets the request");

    // Events for it (over gRPC here), then a second worker that appears while the router runs.
    const prompt = tokens(8, 500);
    await r.client.sendEvents([{ ...stored(0, 1, prompt, B, 0xabc0n), workerId: instanceId }]);
    const other = await registerLikeDynamo(client);
    await waitFor(async () => (await workerIds(r)).includes(other.instanceId), "a worker registered later is seen");
    const routed = await r.client.findBestWorker({ tokenIds: prompt });
    assert.equal(routed.worker!.workerId, instanceId, "the cached worker wins");

    await lease.revoke(); // the worker's process ends: etcd deletes its key with the lease
    await waitFor(async () => !(await workerIds(r)).includes(instanceId), "the worker is gone");
    const after = await r.client.findBestWorker({ tokenIds: prompt, explain: true });
    assert.equal(after.worker!.workerId, other.instanceId);
    assert.equal(r.server.router.index.workers().some((w) => w.workerId === instanceId), false, "its blocks went with it");
    await other.lease.revoke();
    await waitFor(async () => (await workerIds(r)).length === 0, "the second worker is gone");
  });

  it("takes a worker's data-parallel ranks from its model card (v1/mdc)", async () => {
    const { r } = await startRouter(etcd);
    routers.push(r);
    const lease = client.lease(10);
    const instanceId = BigInt(await lease.grant());
    await lease.put(cardKey(instanceId)).value(cardValue(instanceId, { start: 2, size: 3 }));
    await lease.put(instanceKey(instanceId)).value(instanceValue(instanceId));
    const ranks = async () =>
      (await r.client.listWorkers()).workers.filter((w) => w.worker!.workerId === instanceId).map((w) => w.worker!.dpRank).sort();
    await waitFor(async () => (await ranks()).join() === "2,3,4", "ranks 2, 3 and 4 listed");
    // The card's engine sizes reach the router, as RegisterWorker's do (its queue threshold and kv-adaptive read them).
    const states = r.server.router.candidateStates().filter((c) => c.key.startsWith(`${instanceId}:`));
    assert.deepEqual(
      states.map((c) => c.capacity),
      [2, 3, 4].map(() => ({ maxNumBatchedTokens: 8192, totalKvBlocks: 1024, maxNumSeqs: 256 })),
    );
    await lease.revoke();
    await waitFor(async () => (await ranks()).length === 0, "gone with its lease");
  });

  it("says once when a model card's enable_eagle differs from the router's --eagle (requests would hash in other windows)", async () => {
    const { r, discovery } = await startRouter(etcd);
    routers.push(r);
    const lease = client.lease(10);
    const instanceId = BigInt(await lease.grant());
    await lease.put(cardKey(instanceId)).value(cardValue(instanceId, { start: 0, size: 1 }, true));
    await lease.put(instanceKey(instanceId)).value(instanceValue(instanceId));
    await waitFor(async () => (await r.client.listWorkers()).workers.some((w) => w.worker!.workerId === instanceId), "the worker is still routed to");
    assert.equal(discovery.eagleMismatches, 1);
    await lease.revoke();
  });

  it("skips and counts a record that is not JSON; the other workers are still seen", async () => {
    const { r, discovery } = await startRouter(etcd);
    routers.push(r);
    await client.put(instanceKey(0xbadn)).value("{not json");
    await client.put(instanceKey(0xbad2n)).value(`{"type":"Endpoint","namespace":"${NS}"}`);
    const good = await registerLikeDynamo(client);
    await waitFor(async () => (await workerIds(r)).includes(good.instanceId), "the good worker is seen");
    await waitFor(() => discovery.malformed.instance === 2, "both bad records counted");
    assert.deepEqual(await workerIds(r), [good.instanceId]);
    assert.equal(await metric(r, "kvrouter_discovery_malformed_total", { kind: "instance" }), 2);
    // Instances of other endpoints are not this router's workers.
    const elsewhere = await registerLikeDynamo(client, "prefill");
    await client.put(instanceKey(0xbadn)).value(instanceValue(0xbadn)); // fixed: now valid
    await waitFor(async () => (await workerIds(r)).includes(0xbadn), "the fixed record is seen");
    assert.equal((await workerIds(r)).includes(elsewhere.instanceId), false);
    await client.delete().prefix("v1/instances/");
    await good.lease.revoke();
    await elsewhere.lease.revoke();
    await waitFor(async () => (await workerIds(r)).length === 0, "all gone");
  });

  it("follows a KV event publisher announced in v1/event_channels (Dynamo's ZMQ event plane)", async () => {
    const { r, plane } = await startRouter(etcd, true);
    routers.push(r);
    const worker = await registerLikeDynamo(client);
    const publisherId = 0x1f2e3d4c5b6a7n;
    const pub = await DynamoZmqPublisher.start(publisherId);
    try {
      const channelLease = client.lease(10);
      await channelLease.put(channelKey(publisherId)).value(channelValue(publisherId, pub.endpoint));
      await waitFor(() => plane!.publisherCount === 1, "the announced publisher is followed");
      // ZeroMQ drops what a PUB sends before the subscription reaches it: probe until one arrives.
      await waitFor(async () => {
        await pub.publishRawFrame("0900000000"); // frame version 9: not Dynamo's, counted and skipped
        return plane!.stats.malformed > 0;
      }, "the subscription is live");
      const prompt = tokens(8, 7000);
      const blocks = [0, 1].map((i) => ({ hash: 0xfff0_0000_0000_0000n + BigInt(i), local: localBlockHash(prompt.slice(i * B, (i + 1) * B)) }));
      await pub.publish(routerStoredEvent(worker.instanceId, 1, blocks));
      await waitFor(() => plane!.stats.applied === 1, "the event applied");
      const res = await r.client.findBestWorker({ tokenIds: prompt, explain: true });
      assert.equal(res.worker!.workerId, worker.instanceId);
      assert.equal(res.scores.find((s) => s.worker!.workerId === worker.instanceId)!.overlapBlocks, 2);
      assert.equal(await metric(r, "kvrouter_dynamo_zmq_messages_total", { outcome: "applied" }), 1);

      await channelLease.revoke(); // the publisher goes: the router stops following it
      await waitFor(() => plane!.publisherCount === 0, "the publisher is dropped");
    } finally {
      await pub.stop();
      await worker.lease.revoke();
    }
  });

  it("the CLI started with a Dynamo pod's environment (DYN_DISCOVERY_BACKEND, ETCD_ENDPOINTS) sees the workers", async () => {
    const worker = await registerLikeDynamo(client);
    const cli = await spawnRouter(["--block-size", "4", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"], {
      DYN_DISCOVERY_BACKEND: "kv_store",
      ETCD_ENDPOINTS: etcd.url,
      DYN_NAMESPACE: NS, // meant for other Dynamo components: ignored
    });
    const c = new KvRouterClient(cli.grpcAddress);
    try {
      await waitFor(async () => (await c.listWorkers()).workers.some((w) => w.worker!.workerId === worker.instanceId), "worker seen by the CLI", 20_000);
    } finally {
      c.close();
      assert.equal(await cli.stop(), 0);
      await worker.lease.revoke();
    }
  });

  it("refuses Dynamo backends it cannot read, saying so (and kubernetes without a selector)", async () => {
    const mem = spawnCli(["--block-size", "4"], { DYN_DISCOVERY_BACKEND: "mem" });
    assert.equal(await mem.exited, 2, "a usage error");
    assert.match(mem.out.stderr, /"mem": .*no other process/);
    const kubernetes = spawnCli(["--block-size", "4"], { DYN_DISCOVERY_BACKEND: "kubernetes" });
    assert.equal(await kubernetes.exited, 2, "a usage error");
    assert.match(kubernetes.out.stderr, /DYN_DISCOVERY_BACKEND\) needs --k8s-selector or --k8s-inference-pool/);
  });

  it("keeps serving what it knew while etcd is down, reports it on /metrics, and resyncs when etcd is back", async () => {
    const { r } = await startRouter(etcd);
    routers.push(r);
    const worker = await registerLikeDynamo(client);
    await waitFor(async () => (await workerIds(r)).includes(worker.instanceId), "worker seen");
    assert.equal(await metric(r, "kvrouter_discovery_up", { backend: "etcd" }), 1);

    await etcd.kill();
    await waitFor(async () => (await metric(r, "kvrouter_discovery_up", { backend: "etcd" })) === 0, "outage reported", 20_000);
    const res = await r.client.findBestWorker({ tokenIds: tokens(8) });
    assert.equal(res.worker!.workerId, worker.instanceId, "still routed to while etcd is down");
    // Leases outlive the router's own: the worker is still there after several router lease periods.
    await new Promise((res) => setTimeout(res, 2_500));
    assert.deepEqual(await workerIds(r), [worker.instanceId]);

    await etcd.restart();
    await waitFor(async () => (await metric(r, "kvrouter_discovery_up", { backend: "etcd" })) === 1, "etcd back", 30_000);
    assert.ok(((await metric(r, "kvrouter_discovery_reconnects_total", {})) ?? 0) >= 1);
    // Changes after the outage are seen again.
    const late = await registerLikeDynamo(client);
    await waitFor(async () => (await workerIds(r)).includes(late.instanceId), "a worker registered after the outage", 20_000);
    await worker.lease.revoke().catch(() => undefined);
    await late.lease.revoke();
    await waitFor(async () => (await workerIds(r)).length === 0, "both gone", 20_000);
  });
});

describe("etcd discovery: big stores, idle and hung watches", () => {
  let etcd: EtcdServer;
  let client: Etcd3;
  before(async () => {
    // Values up to 8 MiB (etcd's default is 1.5 MiB): room for the 5 MB model card below; keepalive pings
    // as often as every 100 ms (etcd's default refuses them more often than every 5 s).
    etcd = await startEtcd(["--max-request-bytes", String(8 * 1024 * 1024), "--grpc-keepalive-min-time", "100ms"]);
    client = new Etcd3({ hosts: etcd.url, grpcOptions: { "grpc.max_receive_message_length": 64 * 1024 * 1024 } });
  });
  after(async () => {
    client?.close();
    await etcd?.stop();
  });

  it("syncs a store larger than one gRPC message (4 MiB) and a 5 MB model card, before and after it starts", async (t) => {
    t.after(() => client.delete().prefix("v1/"));
    // 1,000 instance records of ~5 KB: 5 MB under v1/instances, more than etcd can answer in one range message.
    const padding = `,"padding":"${"x".repeat(5_000)}"}`;
    const ids = Array.from({ length: 1_000 }, (_, i) => 0x5_0000n + BigInt(i));
    for (let i = 0; i < ids.length; i += 100) {
      await Promise.all(ids.slice(i, i + 100).map((id) => client.put(instanceKey(id)).value(instanceValue(id).replace(/}$/, padding))));
    }
    // A model card with a 5 MB chat template, whose ranks (2 and 3) show it was read.
    const bigCard = (id: bigint) => cardValue(id, { start: 2, size: 2 }).replace('"display_name"', `"chat_template":"${"y".repeat(5_000_000)}","display_name"`);
    const carded = 0x6_0000n;
    await client.put(cardKey(carded)).value(bigCard(carded));
    await client.put(instanceKey(carded)).value(instanceValue(carded));

    const { r } = await startRouter(etcd);
    t.after(() => r.close());
    const ranksOf = async (id: bigint) =>
      (await r.client.listWorkers()).workers.filter((w) => w.worker!.workerId === id).map((w) => w.worker!.dpRank).sort().join();
    await waitFor(async () => new Set(await workerIds(r)).size === ids.length + 1, "every worker in the store is seen", 30_000);
    assert.equal(await ranksOf(carded), "2,3", "the 5 MB card's ranks");
    assert.equal(await metric(r, "kvrouter_discovery_up", { backend: "etcd" }), 1);
    // Through the watch too: a 5 MB card written while the router runs.
    const later = 0x6_0001n;
    await client.put(cardKey(later)).value(bigCard(later));
    await client.put(instanceKey(later)).value(instanceValue(later));
    await waitFor(async () => (await ranksOf(later)) === "2,3", "a 5 MB card written later is seen");
    assert.equal(await metric(r, "kvrouter_discovery_reconnects_total", {}), 0, "never reconnected");

    await client.delete().prefix("v1/");
    await waitFor(async () => (await workerIds(r)).length === 0, "all gone", 30_000);
  });

  /** A router whose etcd calls time out after `callTimeoutMs` and whose client pings etcd after 300 ms of quiet (answer due within callTimeoutMs). */
  async function startQuickRouter(callTimeoutMs: number) {
    const discovery = new DynamoDiscovery(new EtcdStore({ endpoints: [etcd.url], callTimeoutMs, keepaliveMs: 300 }), {
      endpoint: dynamoEndpoint(`${NS}.${COMPONENT}.${ENDPOINT}`),
      leaseMs: 1_000,
    });
    return startTestRouter({ blockSize: B }, { eventSources: [discovery], metricsPort: 0 });
  }

  it("keeps its watch while idle for longer than the etcd call deadline: no reconnect, discovery_up stays 1", async (t) => {
    const callTimeoutMs = 1_000; // the default is 5 s; the deadline must not apply to the watch stream at all
    const r = await startQuickRouter(callTimeoutMs);
    t.after(() => r.close());
    const up = () => metric(r, "kvrouter_discovery_up", { backend: "etcd" });
    const reconnects = () => metric(r, "kvrouter_discovery_reconnects_total", {});
    await waitFor(async () => (await up()) === 1, "connected", 20_000); // a loaded machine may miss the first deadline
    const before = await reconnects();
    await new Promise((res) => setTimeout(res, 3 * callTimeoutMs)); // with keepalive pings every 300 ms meanwhile
    assert.equal(await reconnects(), before, "the watch was never re-established");
    assert.equal(await up(), 1);
    // The same watch still delivers.
    const worker = await registerLikeDynamo(client);
    await waitFor(async () => (await workerIds(r)).includes(worker.instanceId), "a worker registered after the idle time is seen");
    await worker.lease.revoke();
    await waitFor(async () => (await workerIds(r)).length === 0, "gone with its lease");
    assert.equal(await reconnects(), before);
  });

  it("notices a hung etcd on its idle watch (keepalive pings), keeps routing, and resyncs when etcd answers again", async (t) => {
    t.after(() => etcd.resume()); // first: nothing below can close while etcd is frozen
    const r = await startQuickRouter(1_000);
    t.after(() => r.close());
    const up = () => metric(r, "kvrouter_discovery_up", { backend: "etcd" });
    const known = 0x7_0000n;
    await client.put(instanceKey(known)).value(instanceValue(known));
    t.after(() => client.delete().prefix("v1/"));
    await waitFor(async () => (await workerIds(r)).includes(known) && (await up()) === 1, "the worker is seen", 20_000);

    etcd.pause(); // connections stay open, nothing answers: only a ping can tell
    await waitFor(async () => (await up()) === 0, "the hung etcd is noticed", 20_000);
    assert.equal((await r.client.findBestWorker({ tokenIds: tokens(8) })).worker!.workerId, known, "still routed to");
    etcd.resume();
    await waitFor(async () => (await up()) === 1, "etcd answers again", 30_000);
    const later = 0x7_0001n;
    await client.put(instanceKey(later)).value(instanceValue(later));
    await waitFor(async () => (await workerIds(r)).includes(later), "a worker written afterwards is seen", 20_000);
  });
});
