// The admission queue over real gRPC: bursts that queue and drain in policy
// order, priority, deadlines, clients that go away, a full queue, busy
// thresholds and their change at run time. Ordering is asserted by waiting
// for the queue depth the server reports, never by timing.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { FindBestWorkerRequestSchema } from "../gen/kvrouter/v1/router_pb.js";
import type { AdmissionConfig } from "../src/router/admissionQueue.js";
import { type TestRouter, startTestRouter, tokens, withRouter } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;

/** One worker whose step budget is 4 tokens: any prompt over 4 uncached tokens makes it busy at threshold 1. */
async function queueingRouter(admission: Partial<AdmissionConfig> = {}, thresholds = { routerQueueThreshold: 1 }): Promise<TestRouter> {
  const r = await startTestRouter(
    { blockSize: B },
    { admission: { queuePolicy: "fcfs", maxQueued: 16, ...admission, thresholds } },
  );
  await r.client.registerWorker({ workerId: 1n, maxNumBatchedTokens: 4n });
  return r;
}


/** Sends a FindBestWorker and waits until the server has queued it (so arrival order is known). */
async function enqueue(r: TestRouter, order: string[], id: string, tokenIds: number[], priority = 0) {
  const depth = r.server.admission.depth;
  const answered = r.client.findBestWorker({ tokenIds, requestId: id, priority }).then((res) => {
    order.push(id);
    return res;
  });
  await waitFor(() => r.server.admission.depth === depth + 1, `${id} queued`);
  return { answered }; // wrapped: an async function returning a promise would wait for it
}

/** Completes the prefill of whatever was routed last and waits for the next one to come out. */
async function drainOne(r: TestRouter, order: string[], previous: string) {
  const before = order.length;
  await r.client.markPrefillCompleted(previous);
  await waitFor(() => order.length === before + 1, `one more routed after ${previous}`);
  return order[order.length - 1];
}

