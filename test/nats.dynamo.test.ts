// A Dynamo worker on the core-NATS event plane, as of Dynamo's current
// sources: the endpoint-scoped subject, a Vec<RouterEvent> payload in the
// MessagePack envelope, storage tiers, residency domains and rank-scoped
// clears. A Dynamo worker cannot run here, so the bytes come from
// test/python/dynamo_event_plane.py, written from Dynamo's definitions with
// Debian's python3-msgpack (rmp-serde's named encoding), and are published
// verbatim on a real nats-server.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { NatsConnection } from "@nats-io/transport-node";
import { localBlockHash } from "../src/hashing/blockHash.js";
import { encodeEventSegment, natsNames } from "../src/protocols/natsNames.js";
import { NatsEventSource } from "../src/sources/nats/natsSource.js";
import { dynamoEnvelope } from "./support/dynamo.js";
import { type NatsCluster, natsModeOptions, natsSuite } from "./support/natsServer.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;
const ENDPOINT = "dyn.backend.generate";
const names = natsNames(ENDPOINT);
/** A stored RouterEvent of consecutive blocks of `prompt`. */
function stored(workerId: number, eventId: number, prompt: number[], firstHash: number, extra: Record<string, unknown> = {}, dpRank = 0) {
  const blocks = Array.from({ length: prompt.length / B }, (_, i) => ({
    block_hash: String(firstHash + i),
    tokens_hash: String(localBlockHash(prompt.slice(i * B, (i + 1) * B))),
  }));
  return { worker_id: String(workerId), ...extra, event: { event_id: eventId, dp_rank: dpRank, data: { stored: { parent_hash: null, blocks } } } };
}

function cleared(workerId: number, eventId: number, dpRank: number, extra: Record<string, unknown> = {}) {
  return { worker_id: String(workerId), ...extra, event: { event_id: eventId, dp_rank: dpRank, data: "cleared" } };
}

