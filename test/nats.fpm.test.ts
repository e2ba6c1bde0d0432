// Dynamo's forward-pass metrics (FPM) on the core-NATS event plane, read as
// Dynamo's router reads them (lib/llm/src/kv_router/fpm_subscriber.rs): each
// message's scheduled prefill + decode requests are the rank's running batch,
// its queued prefill + decode requests the ones waiting for a slot, and the
// kv-adaptive policy reads them as the engine's own report. A Dynamo worker
// cannot run here, so the bytes come from test/python/dynamo_fpm.py, written
// from Dynamo's definitions (forward_pass_metrics.py, fpm_publisher.rs, the
// event plane's envelope) with Debian's python3-msgpack, and are published
// verbatim on a real nats-server, on the subjects Dynamo's publishers use.
// The router's clock is driven by hand; the choices follow
// test/router.batchSlots.test.ts, with the batch arriving as FPM instead of KeepAlive.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { NatsConnection } from "@nats-io/transport-node";
import { encodeMsgpack } from "../src/protocols/routerEventCodec.js";
import { FPM_TOPIC, MAX_FPM_MESSAGE_BYTES } from "../src/protocols/forwardPassMetrics.js";
import { natsNames } from "../src/protocols/natsNames.js";
import { ENGINE_BATCH_FRESH_MS } from "../src/scheduler/engineBatch.js";
import { NatsEventSource } from "../src/sources/nats/natsSource.js";
import type { FpmOutcome } from "../src/sources/fpmFeed.js";
import { type FpmSpec, dynamoFpmEnvelope } from "./support/dynamo.js";
import { type NatsCluster, natsModeOptions, natsSuite } from "./support/natsServer.js";
import { type TestRouter, startTestRouter, tokens, timedFleet } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;
const ENDPOINT = "dyn.backend.generate";
const names = natsNames(ENDPOINT);
const SLOTS = 4;
/** A 10-block prompt; worker 1 holds its first 8 blocks. */
const PROMPT = tokens(40, 0);

/** Worker 1's engine: all 4 slots taken (1 prefilling, 3 decoding), 3 waiting (2 new prompts, 1 preempted). */
const BACKED_UP: FpmSpec = {
  worker_id: "1",
  dp_rank: 0,
  counter_id: 17,
  wall_time: 0.031,
  scheduled: { num_prefill_requests: 1, sum_prefill_tokens: 512, sum_prefill_kv_tokens: 64, num_decode_requests: 3, sum_decode_kv_tokens: 900, var_decode_kv_tokens: 12.5 },
  queued: { num_prefill_requests: 2, sum_prefill_tokens: 2048, num_decode_requests: 1, sum_decode_kv_tokens: 300 },
};