describe("admission queue", () => {
  it("a burst past the queue threshold waits and drains first come, first served", async () => {
    await withRouter(queueingRouter(), async (r) => {
      await r.client.findBestWorker({ tokenIds: tokens(8, 0), requestId: "first" });
      const order: string[] = [];
      const pending = [];
      for (const id of ["b", "c", "d"]) pending.push((await enqueue(r, order, id, tokens(8, id.charCodeAt(0) * 100))).answered);
      assert.equal(r.server.admission.depth, 3);
      assert.deepEqual(order, [], "nothing leaves the queue while the worker is busy");
      let last = "first";
      for (const expected of ["b", "c", "d"]) {
        last = await drainOne(r, order, last);
        assert.equal(last, expected);
        assert.equal(r.server.admission.depth, ["b", "c", "d"].length - order.length, "one admitted per freed worker");
      }
      const answers = await Promise.all(pending);
      for (const a of answers) assert.equal(a.worker!.workerId, 1n);
      const metrics = await r.server.metrics.registry.getSingleMetricAsString("kvrouter_queue_wait_seconds");
      assert.match(metrics, /kvrouter_queue_wait_seconds_count\{outcome="routed"\} 3/);
    });
  });

  it("wspt drains the shortest uncached prompt first", async () => {
    await withRouter(queueingRouter({ queuePolicy: "wspt" }), async (r) => {
      await r.client.findBestWorker({ tokenIds: tokens(8, 0), requestId: "first" });
      const order: string[] = [];
      const pending = [
        await enqueue(r, order, "long", tokens(40, 1000)),
        await enqueue(r, order, "short", tokens(8, 2000)),
        await enqueue(r, order, "medium", tokens(20, 3000)),
      ];
      let last = "first";
      for (const expected of ["short", "medium", "long"]) {
        last = await drainOne(r, order, last);
        assert.equal(last, expected);
      }
      await Promise.all(pending.map((p) => p.answered));
    });
  });

  it("priority jumps the fcfs queue", async () => {
    await withRouter(queueingRouter(), async (r) => {
      await r.client.findBestWorker({ tokenIds: tokens(8, 0), requestId: "first" });
      const order: string[] = [];
      const pending = [
        await enqueue(r, order, "x", tokens(8, 100)),
        await enqueue(r, order, "y", tokens(8, 200)),
        await enqueue(r, order, "urgent", tokens(8, 300), 100),
      ];
      let last = "first";
      for (const expected of ["urgent", "x", "y"]) {
        last = await drainOne(r, order, last);
        assert.equal(last, expected);
      }
      await Promise.all(pending.map((p) => p.answered));
    });
  });

  it("a queued call whose deadline passes gets DEADLINE_EXCEEDED and leaves no load behind", async () => {
    await withRouter(queueingRouter(), async (r) => {
      await r.client.findBestWorker({ tokenIds: tokens(8, 0), requestId: "first" });
      const late = r.client.findBestWorker({ tokenIds: tokens(8, 100), requestId: "late" }, { deadline: Date.now() + 300 });
      await assert.rejects(late, (err: grpc.ServiceError) => err.code === grpc.status.DEADLINE_EXCEEDED);
      await waitFor(() => r.server.admission.depth === 0, "the expired call leaves the queue");
      const [w] = (await r.client.listWorkers()).workers;
      assert.equal(w.activeRequests, 1n, "only the routed request holds load");
      assert.equal(r.server.router.active.has("late"), false);
    });
  });

  it("a queued call whose client goes away leaves the queue at once and is never routed", async () => {
    await withRouter(queueingRouter(), async (r) => {
      await r.client.findBestWorker({ tokenIds: tokens(8, 0), requestId: "first" });
      const call = (r.client.raw as unknown as Record<string, Function>).findBestWorker(
        create(FindBestWorkerRequestSchema, { tokenIds: tokens(8, 100), requestId: "gone" }),
        () => {},
      ) as grpc.ClientUnaryCall;
      await waitFor(() => r.server.admission.depth === 1, "the call is queued");
      call.cancel();
      await waitFor(() => r.server.admission.depth === 0, "the cancelled call leaves the queue");
      await r.client.markPrefillCompleted("first");
      const next = await r.client.findBestWorker({ tokenIds: tokens(8, 200), requestId: "next" });
      assert.equal(next.queuedMs, 0);
      assert.equal(r.server.router.active.has("gone"), false, "the cancelled request was never routed");
      const metrics = await r.server.metrics.registry.getSingleMetricAsString("kvrouter_queue_wait_seconds");
      assert.match(metrics, /kvrouter_queue_wait_seconds_count\{outcome="cancelled"\} 1/);
    });
  });

  it("a full queue answers RESOURCE_EXHAUSTED at once", async () => {
    await withRouter(queueingRouter({ maxQueued: 2 }), async (r) => {
      await r.client.findBestWorker({ tokenIds: tokens(8, 0), requestId: "first" });
      const order: string[] = [];
      const pending = [await enqueue(r, order, "q1", tokens(8, 100)), await enqueue(r, order, "q2", tokens(8, 200))];
      await assert.rejects(
        r.client.findBestWorker({ tokenIds: tokens(8, 300), requestId: "q3" }),
        (err: grpc.ServiceError) => err.code === grpc.status.RESOURCE_EXHAUSTED && /queue is full/.test(err.details),
      );
      assert.equal(r.server.admission.depth, 2);
      // Lifting the queue threshold at run time lets everyone through.
      const res = await r.client.setBusyThresholds({ clear: ["router_queue_threshold"] });
      assert.equal(res.thresholds!.routerQueueThreshold, undefined);
      await Promise.all(pending.map((p) => p.answered));
      assert.deepEqual(order, ["q1", "q2"]);
    });
  });

  it("busy thresholds refuse at once; SetBusyThresholds changes them at run time, with the token", async () => {
    const r = await startTestRouter(
      { blockSize: B },
      { authToken: "s3cret", admission: { queuePolicy: "fcfs", maxQueued: 16, thresholds: { activePrefillTokensThreshold: 6 } } },
    );
    const auth = new grpc.Metadata();
    auth.set("authorization", "Bearer s3cret");
    try {
      await new Promise<void>((resolve, reject) =>
        (r.client.raw as unknown as Record<string, Function>).registerWorker(
          { workerId: 1n, dpRanks: [], leaseTtlSeconds: 0, zmqEndpoint: "", zmqReplayEndpoint: "", address: "", maxNumBatchedTokens: 0n, totalKvBlocks: 0n, maxNumSeqs: 0n, $typeName: "kvrouter.v1.RegisterWorkerRequest" },
          auth,
          (err: Error | null) => (err ? reject(err) : resolve()),
        ),
      );
      const query = { tokenIds: tokens(8, 0) };
      // Pure queries need no token; the first one is under the threshold.
      await r.client.findBestWorker(query);
      r.server.router.active.add("held", "1:0", [], 8);
      await assert.rejects(
        r.client.findBestWorker(query),
        (err: grpc.ServiceError) => err.code === grpc.status.RESOURCE_EXHAUSTED && /busy thresholds/.test(err.details),
      );
      await assert.rejects(
        r.client.setBusyThresholds({ thresholds: { activePrefillTokensThreshold: 100n } }),
        (err: grpc.ServiceError) => err.code === grpc.status.UNAUTHENTICATED,
      );
      const res = await r.client.setBusyThresholds({ thresholds: { activePrefillTokensThreshold: 100n } }, auth);
      assert.equal(res.thresholds!.activePrefillTokensThreshold, 100n);
      await r.client.findBestWorker(query);
      await assert.rejects(
        r.client.setBusyThresholds({ clear: ["no_such_threshold"] }, auth),
        (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT && /no_such_threshold/.test(err.details),
      );
      const refused = await r.server.metrics.registry.getSingleMetricAsString("kvrouter_queue_refused_total");
      assert.match(refused, /reason="busy"\} 1/);
    } finally {
      await r.close();
    }
  });

  it("bad hints are INVALID_ARGUMENT naming the field, and change nothing", async () => {
    await withRouter(queueingRouter(), async (r) => {
      const cases: [Record<string, unknown>, RegExp][] = [
        [{ priority: 1001 }, /^priority/],
        [{ priority: -1 }, /^priority/],
        [{ expectedOutputTokens: -1n }, /^expected_output_tokens/],
        [{ sessionId: "s".repeat(1025) }, /^session_id/],
        [{ sessionId: "é".repeat(513) }, /^session_id is 1026 bytes/],
      ];
      for (const [hint, field] of cases) {
        await assert.rejects(
          r.client.findBestWorker({ tokenIds: tokens(8, 0), requestId: "bad", ...hint }),
          (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT && field.test(err.details),
          JSON.stringify(hint, (_k, v) => (typeof v === "bigint" ? String(v) : v)),
        );
      }
      assert.equal(r.server.router.active.size, 0);
    });
  });
});
