// How long a new router replica takes to reach the fleet's index over NATS:
// from a snapshot + tail (--router-snapshot-threshold) against replaying the
// whole stream (no snapshots), with applying the same events in-process as
// the floor. Real nats-server on loopback.
//   KV_ROUTER_LOG=warn node --import tsx bench/natsRecovery.bench.ts   (100,000 events)
//   BENCH_SMOKE=1 node --import tsx bench/natsRecovery.bench.ts   (20,000)
import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { PrefixIndex } from "../src/indexer/prefixIndex.js";
import { ensureStream } from "../src/sources/nats/jetstreamIngest.js";
import { natsNames } from "../src/protocols/natsNames.js";
import { NatsEventSource, type NatsModeOptions } from "../src/sources/nats/natsSource.js";
import { publishKvEventsBulk } from "../src/sources/nats/jetstreamPublisher.js";
import { canonicalDump, referenceDump, startNats, syntheticEvents } from "../test/support/natsServer.js";
import { startTestRouter } from "../test/support/router.js";

const TOTAL = Number(process.env.BENCH_EVENTS ?? (process.env.BENCH_SMOKE ? 20_000 : 100_000));
const THRESHOLD = Math.max(1, Math.floor(TOTAL / 10));

const opts = (urls: string, endpoint: string, routerId: string, snapshotThreshold: number): NatsModeOptions => ({
  connect: { urls },
  endpoint,
  routerId,
  replicaSync: false,
  snapshotThreshold,
  resetStates: false,
  streamReplicas: 1,
  eventPlane: false,
  discovery: false,
  snapshotCheckMs: 200,
});

async function timeReplica(urls: string, endpoint: string, routerId: string) {
  const started = performance.now();
  const src = new NatsEventSource(opts(urls, endpoint, routerId, 0));
  const r = await startTestRouter({ blockSize: 4 }, { eventSources: [src] });
  await src.ingest!.caughtUp(300_000);
  const ms = performance.now() - started;
  const dump = canonicalDump(r.server.router.index.dump());
  await r.close();
  return { ms, dump, restored: src.restored, tail: src.ingest!.stats.messages };
}

const nats = await startNats();
const nc = await connect({ servers: nats.urls });
try {
  const events = syntheticEvents(TOTAL, 8, 5);
  const reference = referenceDump(events);

  // Floor: the same events applied in-process, no NATS.
  let t = performance.now();
  const index = new PrefixIndex();
  for (const e of events) index.apply(e);
  const floorMs = performance.now() - t;

  // With snapshots: a writer replica keeps the backlog under THRESHOLD.
  const snapEp = "benchsnap.backend.generate";
  const writerSrc = new NatsEventSource(opts(nats.urls, snapEp, "writer", THRESHOLD));
  const writer = await startTestRouter({ blockSize: 4 }, { eventSources: [writerSrc] });
  // Most events, a snapshot, then a tail of half the threshold that no snapshot covers.
  const head = TOTAL - Math.floor(THRESHOLD / 2);
  await publishKvEventsBulk(nc, snapEp, events.slice(0, head));
  await writerSrc.ingest!.caughtUp(300_000);
  const jsm = await jetstreamManager(nc);
  const stream = natsNames(snapEp).stream;
  for (let i = 0; i < 200; i++) {
    const last = (await jsm.streams.info(stream)).state.last_seq;
    if (last - (await writerSrc.snapshots!.seq()) <= THRESHOLD) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await publishKvEventsBulk(nc, snapEp, events.slice(head));
  await writerSrc.ingest!.caughtUp(300_000);
  const withSnap = await timeReplica(nats.urls, snapEp, "late-joiner");
  await writer.close();

  // Without snapshots: a replica replays the whole stream.
  const fullEp = "benchfull.backend.generate";
  await ensureStream(jsm, natsNames(fullEp), 1); // as a Dynamo worker's publisher would
  await publishKvEventsBulk(nc, fullEp, events);
  const full = await timeReplica(nats.urls, fullEp, "full-replay");

  assert.deepEqual(withSnap.dump, reference, "snapshot + tail rebuilds the reference index");
  assert.deepEqual(full.dump, reference, "full replay rebuilds the reference index");
  const line = (name: string, ms: number) => `${name.padEnd(44)} ${ms.toFixed(0).padStart(7)} ms`;
  console.log(`NATS recovery of a new replica after ${TOTAL.toLocaleString("en-US")} events (snapshot threshold ${THRESHOLD.toLocaleString("en-US")})`);
  console.log(line("snapshot + tail (start -> caught up)", withSnap.ms));
  console.log(
    `  snapshot: ${withSnap.restored.events} chain events at seq ${withSnap.restored.seq}, loaded in ${withSnap.restored.ms} ms; tail ${withSnap.tail} messages`,
  );
  console.log(line("full stream replay, no snapshot (baseline)", full.ms));
  console.log(line("in-process apply of all events (floor)", floorMs));
  console.log(`speed-up of snapshot + tail over full replay: ${(full.ms / withSnap.ms).toFixed(1)}x`);
} finally {
  await nc.close();
  await nats.stop();
}
