// The HTTP port against a real server: Connect JSON on the gRPC handlers
// (same token check, same statuses mapped to HTTP), probes, and the scorer API.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { KvRouterService, RegisterWorkerRequestSchema, RegisterWorkerResponseSchema } from "../gen/kvrouter/v1/router_pb.js";
import { hashPrompt } from "../src/hashing/blockHash.js";
import { stored } from "./support/events.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";

const B = 4;
const TOKEN = "http-secret";
let r: TestRouter;
let base: string;

before(async () => {
  r = await startTestRouter({ blockSize: B }, { httpPort: 0, metricsPort: 0, authToken: TOKEN, maxBodyBytes: 4096 });
  base = `http://127.0.0.1:${r.server.httpPort}`;
});
after(() => r.close());

async function rpc(method: string, body: unknown, token?: string) {
  const res = await fetch(`${base}/kvrouter.v1.KvRouterService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

describe("Connect HTTP/JSON", () => {
  it("applies --auth-token to state-changing calls exactly as gRPC does", async () => {
    const denied = await rpc("RegisterWorker", { workerId: "1" });
    assert.equal(denied.status, 401);
    assert.equal(denied.body.code, "unauthenticated");
    assert.equal((await rpc("RegisterWorker", { workerId: "1" }, "wrong")).status, 401);
    assert.equal((await rpc("RegisterWorker", { workerId: "1", leaseTtlSeconds: 600, address: "10.0.0.1:8000" }, TOKEN)).status, 200);
    // A FindBestWorker without request_id is a pure query; with one it records load and needs the token.
    assert.equal((await rpc("FindBestWorker", { tokenIds: tokens(8) })).status, 200);
    assert.equal((await rpc("FindBestWorker", { tokenIds: tokens(8), requestId: "q" })).status, 401);
    assert.equal((await rpc("FindBestWorker", { tokenIds: tokens(8), requestId: "q" }, TOKEN)).status, 200);
    assert.deepEqual((await rpc("Free", { requestId: "q" }, TOKEN)).body, { found: true });
    // The same refusals are counted, whichever transport they came by.
    assert.match(await r.server.metrics.registry.metrics(), /kvrouter_unauthenticated_total\{method="RegisterWorker"\} 2/);
  });

  it("counts token refusals under the method's wire name, as declared at start, whichever transport refused them", async () => {
    const scrape = async () => {
      const text = await (await fetch(`http://127.0.0.1:${r.server.metricsPort}/metrics`)).text();
      return text.split("\n").filter((l) => l.startsWith("kvrouter_unauthenticated_total{"));
    };
    const freeCount = (series: string[]) => Number(series.find((l) => l.includes('method="Free"'))!.split(" ")[1]);
    const before = await scrape();
    await assert.rejects(r.client.free("f1"), (e: { code: number }) => e.code === 16); // gRPC UNAUTHENTICATED
    assert.equal((await rpc("Free", { requestId: "f1" })).status, 401);
    const after = await scrape();
    assert.equal(freeCount(after), freeCount(before) + 2);
    const methods = (series: string[]) => series.map((l) => /method="([^"]*)"/.exec(l)![1]).sort();
    assert.deepEqual(methods(after), methods(before), "no series besides the ones declared at start");
    assert.deepEqual(methods(after), KvRouterService.methods.map((m) => m.name).sort());
  });

  it("maps router statuses to HTTP: invalid → 400, not found → 404, already exists → 409", async () => {
    const bad = await rpc("RegisterWorker", { workerId: "2", address: "not an address" }, TOKEN);
    assert.equal(bad.status, 400);
    assert.match(bad.body.message, /address must look like ip:port/);
    assert.equal((await rpc("KeepAlive", { workerId: "99" }, TOKEN)).status, 404);
    assert.equal((await rpc("FindBestWorker", { tokenIds: tokens(8), requestId: "dup" }, TOKEN)).status, 200);
    assert.equal((await rpc("FindBestWorker", { tokenIds: tokens(8), requestId: "dup" }, TOKEN)).status, 409);
    await rpc("Free", { requestId: "dup" }, TOKEN);
    const lw = await rpc("ListWorkers", {});
    assert.equal(lw.body.workers[0].address, "10.0.0.1:8000");
  });

  it("answers protobuf bytes that do not parse with 400 invalid_argument, counted, and changes nothing", async () => {
    const proto = (method: string, body: Uint8Array) =>
      fetch(`${base}/kvrouter.v1.KvRouterService/${method}`, {
        method: "POST",
        headers: { "content-type": "application/proto", authorization: `Bearer ${TOKEN}` },
        body,
      });
    const invalidCount = async (method: string) =>
      Number(/ (\d+)$/.exec((await r.server.metrics.registry.metrics()).split("\n").find((l) => l.startsWith(`kvrouter_invalid_requests_total{method="${method}"}`))!)![1]);
    const workersBefore = (await r.client.listWorkers()).workers.length;
    const countedBefore = await invalidCount("RegisterWorker");
    const garbage = [Uint8Array.of(0xff, 0xff, 0xff, 0x07, 0x01), Uint8Array.of(0x0a, 0x10, 0x01), Uint8Array.of(0x08)]; // bad tag, truncated field, truncated varint
    for (const method of ["RegisterWorker", "FindBestWorker", "SetBusyThresholds"]) {
      for (const bytes of garbage) {
        const res = await proto(method, bytes);
        const body = (await res.json()) as { code: string; message: string };
        assert.equal(res.status, 400, `${method} ${bytes}`);
        assert.equal(body.code, "invalid_argument");
        assert.match(body.message, new RegExp(`^request is not a valid kvrouter\\.v1\\.${method}Request: `));
      }
    }
    assert.equal(await invalidCount("RegisterWorker"), countedBefore + garbage.length);
    assert.equal((await r.client.listWorkers()).workers.length, workersBefore, "nothing registered");
    // Valid protobuf bytes are served as before.
    const ok = await proto("RegisterWorker", toBinary(RegisterWorkerRequestSchema, create(RegisterWorkerRequestSchema, { workerId: 77n })));
    assert.equal(ok.status, 200);
    assert.equal(fromBinary(RegisterWorkerResponseSchema, new Uint8Array(await ok.arrayBuffer())).leaseTtlSeconds > 0, true);
    assert.equal((await rpc("DeregisterWorker", { workerId: "77" }, TOKEN)).status, 200);
  });

  it("answers the probes and names the endpoints on an unknown path", async () => {
    assert.equal(await (await fetch(`${base}/healthz`)).text(), "ok\n");
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const missing = await fetch(`${base}/nope`);
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /\/healthz/);
  });
});

