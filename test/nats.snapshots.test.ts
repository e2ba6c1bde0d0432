// Snapshots on a real nats-server: with --router-snapshot-threshold 10,000 a
// replica writes the index to the object store and trims the stream; a
// replica started after 100,000 events reaches the same index from
// snapshot + tail. --router-reset-states clears stream and snapshot.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { natsNames } from "../src/protocols/natsNames.js";
import { NatsEventSource, type NatsModeOptions } from "../src/sources/nats/natsSource.js";
import { publishKvEventsBulk } from "../src/sources/nats/jetstreamPublisher.js";
import { type NatsCluster, canonicalDump, referenceDump, natsSuite, syntheticEvents } from "./support/natsServer.js";
import { type TestRouter, startTestRouter } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const ENDPOINT = "snap.backend.generate";
const names = natsNames(ENDPOINT);
const TOTAL = 100_000;
const THRESHOLD = 10_000;

function options(urls: string, routerId: string, over: Partial<NatsModeOptions> = {}): NatsModeOptions {
  return {
    connect: { urls },
    endpoint: ENDPOINT,
    routerId,
    replicaSync: false,
    snapshotThreshold: THRESHOLD,
    resetStates: false,
    streamReplicas: 1,
    eventPlane: false,
    discovery: false,
    snapshotCheckMs: 200,
    ...over,
  };
}

describe("NATS snapshots", () => {
  let nats: NatsCluster;
  let nc: NatsConnection;
  const routers: TestRouter[] = [];
  const start = async (routerId: string, over: Partial<NatsModeOptions> = {}) => {
    const src = new NatsEventSource(options(nats.urls, routerId, over));
    const r = await startTestRouter({ blockSize: 4 }, { eventSources: [src] });
    routers.push(r);
    return { r, src };
  };
  natsSuite(routers, (n, c) => {
    nats = n;
    nc = c;
  });

  it("a replica started after 100,000 events reaches the same index from snapshot + tail", async (t) => {
    const events = syntheticEvents(TOTAL, 8, 5);
    const reference = referenceDump(events);
    const a = await start("snap-a");
    await publishKvEventsBulk(nc, ENDPOINT, events);
    await a.src.ingest!.caughtUp(60_000);
    const jsm = await jetstreamManager(nc);
    // The writer keeps the unsnapshotted backlog under the threshold.
    await waitFor(
      async () => (await jsm.streams.info(names.stream)).state.last_seq - (await a.src.snapshots!.seq()) <= THRESHOLD,
      "snapshot within the threshold of the stream's end",
      20_000,
    );
    const state = (await jsm.streams.info(names.stream)).state;
    assert.ok(a.src.snapshotter!.snapshotsWritten >= 1, "a snapshot was written");
    assert.ok(state.messages < TOTAL, `the stream was trimmed behind the snapshot (${state.messages} messages left)`);
    assert.deepEqual(canonicalDump(a.r.server.router.index.dump()), reference);

    const started = performance.now();
    const b = await start("snap-b", { snapshotThreshold: 0 });
    await b.src.ingest!.caughtUp(60_000);
    const ms = performance.now() - started;
    const covered = b.src.restored.seq;
    assert.ok(covered > 0 && b.src.restored.events > 0, "b restored from a snapshot");
    assert.ok(b.src.ingest!.stats.messages <= state.last_seq - covered, "b replayed only the tail after the snapshot");
    assert.deepEqual(canonicalDump(b.r.server.router.index.dump()), reference);
    t.diagnostic(
      `recovery after ${TOTAL} events: ${ms.toFixed(0)} ms (snapshot of ${b.src.restored.events} chain events at seq ${covered} loaded in ${b.src.restored.ms} ms, then ${b.src.ingest!.stats.messages} tail messages)`,
    );
  });

  it("--router-reset-states purges the stream and deletes the snapshot", async () => {
    const c = await start("snap-reset", { resetStates: true, snapshotThreshold: 0 });
    const jsm = await jetstreamManager(nc);
    assert.equal((await jsm.streams.info(names.stream)).state.messages, 0);
    assert.equal(await c.src.snapshots!.seq(), 0);
    assert.equal(c.r.server.router.index.size(), 0);
    // The stream still exists and still delivers.
    await publishKvEventsBulk(nc, ENDPOINT, syntheticEvents(10, 1, 9));
    await c.src.ingest!.caughtUp();
    assert.ok(c.r.server.router.index.size() > 0);
  });
});
