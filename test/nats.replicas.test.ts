// Router replicas on one NATS server: the same stream builds the same index in
// each, and with --router-replica-sync they score against the same load, so
// at temperature 0 they make the same decisions.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { NatsConnection } from "@nats-io/transport-node";
import { toIndexEvent } from "../src/server/convert.js";
import { hashPrompt } from "../src/hashing/blockHash.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { NatsEventSource, type NatsModeOptions } from "../src/sources/nats/natsSource.js";
import { publishKvEventsBulk } from "../src/sources/nats/jetstreamPublisher.js";
import { seededRandom } from "../src/util/random.js";
import { type NatsCluster, canonicalDump, referenceDump, natsSuite, syntheticEvents } from "./support/natsServer.js";
import { type TestRouter, startTestRouter } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;
const ENDPOINT = "rep.backend.generate";

function options(urls: string, routerId: string, replicaSync: boolean, endpoint = ENDPOINT): NatsModeOptions {
  return {
    connect: { urls },
    endpoint,
    routerId,
    replicaSync,
    snapshotThreshold: 0,
    resetStates: false,
    streamReplicas: 1,
    eventPlane: false,
    discovery: false,
  };
}

/** DumpIndex over gRPC, as IndexEvents. */
async function dumpOverGrpc(r: TestRouter): Promise<IndexEvent[]> {
  return (await r.client.dumpIndex()).map((e, i) => toIndexEvent(e, B, `dump[${i}]`, true));
}

