// A 3-node NATS cluster on loopback (JetStream, R3 stream and consumers):
// one node is killed mid-stream; the routers reconnect, keep answering and
// lose no event (their indexes equal the reference afterwards).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { type NatsConnection, connect } from "@nats-io/transport-node";
import { NatsEventSource } from "../src/sources/nats/natsSource.js";
import { publishKvEvents } from "../src/sources/nats/jetstreamPublisher.js";
import { type NatsCluster, canonicalDump, referenceDump, startCluster, syntheticEvents } from "./support/natsServer.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";

const ENDPOINT = "clu.backend.generate";

describe("NATS cluster failover", () => {
  let cluster: NatsCluster;
  let nc: NatsConnection;
  const routers: TestRouter[] = [];
  before(async () => {
    cluster = await startCluster(3);
    nc = await connect({ servers: cluster.urls.split(","), maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  });
  after(async () => {
    for (const r of routers) await r.close().catch(() => undefined);
    await nc?.close().catch(() => undefined);
    await cluster?.stop();
  });

  it("kill one node mid-stream: routers reconnect, keep answering, lose no event", async (t) => {
    const start = async (routerId: string) => {
      const src = new NatsEventSource({
        connect: { urls: cluster.urls },
        endpoint: ENDPOINT,
        routerId,
        replicaSync: true,
        snapshotThreshold: 0,
        resetStates: false,
        streamReplicas: 3,
        eventPlane: false,
        discovery: true,
      });
      const r = await startTestRouter({ blockSize: 4 }, { eventSources: [src] });
      routers.push(r);
      return { r, src };
    };
    const a = await start("clu-a");
    const b = await start("clu-b");
    const events = syntheticEvents(1500, 3, 21);
    const js = jetstream(nc);
    await publishKvEvents(js, ENDPOINT, events.slice(0, 500));

    // Kill the node router a is connected to (b may be on it too).
    const victimName = a.src.nc!.info!.server_name;
    const victim = cluster.nodes.find((n) => n.name === victimName)!;
    assert.ok(victim, `router a is connected to a known node (${victimName})`);
    const publishing = publishKvEvents(js, ENDPOINT, events.slice(500));
    await new Promise((r) => setTimeout(r, 50));
    await victim.kill();
    t.diagnostic(`killed ${victim.name} while publishing`);

    // Routers keep answering gRPC calls while NATS fails over.
    let answered = 0;
    for (let i = 0; i < 10; i++) {
      for (const x of [a, b]) {
        const res = await x.r.client.findBestWorker({ tokenIds: tokens(16, i * 100) });
        assert.ok(res.worker, "a decision is returned");
        answered++;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(answered, 20);
    await publishing;

    for (const x of [a, b]) await x.src.ingest!.caughtUp(30_000);
    const reference = referenceDump(events);
    assert.deepEqual(canonicalDump(a.r.server.router.index.dump()), reference);
    assert.deepEqual(canonicalDump(b.r.server.router.index.dump()), reference);
    assert.notEqual(a.src.nc!.info!.server_name, victimName, "router a reconnected to another node");
    t.diagnostic(
      `after failover: a filled ${a.src.ingest!.stats.gapFilled} gap messages, skipped ${a.src.ingest!.stats.duplicates} redeliveries; ` +
        `b filled ${b.src.ingest!.stats.gapFilled}, skipped ${b.src.ingest!.stats.duplicates}`,
    );
  });
});
