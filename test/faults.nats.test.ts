// A router in NATS mode SIGKILLed while events stream in and queries run:
// restarted with the same id, it reaches exactly the index of every event
// JetStream acknowledged — before, during and after its death.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { type NatsConnection, connect } from "@nats-io/transport-node";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { publishKvEvents } from "../src/sources/nats/jetstreamPublisher.js";
import { toIndexEvent } from "../src/server/convert.js";
import { type RouterProcess, spawnRouter } from "./support/cliProcess.js";
import { type NatsCluster, canonicalDump, referenceDump, startNats, syntheticEvents } from "./support/natsServer.js";
import { waitFor } from "./support/wait.js";

const ENDPOINT = "faults.backend.generate";

describe("faults in NATS mode", () => {
  let nats: NatsCluster;
  let nc: NatsConnection;
  const routers: RouterProcess[] = [];
  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.urls });
  });
  after(async () => {
    for (const r of routers) await r.stop();
    await nc.close();
    await nats.stop();
  });

  it("a router killed under load and restarted loses no acknowledged event", async () => {
    const args = ["--block-size", "4", "--grpc-port", "0", "--metrics-port", "-1", "--host", "127.0.0.1",
      "--nats-url", nats.urls, "--router-id", "kill-me", "--endpoint", ENDPOINT, "--indexer-shards", "0"];
    const events = syntheticEvents(3000, 3, 9);
    const first = await spawnRouter(args);
    routers.push(first);
    const js = jetstream(nc);

    // Queries keep running against whichever router is up.
    let current = new KvRouterClient(first.grpcAddress);
    let querying = true;
    let answered = 0;
    const queries = (async () => {
      while (querying) {
        await current.listWorkers().then(() => answered++, () => {});
        await new Promise((r) => setTimeout(r, 5));
      }
    })();

    // Every publish below is acknowledged by JetStream before the next.
    await publishKvEvents(js, ENDPOINT, events.slice(0, 1000));
    await waitFor(async () => (await current.listWorkers()).workers.length > 0, "the first router to be consuming");
    first.child.kill("SIGKILL");
    await publishKvEvents(js, ENDPOINT, events.slice(1000, 2000));
    const second = await spawnRouter(args);
    routers.push(second);
    current.close();
    current = new KvRouterClient(second.grpcAddress);
    await publishKvEvents(js, ENDPOINT, events.slice(2000));

    const want = referenceDump(events);
    let got: string[] = [];
    await waitFor(async () => {
      got = canonicalDump((await current.dumpIndex()).map((e, i) => toIndexEvent(e, 4, `dump[${i}]`, true)));
      return got.length === want.length && got.join("\n") === want.join("\n");
    }, "the restarted router to catch up", 30_000).catch(() => assert.deepEqual(got, want));
    querying = false;
    await queries;
    current.close();
    assert.ok(answered > 0, "queries were answered around the restart");
  });
});