describe("NATS replicas", () => {
  let nats: NatsCluster;
  let nc: NatsConnection;
  const routers: TestRouter[] = [];
  const start = async (routerId: string, sync: boolean, seed = 7, endpoint = ENDPOINT) => {
    const src = new NatsEventSource(options(nats.urls, routerId, sync, endpoint));
    const r = await startTestRouter({ blockSize: B, temperature: 0 }, { eventSources: [src], seed });
    routers.push(r);
    return { r, src };
  };
  natsSuite(routers, (n, c) => {
    nats = n;
    nc = c;
  });

  it("two replicas fed by the same stream build identical indexes (DumpIndex)", async () => {
    const a = await start("dump-a", false);
    const events = syntheticEvents(5000, 4, 3);
    await publishKvEventsBulk(nc, ENDPOINT, events.slice(0, 2500));
    const b = await start("dump-b", false); // joins mid-stream: replays from the start
    await publishKvEventsBulk(nc, ENDPOINT, events.slice(2500));
    await a.src.ingest!.caughtUp();
    await b.src.ingest!.caughtUp();
    const dumpA = canonicalDump(await dumpOverGrpc(a.r));
    const dumpB = canonicalDump(await dumpOverGrpc(b.r));
    assert.ok(dumpA.length > 100, "the index is not trivially small");
    assert.deepEqual(dumpB, dumpA);
    assert.deepEqual(dumpA, referenceDump(events));
  });

  it("with replica sync, replicas at temperature 0 score identically and take a lowest-cost worker", async () => {
    // Four workers holding prefixes of different lengths of a few shared prompts.
    const rnd = seededRandom(11);
    const prompts = Array.from({ length: 6 }, (_, p) => Array.from({ length: 32 }, (_, i) => 100_000 + p * 1000 + i));
    const events: IndexEvent[] = [];
    const workers = [11n, 12n, 13n, 14n];
    workers.forEach((workerId, w) => {
      let eventId = 0n;
      prompts.forEach((prompt, p) => {
        const keep = ((w + p) % 4) * 2; // 0, 2, 4 or 6 blocks of this prompt
        if (keep === 0) return;
        const local = hashPrompt(prompt, B).local.slice(0, keep);
        const base = BigInt(w * 1000 + p * 100);
        events.push({
          kind: "stored",
          workerId,
          dpRank: 0,
          eventId: ++eventId,
          blocks: local.map((l, i) => ({ externalHash: base + BigInt(i) + 1n, localHash: l })),
        });
      });
      // Distinct cached-block totals (ties are broken at random, as in Dynamo, so the
      // checks below compare scores and the set of lowest-cost workers).
      events.push({
        kind: "stored",
        workerId,
        dpRank: 0,
        eventId: ++eventId,
        blocks: Array.from({ length: w + 1 }, (_, i) => ({ externalHash: 900_000n + BigInt(w * 10 + i), localHash: 77_000n + BigInt(w * 10 + i) })),
      });
    });
    const ep = "rep2.backend.generate"; // a stream of its own: only these four workers
    const a = await start("sync-a", true, 1, ep);
    const b = await start("sync-b", true, 2, ep);
    const alone = await start("no-sync", false, 3, ep);
    await publishKvEventsBulk(nc, ep, events);
    for (const x of [a, b, alone]) await x.src.ingest!.caughtUp();

    const replicas = [a.r, b.r];
    const loadOf = (r: TestRouter) =>
      [...r.server.router.knownWorkers().keys()]
        .sort()
        .map((k) => `${k}=${JSON.stringify(r.server.router.active.load(k))}`)
        .join("|") + `#${r.server.router.active.size}`;
    const inSync = () => waitFor(() => loadOf(a.r) === loadOf(b.r), "replicas agree on load");
    type Decision = Awaited<ReturnType<TestRouter["client"]["findBestWorker"]>>;
    const byWorker = (d: Decision) =>
      d.scores.map((s) => [s.worker!.workerId, s.logit] as const).sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    const lowest = (d: Decision) => {
      const min = Math.min(...d.scores.map((s) => s.logit));
      return new Set(d.scores.filter((s) => s.logit === min).map((s) => s.worker!.workerId));
    };

    const active: string[] = [];
    const chosen = new Set<bigint>();
    let divergedWithoutSync = 0;
    for (let i = 0; i < 40; i++) {
      const prompt = prompts[Math.floor(rnd() * prompts.length)].slice(0, 8 + Math.floor(rnd() * 24));
      // Both replicas, asked without a request id (no side effects), must agree exactly.
      const [da, db, dn] = await Promise.all(
        [a.r, b.r, alone.r].map((r) => r.client.findBestWorker({ tokenIds: prompt, explain: true })),
      );
      assert.deepEqual(byWorker(db), byWorker(da), `request ${i}: same scores`);
      const best = lowest(da);
      assert.ok(best.has(da.worker!.workerId) && best.has(db.worker!.workerId), `request ${i}: both take a lowest-cost worker`);
      if (byWorker(dn).join("|") !== byWorker(da).join("|")) divergedWithoutSync++;

      // Route it for real on alternating replicas; the other learns of it over NATS.
      const requestId = `req-${i}`;
      const routed = await replicas[i % 2].client.findBestWorker({ tokenIds: prompt, requestId });
      assert.ok(best.has(routed.worker!.workerId), `request ${i}: routed to a lowest-cost worker`);
      chosen.add(routed.worker!.workerId);
      active.push(requestId);
      if (i % 3 === 2) await replicas[(i + 1) % 2].client.markPrefillCompleted(active[active.length - 2]);
      if (i % 4 === 3) await replicas[i % 2 ? 0 : 1].client.free(active.shift()!);
      await inSync();
    }
    assert.ok(chosen.size > 1, "load spread requests over several workers");
    assert.ok(a.r.server.router.active.size > 0, "requests are still in flight");
    assert.ok(divergedWithoutSync > 0, "a replica without sync scores differently (the sync matters)");

    // A replica joining now learns the requests already in flight from its peers.
    const late = await start("sync-late", true, 4, ep);
    await late.src.ingest!.caughtUp();
    assert.ok(late.src.sync!.stats.joined > 0, "the late replica adopted in-flight requests");
    assert.equal(loadOf(late.r), loadOf(a.r), "the late replica sees the same load at once");
    const probe = prompts[0].slice(0, 20);
    const [pa, pl] = await Promise.all([a.r, late.r].map((r) => r.client.findBestWorker({ tokenIds: probe, explain: true })));
    assert.deepEqual(byWorker(pl), byWorker(pa));
  });
});
