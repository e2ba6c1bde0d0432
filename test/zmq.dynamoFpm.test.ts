// Dynamo's forward-pass metrics on its ZMQ event plane (DYN_EVENT_PLANE=zmq,
// direct mode): a worker's FPM publisher binds its own PUB socket and
// announces it under v1/event_channels with topic forward-pass-metrics,
// endpoint-scoped on the worker's generate endpoint (current releases); the
// router follows it as it follows KV event publishers. Dynamo cannot run
// here: the worker's discovery records are written into Dynamo's file store
// in a real directory, and a real ZeroMQ publisher
// (test/python/dynamo_zmq_publisher.py with test/python/dynamo_fpm.py, from
// Dynamo's definitions) sends exactly Dynamo's frames.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { FPM_TOPIC } from "../src/protocols/forwardPassMetrics.js";
import type { DynamoZmqEventPlane } from "../src/sources/dynamoZmq/dynamoZmqSource.js";
import { COMPONENT, ENDPOINT, NS, DynamoZmqPublisher, type FpmSpec, cardValue, endpointChannel, instanceValue, dynamoInsert, fileDiscoveryWithZmqPlane } from "./support/dynamo.js";
import { type TestRouter, startTestRouter } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const dirs: string[] = [];
const routers: TestRouter[] = [];
after(async () => {
  await Promise.all(routers.map((r) => r.close()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});


const WORKER = 0x7a11n;
const KEY = `${WORKER}:0`;
/** The model card's max_num_seqs (test/support/dynamo.ts cardValue). */
const SLOTS = 256;

describe("Dynamo's forward-pass metrics on its ZMQ event plane", () => {
  it("follows an announced FPM publisher: reports apply to the worker's rank; garbage, other versions and unknown workers are counted skips", async () => {
    const root = mkdtempSync(join(tmpdir(), "kvr-fpm-"));
    dirs.push(root);
    const sources = fileDiscoveryWithZmqPlane(root);
    const plane = sources[0] as DynamoZmqEventPlane;
    const r = await startTestRouter({ blockSize: 4 }, { eventSources: sources, metricsPort: 0 });
    routers.push(r);
    const batch = () => r.server.router.engineBatches.batch(KEY, SLOTS, 0);

    // The worker as Dynamo registers it: its instance and its model card (max_num_seqs 256, one rank).
    dynamoInsert(root, "v1/instances", `${NS}/${COMPONENT}/${ENDPOINT}/${WORKER.toString(16)}`, instanceValue(WORKER));
    dynamoInsert(root, "v1/mdc", `${NS}/${COMPONENT}/${ENDPOINT}/${WORKER.toString(16)}`, cardValue(WORKER, { start: 0, size: 1 }));
    await waitFor(async () => (await r.client.listWorkers()).workers.length === 1, "the worker is registered", 10_000);

    const publisherId = 0xf9a1n;
    const pub = await DynamoZmqPublisher.start(publisherId, FPM_TOPIC);
    try {
      const channel = endpointChannel(publisherId, FPM_TOPIC, pub.endpoint);
      dynamoInsert(root, "v1/event_channels", channel.key.slice("v1/event_channels/".length), channel.value);
      await waitFor(() => plane.publisherCount === 1, "the announced FPM publisher is followed", 10_000);

      // Full batch, 3 waiting. ZeroMQ drops what is sent before the subscription reaches the publisher: resend until one lands.
      const full: FpmSpec = { worker_id: String(WORKER), dp_rank: 0, counter_id: 1, wall_time: 0.04, scheduled: { num_prefill_requests: 6, num_decode_requests: 250 }, queued: { num_prefill_requests: 3 } };
      await waitFor(async () => {
        await pub.publishFpm(full);
        await new Promise((res) => setTimeout(res, 50));
        return (plane.fpmCounts?.applied ?? 0) > 0;
      }, "an FPM message is applied", 10_000);
      assert.deepEqual(batch(), { slots: SLOTS, running: 256, waiting: 3, reported: true });

      const counts = { ...plane.fpmCounts! };
      await pub.publishRawFrame("0900000000"); // not Dynamo's frame version
      await waitFor(() => plane.fpmCounts!.malformed === counts.malformed + 1, "a bad frame is a malformed FPM message");
      await pub.publishFpm({ ...full, version: 2, scheduled: {} });
      await waitFor(() => plane.fpmCounts!.unknown_version === counts.unknown_version + 1, "version 2 is skipped");
      await pub.publishFpm({ ...full, worker_id: "12345", scheduled: {} });
      await waitFor(() => plane.fpmCounts!.unknown_worker === counts.unknown_worker + 1, "an unknown worker is skipped");
      assert.deepEqual(batch(), { slots: SLOTS, running: 256, waiting: 3, reported: true }, "the skips changed nothing");
      assert.equal(plane.stats.malformed, 0, "FPM messages are not counted as KV event messages");

      // The idle heartbeat (all zeros) applies.
      await pub.publishFpm({ worker_id: String(WORKER), dp_rank: 0, counter_id: 2 });
      await waitFor(() => plane.fpmCounts!.applied === counts.applied + 1, "the heartbeat applies");
      assert.deepEqual(batch(), { slots: SLOTS, running: 0, waiting: 0, reported: true });

      const metric = await r.server.metrics.registry.getSingleMetric("kvrouter_dynamo_zmq_fpm_messages_total")!.get();
      const byOutcome = Object.fromEntries(metric.values.map((v) => [v.labels.outcome, v.value]));
      assert.deepEqual(
        { ...byOutcome, applied: 0 },
        { applied: 0, malformed: 1, oversized: 0, unknown_version: 1, unknown_worker: 1 },
        "skips by outcome (applied counts the resends that landed)",
      );
    } finally {
      await pub.stop();
    }
  });
});