describe("Dynamo's forward-pass metrics on the core-NATS event plane", () => {
  let nats: NatsCluster;
  let nc: NatsConnection;
  const routers: TestRouter[] = [];
  natsSuite(routers, (n, c) => {
    nats = n;
    nc = c;
  });

  let t = 1_000_000;
  async function start(routerId: string): Promise<{ r: TestRouter; src: NatsEventSource }> {
    const src = new NatsEventSource(natsModeOptions(nats.urls, ENDPOINT, { routerId, discovery: false }));
    const r = await startTestRouter({ blockSize: B }, { eventSources: [src], now: () => t });
    routers.push(r);
    return { r, src };
  }

  const handled = (src: NatsEventSource) => (["applied", "malformed", "oversized", "unknown_version", "unknown_worker"] as FpmOutcome[]).reduce((n, o) => n + src.fpmPlane.count(o), 0);

  async function publish(src: NatsEventSource, bytes: Uint8Array, subject = names.endpointFpmSubject): Promise<void> {
    const before = handled(src);
    nc.publish(subject, bytes);
    await nc.flush();
    await waitFor(() => handled(src) > before, "FPM message handled");
  }

  async function choose(r: TestRouter) {
    const d = await r.client.findBestWorker({ tokenIds: PROMPT, explain: true, workerSelectionPolicy: "kv-adaptive" });
    return { worker: Number(d.worker!.workerId), reason: d.selectionReason };
  }

  /** Three workers of 4 slots; worker 1 caches the prompt; one request times the fleet's prefill and decode. */
  async function fleet(r: TestRouter): Promise<void> {
    await timedFleet(r, { blockSize: B, maxNumBatchedTokens: 20n, maxNumSeqs: BigInt(SLOTS) }, (ms) => (t += ms));
  }

  it("subscribes where Dynamo's workers publish: the endpoint-scoped subject, and the component-scoped one of earlier releases", () => {
    assert.equal(names.endpointFpmSubject, "namespace.dyn.component.backend.endpoint.generate.forward-pass-metrics");
    assert.equal(names.fpmSubject, "namespace.dyn.component.backend.forward-pass-metrics");
  });

  it("a worker whose engine reports a full batch with requests waiting loses the prompt it caches; an idle heartbeat gives it back", async () => {
    const { r, src } = await start("fpm-route");
    await fleet(r);
    assert.equal((await choose(r)).worker, 1, "idle: the cached worker");

    await publish(src, dynamoFpmEnvelope(BACKED_UP));
    assert.equal(src.fpmPlane.count("applied"), 1);
    assert.deepEqual(r.server.router.engineBatches.batch("1:0", SLOTS, 0), { slots: SLOTS, running: 4, waiting: 3, reported: true });
    const full = await choose(r);
    assert.notEqual(full.worker, 1, "a backed-up home: recomputing the prompt elsewhere is cheaper than its wait");
    assert.match(full.reason, /1 backed-up worker charged their wait for a batch slot/);

    // Dynamo's idle heartbeat: every count zero. The engine's word replaces the last one at once.
    await publish(src, dynamoFpmEnvelope({ worker_id: "1", dp_rank: 0, counter_id: 18 }), names.fpmSubject);
    assert.deepEqual(r.server.router.engineBatches.batch("1:0", SLOTS, 0), { slots: SLOTS, running: 0, waiting: 0, reported: true });
    assert.equal((await choose(r)).worker, 1);

    // Reports that stop count for 3 s; then the router's own count (nothing routed to worker 1) stands in.
    await publish(src, dynamoFpmEnvelope(BACKED_UP));
    assert.notEqual((await choose(r)).worker, 1);
    t += ENGINE_BATCH_FRESH_MS + 1;
    assert.equal((await choose(r)).worker, 1);

    // A deregistered worker's report goes with it; later ones for it are unknown-worker skips.
    await r.client.deregisterWorker(1n);
    assert.equal(r.server.router.engineBatches.batch("1:0", SLOTS, 0).reported, false);
    await publish(src, dynamoFpmEnvelope(BACKED_UP));
    assert.equal(src.fpmPlane.count("unknown_worker"), 1);
    assert.equal(r.server.router.engineBatches.batch("1:0", SLOTS, 0).reported, false);
  });

  it("hostile and foreign messages are counted skips that change nothing; the next good one applies", async () => {
    const { r, src } = await start("fpm-hostile");
    await fleet(r);
    const before = r.server.router.engineBatches.batch("1:0", SLOTS, 0);
    const envelope = (payload: unknown) => encodeMsgpack({ topic: FPM_TOPIC, publisher_id: 1, sequence: 0, published_at: 0, payload });
    const cases: [string, Uint8Array, FpmOutcome][] = [
      ["not MessagePack", new Uint8Array([0xc1, 0xff, 0x00]), "malformed"],
      ["an envelope without payload bytes", encodeMsgpack({ topic: FPM_TOPIC, payload: "x" }), "malformed"],
      ["another topic's envelope", encodeMsgpack({ topic: "kv-events", payload: new Uint8Array([0x80]) }), "malformed"],
      ["a payload that is a list (an older positional encoding)", envelope(encodeMsgpack(["1", 0, 0.1])), "malformed"],
      ["a worker_id that is not a u64", dynamoFpmEnvelope({ ...BACKED_UP, worker_id: "worker-abc" }), "malformed"],
      ["a worker_id past u64", dynamoFpmEnvelope({ ...BACKED_UP, worker_id: "18446744073709551616" }), "malformed"],
      ["a count that is not an i32", envelope(encodeMsgpack({ version: 1, worker_id: "1", scheduled_requests: { num_decode_requests: 2 ** 40 } })), "malformed"],
      ["a count of the wrong type", envelope(encodeMsgpack({ version: 1, worker_id: "1", queued_requests: { num_prefill_requests: "9" } })), "malformed"],
      ["nesting past the limit", envelope(encodeMsgpack({ version: 1, worker_id: "1", scheduled_requests: JSON.parse("[".repeat(60) + "]".repeat(60)) })), "malformed"],
      ["version 2", dynamoFpmEnvelope({ ...BACKED_UP, version: 2 }), "unknown_version"],
      ["no version (reads 0, as in Dynamo)", envelope(encodeMsgpack({ worker_id: "1" })), "unknown_version"],
      ["an oversized message", new Uint8Array(MAX_FPM_MESSAGE_BYTES + 1), "oversized"],
      ["an unknown worker", dynamoFpmEnvelope({ ...BACKED_UP, worker_id: "999" }), "unknown_worker"],
      ["a rank the worker did not register", dynamoFpmEnvelope({ ...BACKED_UP, dp_rank: 3 }), "unknown_worker"],
    ];
    for (const [what, bytes, outcome] of cases) {
      const n = src.fpmPlane.count(outcome);
      await publish(src, bytes);
      assert.equal(src.fpmPlane.count(outcome), n + 1, what);
      assert.deepEqual(r.server.router.engineBatches.batch("1:0", SLOTS, 0), before, `${what}: nothing changed`);
    }
    assert.equal(src.fpmPlane.count("applied"), 0);

    // A negative dp_rank is rank 0 and negative counts are 0 (Dynamo's fpm_subscriber); unknown fields are ignored.
    await publish(
      src,
      envelope(encodeMsgpack({ version: 1, worker_id: "1", dp_rank: -1, extra: { x: 1 }, scheduled_requests: { num_prefill_requests: -5, num_decode_requests: 4 }, queued_requests: { num_decode_requests: 2 } })),
    );
    assert.deepEqual(r.server.router.engineBatches.batch("1:0", SLOTS, 0), { slots: SLOTS, running: 4, waiting: 2, reported: true });

    const metric = await r.server.metrics.registry.getSingleMetric("kvrouter_nats_fpm_messages_total")!.get();
    const byOutcome = Object.fromEntries(metric.values.map((v) => [v.labels.outcome, v.value]));
    assert.deepEqual(byOutcome, { applied: 1, malformed: 9, oversized: 1, unknown_version: 2, unknown_worker: 2 });
  });
});
