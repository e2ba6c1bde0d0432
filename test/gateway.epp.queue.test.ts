// The endpoint picker and the router's admission queue: a gateway request
// waits in the queue past the queue threshold and is answered when a worker
// frees up, is refused with 429 when every worker is past a busy threshold,
// and leaves the queue holding no load when Envoy goes away. Driven by a
// grpc-js client that speaks ext_proc as Envoy does (test/support/envoy.ts).
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import type { AdmissionConfig } from "../src/router/admissionQueue.js";
import { EnvoyStream, destination, extProcClient, immediate } from "./support/envoy.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;
const ADDRESS = "10.0.0.7:8000";
const HEADERS = { ":method": "POST", ":path": "/v1/completions", "content-type": "application/json" };
const completion = (ids: number[]) => Buffer.from(JSON.stringify({ model: "any", prompt: ids, max_tokens: 1 }));

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A router with the EPP open and one worker whose step budget is 8 tokens; `hold` puts 16 prefill tokens on it. */
async function rig(admission: AdmissionConfig): Promise<{ r: TestRouter; envoy: grpc.Client; hold: () => Promise<void> }> {
  const r = await startTestRouter({ blockSize: B }, { eppPort: 0, admission });
  const envoy = extProcClient(`127.0.0.1:${r.server.eppPort}`);
  cleanups.push(() => r.close(), () => envoy.close());
  await r.client.registerWorker({ workerId: 1n, leaseTtlSeconds: 600, address: ADDRESS, maxNumBatchedTokens: 8n });
  const hold = async () => {
    await r.client.findBestWorker({ tokenIds: tokens(16, 500), requestId: "hold" });
  };
  return { r, envoy, hold };
}

function ask(envoy: grpc.Client, ids: number[]): EnvoyStream {
  const s = new EnvoyStream(envoy);
  s.requestHeaders(HEADERS);
  s.requestBody(completion(ids), 1);
  return s;
}

describe("EPP and the admission queue", () => {
  it("waits in the queue past the queue threshold and is routed when the worker frees up", async () => {
    const { r, envoy, hold } = await rig({ queuePolicy: "fcfs", maxQueued: 16, thresholds: { routerQueueThreshold: 1 } });
    await hold();
    const s = ask(envoy, tokens(8, 0));
    await waitFor(() => r.server.admission.depth === 1, "the gateway request is queued");
    await r.client.markPrefillCompleted("hold"); // the worker's prefill is done: it has room again
    const [headers] = await s.responses(1);
    assert.equal(destination(headers).header, ADDRESS);
    assert.equal(r.server.admission.depth, 0);
    s.call.end();
    await s.closed();
  });

  it("answers 429 at once when every worker is past a busy threshold", async () => {
    const { envoy, hold } = await rig({ queuePolicy: "fcfs", maxQueued: 16, thresholds: { activePrefillTokensThreshold: 4 } });
    await hold();
    const s = ask(envoy, tokens(8, 0));
    const [res] = await s.responses(1);
    const refusal = immediate(res);
    assert.equal(refusal.status, 429);
    assert.match(refusal.body.error.message, /busy thresholds/);
  });

  it("leaves the queue and holds no load when Envoy cancels the stream", async () => {
    const { r, envoy, hold } = await rig({ queuePolicy: "fcfs", maxQueued: 16, thresholds: { routerQueueThreshold: 1 } });
    await hold();
    const s = ask(envoy, tokens(8, 0));
    await waitFor(() => r.server.admission.depth === 1, "the gateway request is queued");
    s.call.cancel();
    await waitFor(() => r.server.admission.depth === 0, "it left the queue");
    await r.client.free("hold");
    const { workers } = await r.client.listWorkers();
    assert.equal(workers[0].activeRequests, 0n, "nothing routed for the cancelled request");
  });
});
