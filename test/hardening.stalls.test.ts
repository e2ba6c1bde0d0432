// Hardening III (issue 24, §3): inputs that stalled the event loop for seconds,
// over the real transports. Each work is now linear or bounded before it
// starts. The tests assert answers, statuses and state, never timings: the
// measured stalls before and after are in docs/RELIABILITY.md.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { KvRouterService } from "../gen/kvrouter/v1/router_pb.js";
import { EnvoyStream, destination, extProcClient, immediate } from "./support/envoy.js";
import { startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;

/** Runs `n` calls, `width` at a time. */
async function inBatches(n: number, width: number, call: (i: number) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < n; i += width) await Promise.all(Array.from({ length: Math.min(width, n - i) }, (_, j) => call(i + j)));
}

describe("hardening: event-loop stalls", () => {
  it("1,000 leases expiring at once drop exactly their workers' requests; a renewed worker keeps its own", async () => {
    const clock = { t: 1_000_000 };
    // Predictions, session affinity and ttft rates keep per-worker state too: all of it is dropped.
    const r = await startTestRouter(
      { blockSize: B, predictedTtlMs: 600_000, sessionAffinityTtlMs: 600_000, routerCost: "ttft" },
      { now: () => clock.t, tickMs: 20 },
    );
    try {
      const expiring = 1_000;
      const perWorker = 4;
      // Worker 1 stays; workers 2..1001 include 10, 11, 100…: ids that start with 1's text.
      await r.client.registerWorker({ workerId: 1n, dpRanks: [0, 1], leaseTtlSeconds: 3_600 });
      await inBatches(expiring, 100, (i) => r.client.registerWorker({ workerId: BigInt(i + 2), leaseTtlSeconds: 1 }));
      const route = (id: string, workerId: bigint, dpRank: number, i: number) =>
        r.client.findBestWorker({ tokenIds: tokens(16, i * 16), requestId: id, sessionId: id, allowedWorkers: [{ workerId, dpRank }] });
      await inBatches(expiring * perWorker, 200, (i) => route(`gone-${i}`, BigInt((i % expiring) + 2), 0, i));
      await inBatches(6, 6, (i) => route(`kept-${i}`, 1n, i % 2, 100_000 + i));
      assert.equal(r.server.router.active.size, expiring * perWorker + 6);

      clock.t += 2_000; // every lease but worker 1's runs out at the next tick
      const listed = async () => (await r.client.listWorkers()).workers;
      const left = async () => (await listed()).map((w) => `${w.worker!.workerId}:${w.worker!.dpRank}`).sort().join();
      await waitFor(async () => (await left()) === "1:0,1:1", "the expired workers to be removed", 10_000);

      const loads = (await listed()).map((w) => Number(w.activeRequests));
      assert.deepEqual(loads, [3, 3], "worker 1 keeps all its requests, on both ranks");
      assert.equal(r.server.router.active.size, 6, "every request of the expired workers is dropped");
      assert.equal((await r.client.free("gone-0")).found, false);
      assert.equal((await r.client.free("gone-3999")).found, false);
      assert.equal((await r.client.free("kept-0")).found, true);
      const metrics = await r.server.metrics.registry.metrics();
      assert.match(metrics, /kvrouter_expired_workers_total 1000/);
      // The server keeps serving; a session bound to an expired worker starts afresh on worker 1.
      const next = await r.client.findBestWorker({ tokenIds: tokens(16, 7), requestId: "after", sessionId: "gone-5" });
      assert.equal(next.worker!.workerId, 1n);
    } finally {
      await r.close();
    }
  });

  it("a capacity change with 1,024 queued and 1,000 busy workers looks at the workers once, and admits in policy order", async () => {
    const clock = { t: 1_000_000 }; // a fixed clock: fcfs order is priority, then arrival
    const r = await startTestRouter(
      { blockSize: B },
      { now: () => clock.t, admission: { queuePolicy: "fcfs", maxQueued: 1_024, thresholds: { routerQueueThreshold: 1 } } },
    );
    let answers: Promise<unknown>[] = [];
    try {
      const workers = 1_000;
      // A step budget of 4 tokens: one 8-token prompt in prefill puts a worker past the queue threshold.
      await inBatches(workers, 100, (i) => r.client.registerWorker({ workerId: BigInt(i + 1), maxNumBatchedTokens: 4n }));
      await inBatches(workers, 100, (i) =>
        r.client.findBestWorker({ tokenIds: tokens(8, i * 8), requestId: `busy-${i + 1}`, allowedWorkers: [{ workerId: BigInt(i + 1), dpRank: 0 }] }),
      );
      // Counts the router's look at every candidate's load, the work a capacity change repeated per waiter.
      const router = r.server.router;
      const candidateStates = router.candidateStates.bind(router);
      let looks = 0;
      router.candidateStates = (allowed) => {
        looks++;
        return candidateStates(allowed);
      };

      const queued = 1_024;
      const order: string[] = [];
      // Waiters 0..4 carry priorities 5..1 (the first five out, best first); the rest 0, in arrival order.
      const priorityOf = (i: number) => (i < 5 ? 5 - i : 0);
      answers = Array.from({ length: queued }, (_, i) =>
        r.client.findBestWorker({ tokenIds: tokens(8, 100_000 + i * 8), requestId: `q-${i}`, priority: priorityOf(i) }).then((res) => {
          order.push(`q-${i}`);
          return res;
        }),
      );
      await waitFor(() => r.server.admission.depth === queued, "every call queued", 30_000);
      assert.equal((await r.client.listWorkers()).workers.length, workers, "the server answers while 1,024 calls wait");

      looks = 0;
      await r.client.setBusyThresholds({ thresholds: { routerQueueThreshold: 1 } }); // a change that admits nobody
      assert.equal(looks, 1, "one look at the workers, not one per waiter");
      assert.equal(r.server.admission.depth, queued);

      for (let k = 0; k < 5; k++) {
        looks = 0;
        await r.client.markPrefillCompleted(`busy-${k + 1}`); // one worker opens: one waiter goes, then it is busy again
        await waitFor(() => order.length === k + 1, `admission ${k + 1}`);
        assert.equal(order[k], `q-${k}`, "priority order");
        assert.ok(looks <= 2, `${looks} looks for one admission`);
      }
      assert.equal(r.server.admission.depth, queued - 5);

      await r.client.setBusyThresholds({ clear: ["router_queue_threshold"] }); // everyone goes
      await Promise.all(answers);
      assert.equal(r.server.admission.depth, 0);
      assert.deepEqual(order.slice(0, 5), ["q-0", "q-1", "q-2", "q-3", "q-4"]);
      const metrics = await r.server.metrics.registry.getSingleMetricAsString("kvrouter_queue_wait_seconds");
      assert.match(metrics, new RegExp(`kvrouter_queue_wait_seconds_count\\{outcome="routed"\\} ${queued}`));
    } finally {
      await r.close();
      await Promise.allSettled(answers); // after a failure, the calls still queued are answered UNAVAILABLE
    }
  });

  it("an EPP subset hint of 4,000 endpoints routes within it; a longer one is refused unread (503 subset_too_large)", async () => {
    // --max-worker-ranks 2,048: the router knows at most 2,048 endpoints, and a hint may list 4,096.
    const r = await startTestRouter({ blockSize: B }, { eppPort: 0, maxWorkerRanks: 2_048, models: { tokenizers: [], loraAdapters: [] } });
    const envoy = extProcClient(`127.0.0.1:${r.server.eppPort}`);
    try {
      const address = (i: number) => `10.0.${i >> 8}.${i & 255}:8000`;
      await inBatches(2_000, 100, (i) => r.client.registerWorker({ workerId: BigInt(i + 1), leaseTtlSeconds: 600, address: address(i) }));
      const body = Buffer.from(JSON.stringify({ model: "m", prompt: tokens(16), max_tokens: 1 }));
      const send = async (subset: string[] | string) => {
        const s = new EnvoyStream(envoy);
        s.send({
          request: { case: "requestHeaders", value: { headers: { headers: [{ key: ":method", rawValue: Buffer.from("POST") }] } } },
          metadataContext: { filterMetadata: { "envoy.lb.subset_hint": { "x-gateway-destination-endpoint-subset": subset } } },
        });
        s.requestBody(body, 1);
        const [res] = await s.responses(1);
        s.call.cancel();
        return res;
      };
      // Half the known endpoints, among 3,000 the router does not know: 4,000 entries.
      const allowed = Array.from({ length: 1_000 }, (_, i) => address(1_000 + i));
      const unknown = Array.from({ length: 3_000 }, (_, i) => `10.9.${i >> 8}.${i & 255}:9000`);
      const routed = destination(await send([...unknown, ...allowed]));
      const chosen = routed.header!.split(",");
      assert.ok(chosen.length >= 1);
      for (const endpoint of chosen) assert.ok(allowed.includes(endpoint), `${endpoint} is in the subset`);

      const tooLong = [...allowed, ...unknown, ...Array.from({ length: 97 }, (_, i) => `10.8.0.${i}:1`)]; // 4,097
      for (const subset of [tooLong, tooLong.join(",")]) {
        const refused = immediate(await send(subset));
        assert.equal(refused.status, 503);
        assert.equal(refused.body.error.type, "subset_too_large");
        assert.match(refused.body.error.message, /more than 4096 endpoints/);
      }
      // A hint naming no known worker is answered with a message of bounded length.
      const none = immediate(await send(unknown));
      assert.equal(none.body.error.type, "no_endpoint");
      assert.ok(none.body.error.message.length < 300, none.body.error.message);

      await waitFor(() => r.server.router.active.size === 0, "the routed stream's load freed");
      const metrics = await r.server.metrics.registry.getSingleMetricAsString("kvrouter_gateway_rejected_total");
      assert.match(metrics, /api="epp",reason="subset_too_large"\} 2/);
    } finally {
      envoy.close();
      await r.close();
    }
  });

  it("/query with more values than --max-tokens allows is refused (413) before its body is parsed", async () => {
    const r = await startTestRouter({ blockSize: B }, { httpPort: 0, maxTokens: 1_000, maxBodyBytes: 1 << 20 });
    try {
      await r.client.registerWorker({ workerId: 1n });
      const post = async (path: string, body: string) => {
        const res = await fetch(`http://127.0.0.1:${r.server.httpPort}${path}`, { method: "POST", body });
        return { status: res.status, body: (await res.json()) as { error?: string; scores?: unknown } };
      };
      const ids = (n: number) => Array.from({ length: n }, (_, i) => i % 10).join(",");
      // 100,000 ids (200 KB, under --max-body-bytes) and then not JSON at all: the count refuses it, unparsed.
      for (const path of ["/query", "/query_by_hash"]) {
        const field = path === "/query" ? "token_ids" : "block_hashes";
        const res = await post(path, `{"model_name":"m","${field}":[${ids(100_000)}, this is not JSON`);
        assert.equal(res.status, 413, path);
        assert.match(res.body.error!, /more than 2024 JSON values; token_ids and block_hashes may have at most 1000 entries \(--max-tokens\)/);
      }
      // Commas inside strings (escaped quotes too) are not values; the limit itself is still checked after parsing.
      const commas = `a\\\",${",".repeat(5_000)}`;
      assert.equal((await post("/query", `{"model_name":"m","lora_name":"${commas}","token_ids":[${ids(1_000)}]}`)).status, 200);
      const over = await post("/query", `{"model_name":"m","token_ids":[${ids(1_001)}]}`);
      assert.equal(over.status, 400);
      assert.match(over.body.error!, /token_ids has 1001 entries; the limit is 1000/);
      // The server keeps serving.
      assert.equal((await post("/query", `{"model_name":"m","token_ids":[${ids(8)}]}`)).status, 200);
      const metrics = await r.server.metrics.registry.getSingleMetricAsString("kvrouter_gateway_rejected_total");
      assert.match(metrics, /api="query",reason="too_large"\} 1/);
      assert.match(metrics, /api="query_by_hash",reason="too_large"\} 1/);
    } finally {
      await r.close();
    }
  });

  it("FindBestWorker with more allowed_workers than accepted is refused on the count, before any entry is decoded", async () => {
    // --max-worker-ranks 1,024: at most 2,048 allowed_workers.
    const r = await startTestRouter({ blockSize: B }, { maxWorkerRanks: 1_024 });
    const raw = new grpc.Client(r.address, grpc.credentials.createInsecure());
    try {
      await r.client.registerWorker({ workerId: 1n });
      const call = (body: Buffer) =>
        new Promise<{ code: number; details: string }>((resolve) => {
          const id = (b: Buffer) => b;
          raw.makeUnaryRequest(`/${KvRouterService.typeName}/FindBestWorker`, id, id, body, (err) => resolve({ code: err?.code ?? 0, details: err?.details ?? "" }));
        });
      const prompt = [0x0a, 4, 1, 2, 3, 4]; // token_ids [1, 2, 3, 4], packed
      const worker1 = [0x22, 2, 0x08, 1]; // allowed_workers { worker_id: 1 }
      const broken = [0x22, 1, 0x00]; // allowed_workers { <tag with field number 0> }: protobuf-es refuses it
      const group = [0x7b, 0x7c]; // unknown field 15 as an empty group: the hot-path decoder leaves such messages to protobuf-es
      const message = (...parts: number[][]) => Buffer.from(parts.flat());
      const times = (n: number, part: number[]) => Array.from({ length: n }, () => part).flat();

      // 100,000 entries protobuf-es could not even decode: the count answers first.
      const unread = await call(message(prompt, times(100_000, broken)));
      assert.equal(unread.code, grpc.status.INVALID_ARGUMENT);
      assert.match(unread.details, /^allowed_workers has 100000 entries; at most 2048 \(--max-worker-ranks\) are accepted$/);
      // Behind a group (protobuf-es's path): still counted.
      const grouped = await call(message(group, prompt, times(100_000, worker1)));
      assert.match(grouped.details, /^allowed_workers has 100000 entries; at most 2048/);
      // The bound is exact: 2,049 are refused, 2,048 route (naming worker 1 each time).
      assert.match((await call(message(prompt, times(2_049, worker1)))).details, /^allowed_workers has 2049 entries/);
      const ok = await r.client.findBestWorker({ tokenIds: tokens(4), allowedWorkers: Array.from({ length: 2_048 }, () => ({ workerId: 1n, dpRank: 0 })) });
      assert.equal(ok.worker!.workerId, 1n);
      // A list within the bound is decoded and checked entry by entry, as before.
      assert.match((await call(message(prompt, broken))).details, /not a valid kvrouter\.v1\.FindBestWorkerRequest/);
    } finally {
      raw.close();
      await r.close();
    }
  });
});
