// A 2026 Dynamo fleet, end to end, against the real CLI started with a Dynamo
// pod's environment only (DYN_DISCOVERY_BACKEND, ETCD_ENDPOINTS, NATS_SERVER,
// DYN_ROUTER_WORKER_SELECTION_POLICY):
// two workers registered in a real etcd exactly as Dynamo registers them, one
// publishing Dynamo-exact MessagePack on the endpoint-scoped core-NATS subject
// (a real nats-server), the other on Dynamo's ZMQ event plane, announced in
// etcd under v1/event_channels. Dynamo workers cannot run here: the bytes come
// from test/python/dynamo_event_plane.py and dynamo_zmq_publisher.py, written
// from Dynamo's definitions (docs/dynamo.md cites each file).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type NatsConnection, connect } from "@nats-io/transport-node";
import { Etcd3 } from "etcd3";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { localBlockHash } from "../src/hashing/blockHash.js";
import { spawnRouter } from "./support/cliProcess.js";
import {
  COMPONENT,
  DynamoZmqPublisher,
  ENDPOINT,
  NS,
  channelKey,
  channelValue,
  dynamoEnvelope,
  instanceKey,
  instanceValue,
  routerStoredEvent,
} from "./support/dynamo.js";
import { type EtcdServer, startEtcd } from "./support/etcdServer.js";
import { type NatsCluster, startNats } from "./support/natsServer.js";
import { tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;
/** Where a current Dynamo worker publishes its KV events on core NATS (lib/runtime/src/discovery/mod.rs, EventScope). */
const ENDPOINT_SUBJECT = `namespace.${NS}.component.${COMPONENT}.endpoint.${ENDPOINT}.kv-events`;

describe("a Dynamo fleet: etcd discovery, the endpoint-scoped NATS plane and the ZMQ plane at once", () => {
  let etcd: EtcdServer;
  let nats: NatsCluster;
  let nc: NatsConnection;
  let client: Etcd3;
  before(async () => {
    [etcd, nats] = await Promise.all([startEtcd(), startNats()]);
    client = new Etcd3({ hosts: etcd.url });
    nc = await connect({ servers: nats.urls });
  });
  after(async () => {
    await nc?.close();
    client?.close();
    await Promise.all([etcd?.stop(), nats?.stop()]);
  });

  it("routes each prompt to the worker that published its blocks, with no kv-router-specific step", async () => {
    // Registered as Dynamo does: a lease (ETCD_LEASE_TTL), the record on it, instance_id = lease id.
    const register = async () => {
      const lease = client.lease(10);
      const instanceId = BigInt(await lease.grant());
      await lease.put(instanceKey(instanceId)).value(instanceValue(instanceId));
      return { lease, instanceId };
    };
    const [natsWorker, zmqWorker] = [await register(), await register()];
    const publisher = await DynamoZmqPublisher.start(0x2a2an);
    const channel = client.lease(10);
    await channel.put(channelKey(0x2a2an)).value(channelValue(0x2a2an, publisher.endpoint));

    const cli = await spawnRouter(["--block-size", String(B), "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"], {
      DYN_DISCOVERY_BACKEND: "etcd",
      ETCD_ENDPOINTS: etcd.url,
      NATS_SERVER: nats.urls,
      // Dynamo's own selector, by Dynamo's variable, so the host-tier credit shows in Dynamo's cost below
      // (kv-router's default, kv-adaptive, credits a cached block twice: this prompt's prefill clamps to 0).
      DYN_ROUTER_WORKER_SELECTION_POLICY: "default",
    });
    const c = new KvRouterClient(cli.grpcAddress);
    try {
      await waitFor(async () => (await c.listWorkers()).workers.length === 2, "both etcd-registered workers are seen", 20_000);

      const natsPrompt = tokens(3 * B, 61000);
      const zmqPrompt = tokens(2 * B, 62000);
      const blocksOf = (prompt: number[], first: number) =>
        Array.from({ length: prompt.length / B }, (_, i) => ({
          block_hash: String(first + i),
          tokens_hash: String(localBlockHash(prompt.slice(i * B, (i + 1) * B))),
        }));
      const [gpu, host] = [blocksOf(natsPrompt.slice(0, 2 * B), 7000), blocksOf(natsPrompt.slice(2 * B), 7002)];
      const envelope = dynamoEnvelope([
        { worker_id: String(natsWorker.instanceId), event: { event_id: 1, dp_rank: 0, data: { stored: { parent_hash: null, blocks: gpu } } } },
        {
          worker_id: String(natsWorker.instanceId),
          storage_tier: "host_pinned",
          event: { event_id: 2, dp_rank: 0, data: { stored: { parent_hash: "7001", blocks: host } } },
        },
      ]);
      const scoreOf = async (prompt: number[], worker: bigint) =>
        (await c.findBestWorker({ tokenIds: prompt, explain: true })).scores.find((s) => s.worker!.workerId === worker);
      // The subscription may not have reached the server yet: publish until the blocks show (a repeat is stale, not applied twice).
      await waitFor(async () => {
        nc.publish(ENDPOINT_SUBJECT, envelope);
        await nc.flush();
        return (await scoreOf(natsPrompt, natsWorker.instanceId))?.overlapBlocks === 2;
      }, "the NATS worker's blocks are indexed", 20_000);
      await waitFor(async () => {
        await publisher.publish(routerStoredEvent(zmqWorker.instanceId, 1, blocksOf(zmqPrompt, 8000).map((b) => ({ hash: BigInt(b.block_hash), local: BigInt(b.tokens_hash) }))));
        return (await scoreOf(zmqPrompt, zmqWorker.instanceId))?.overlapBlocks === 2;
      }, "the ZMQ worker's blocks are indexed", 20_000);

      const toNats = await c.findBestWorker({ tokenIds: natsPrompt, explain: true });
      assert.equal(toNats.worker!.workerId, natsWorker.instanceId);
      const mine = toNats.scores.find((s) => s.worker!.workerId === natsWorker.instanceId)!;
      assert.deepEqual([mine.overlapBlocks, mine.hostOverlapBlocks], [2, 1]);
      assert.equal(3 - mine.prefillBlocks, 2 + 0.75, "a host_pinned block counts 0.75 of a GPU block");
      assert.equal((await c.findBestWorker({ tokenIds: zmqPrompt })).worker!.workerId, zmqWorker.instanceId);

      // A worker whose lease ends is forgotten with its blocks.
      await natsWorker.lease.revoke();
      await waitFor(async () => (await c.listWorkers()).workers.every((w) => w.worker!.workerId !== natsWorker.instanceId), "the NATS worker is gone", 20_000);
    } finally {
      c.close();
      assert.equal(await cli.stop(), 0);
      await publisher.stop();
      await Promise.all([zmqWorker.lease.revoke(), channel.revoke(), natsWorker.lease.revoke().catch(() => undefined)]);
    }
  });
});