describe("Dynamo's core-NATS event plane (endpoint-scoped, Vec<RouterEvent>)", () => {
  let nats: NatsCluster;
  let nc: NatsConnection;
  const routers: TestRouter[] = [];
  natsSuite(routers, (n, c) => {
    nats = n;
    nc = c;
  });

  async function start(routerId: string): Promise<{ r: TestRouter; src: NatsEventSource }> {
    const src = new NatsEventSource(natsModeOptions(nats.urls, ENDPOINT, { routerId, discovery: false }));
    const r = await startTestRouter({ blockSize: B }, { eventSources: [src] });
    routers.push(r);
    return { r, src };
  }

  async function publish(src: NatsEventSource, bytes: Uint8Array, subject = names.endpointEventPlaneSubject): Promise<void> {
    const before = src.eventPlaneStats.applied + src.eventPlaneStats.malformed;
    nc.publish(subject, bytes);
    await nc.flush();
    await waitFor(() => src.eventPlaneStats.applied + src.eventPlaneStats.malformed > before, "event-plane message handled");
  }

  async function scores(r: TestRouter, prompt: number[]) {
    return (await r.client.findBestWorker({ tokenIds: prompt, explain: true })).scores;
  }

  it("subscribes where Dynamo publishes: namespace.{ns}.component.{c}.endpoint.{ep}.kv-events", () => {
    assert.equal(names.endpointEventPlaneSubject, "namespace.dyn.component.backend.endpoint.generate.kv-events");
    assert.equal(encodeEventSegment("my.model/v1"), "my%2Emodel%2Fv1", "Dynamo's encode_event_segment");
  });

  it("routes to a worker whose Dynamo-exact batch arrives on the endpoint subject; a host_pinned block counts 0.75 of a GPU block", async () => {
    const { r, src } = await start("dyn-tiers");
    const prompt = tokens(2 * B, 41000);
    const first = prompt.slice(0, B);
    await publish(
      src,
      dynamoEnvelope([
        stored(101, 1, first, 1000), // block 1 on worker 101's GPU
        stored(102, 1, first, 2000, { storage_tier: "host_pinned", residency_domain: "worker" }), // on 102's host memory
        stored(103, 1, prompt, 3000), // both blocks on 103's GPU
      ]),
    );
    assert.equal(src.eventPlaneStats.applied, 3);
    const s = await scores(r, prompt);
    const of = (id: bigint) => s.find((x) => x.worker!.workerId === id)!;
    assert.equal(s[0].worker!.workerId, 103n, "the worker with the longest GPU match wins");
    assert.equal(of(101n).overlapBlocks, 1);
    assert.equal(of(102n).overlapBlocks, 0);
    assert.equal(of(102n).hostOverlapBlocks, 1);
    // prefill_blocks = prompt blocks minus the credit: 1 for a GPU block, 0.75 for a host one.
    assert.equal(2 - of(101n).prefillBlocks, 1);
    assert.equal(2 - of(102n).prefillBlocks, 0.75);
    const info = (await r.client.listWorkers()).workers.find((w) => w.worker!.workerId === 102n)!;
    assert.deepEqual([info.cachedBlocks, info.hostCachedBlocks], [0n, 1n], "ListWorkers counts blocks per tier");
  });

  it("a host block continues the GPU match; disk and external blocks count the disk weight (0.25)", async () => {
    const { r, src } = await start("dyn-walk");
    const prompt = tokens(4 * B, 42000);
    const chain = (from: number, to: number, firstHash: number, tier: string, parent?: number) => {
      const e = stored(201, 0, prompt.slice(from * B, to * B), firstHash, tier === "device" ? {} : { storage_tier: tier });
      (e.event.data as { stored: { parent_hash: string | null } }).stored.parent_hash = parent === undefined ? null : String(parent);
      return e;
    };
    const events = [
      chain(0, 1, 5000, "device"),
      chain(0, 2, 6000, "host_pinned"), // blocks 0-1 on host: block 0 is already a GPU hit, block 1 is new
      chain(2, 3, 6002, "disk", 6001), // block 2 on disk, its parent on host
      chain(3, 4, 6003, "external", 6002),
    ].map((e, i) => ({ ...e, event: { ...e.event, event_id: i + 1 } }));
    await publish(src, dynamoEnvelope(events));
    const s = (await scores(r, prompt))[0];
    assert.deepEqual([s.overlapBlocks, s.hostOverlapBlocks, s.diskOverlapBlocks, s.externalOverlapBlocks], [1, 1, 1, 1]);
    assert.equal(4 - s.prefillBlocks, 1 + 0.75 + 0.25 + 0.25);
  });

  it("a cleared scoped to (worker, dp_rank) leaves the worker's other ranks alone; a cache_owner clear leaves GPU blocks alone", async () => {
    const { r, src } = await start("dyn-clear");
    const prompt = tokens(2 * B, 43000);
    await publish(src, dynamoEnvelope([stored(301, 1, prompt, 7000, {}, 0), stored(301, 1, prompt, 7100, {}, 1)]));
    const overlapOf = async (rank: number) =>
      (await scores(r, prompt)).find((x) => x.worker!.workerId === 301n && x.worker!.dpRank === rank)!.overlapBlocks;
    assert.deepEqual([await overlapOf(0), await overlapOf(1)], [2, 2]);
    await publish(src, dynamoEnvelope([cleared(301, 2, 1, { residency_domain: "cache_owner" })]));
    assert.deepEqual([await overlapOf(0), await overlapOf(1)], [2, 2], "cache-owner residency is not the GPU's");
    await publish(src, dynamoEnvelope([cleared(301, 3, 0)]));
    assert.deepEqual([await overlapOf(0), await overlapOf(1)], [0, 2], "rank 1 keeps its blocks");
  });

  it("counts unknown tiers and domains and cache-owner blocks by reason; the rest of the batch applies", async () => {
    const { r, src } = await start("dyn-bad");
    const prompt = tokens(B, 44000);
    await publish(
      src,
      dynamoEnvelope([
        stored(401, 1, prompt, 8000, { storage_tier: "tape" }),
        stored(402, 1, prompt, 8100, { residency_domain: "galaxy" }),
        stored(403, 1, prompt, 8200, { storage_tier: "disk", residency_domain: "cache_owner" }),
        stored(404, 1, prompt, 8300),
      ]),
    );
    assert.equal(src.eventPlaneStats.applied, 1);
    assert.deepEqual(
      ["unknown_storage_tier", "unknown_residency_domain", "cache_owner_residency"].map((k) => src.eventPlaneSkips.count(k)),
      [1, 1, 1],
    );
    const metric = await r.server.metrics.registry.getSingleMetric("kvrouter_nats_events_skipped_total")!.get();
    assert.equal(metric.values.find((v) => v.labels.reason === "event_plane_unknown_storage_tier")?.value, 1);
    assert.deepEqual(
      (await scores(r, prompt)).filter((x) => x.overlapBlocks > 0).map((x) => x.worker!.workerId),
      [404n],
    );
  });

  it("still reads the component-scoped subject (older workers, one RouterEvent or a list)", async () => {
    const { r, src } = await start("dyn-component");
    const prompt = tokens(B, 45000);
    await publish(src, dynamoEnvelope([stored(501, 1, prompt, 9000)]), names.eventPlaneSubject);
    assert.equal((await scores(r, prompt)).find((x) => x.worker!.workerId === 501n)!.overlapBlocks, 1);
  });
});