describe("scorer API", () => {
  let open: TestRouter;
  let openBase: string;
  before(async () => {
    open = await startTestRouter({ blockSize: B }, { httpPort: 0, maxBodyBytes: 4096 });
    openBase = `http://127.0.0.1:${open.server.httpPort}`;
  });
  after(() => open.close());
  const post = async (path: string, body: string) => {
    const res = await fetch(`${openBase}${path}`, { method: "POST", body });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };

  it("/query_by_hash takes Dynamo's local block hashes (i64, beyond 2^53) and matches /query", async () => {
    const ids = tokens(12, 500);
    await open.client.sendEvents([stored(1, 1, ids, B, 100n)]);
    const local = hashPrompt(ids, B).local.map((h) => BigInt.asIntN(64, h).toString());
    const byHash = await post("/query_by_hash", `{"model_name":"m","block_hashes":[${local.join(",")}]}`);
    const byTokens = await post("/query", JSON.stringify({ model_name: "m", token_ids: ids }));
    assert.equal(byHash.status, 200);
    assert.deepEqual(byHash.body, byTokens.body);
    assert.deepEqual(byTokens.body.scores, { "1": { "0": 12 } });
    assert.deepEqual(byTokens.body.frequencies, [1, 1, 1]);
  });

  it("refuses bad queries with a status and a message, counted by reason", async () => {
    assert.equal((await post("/query", "nope")).status, 400);
    assert.equal((await post("/query", JSON.stringify({ token_ids: [1] }))).status, 400, "model_name is required");
    assert.equal((await post("/query", JSON.stringify({ model_name: "m", token_ids: [-1] }))).status, 400);
    assert.equal((await post("/query", JSON.stringify({ model_name: "m", token_ids: tokens(2000) }))).status, 413);
    assert.equal((await fetch(`${openBase}/query`)).status, 405);
    const text = await open.server.metrics.registry.metrics();
    assert.match(text, /kvrouter_gateway_rejected_total\{api="query",reason="invalid"\} 3/);
    assert.match(text, /kvrouter_gateway_rejected_total\{api="query",reason="too_large"\} 1/);
  });
});
