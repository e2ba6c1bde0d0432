// The endpoint picker against ext_proc streams Envoy never sends (issue 24):
// a stream that ends its request again and again, and many streams that
// together buffer more request body than the router should hold. Driven by a
// grpc-js client that speaks ext_proc as Envoy does (test/support/envoy.ts);
// every check reads the router's public figures: ListWorkers' active requests
// and the kvrouter_epp_* gauges on /metrics.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import type { ProcessingResponse } from "../gen/envoy/service/ext_proc/v3/external_processor_pb.js";
import { EnvoyStream, destination, extProcClient, immediate } from "./support/envoy.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const ADDRESS = "10.0.0.9:8000";
const HEADERS = { ":method": "POST", ":path": "/v1/completions", "content-type": "application/json" };
const completion = (ids: number[], padding = 0) => Buffer.from(JSON.stringify({ model: "any", prompt: ids, user: "x".repeat(padding) }));

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function rig(server: Parameters<typeof startTestRouter>[1], router: Parameters<typeof startTestRouter>[0] = {}) {
  const r = await startTestRouter(router, { eppPort: 0, ...server });
  const envoy = extProcClient(`127.0.0.1:${r.server.eppPort}`);
  cleanups.push(() => r.close(), () => envoy.close());
  await r.client.registerWorker({ workerId: 1n, leaseTtlSeconds: 3600, address: ADDRESS });
  return { r, envoy };
}

async function gauge(r: TestRouter, name: string): Promise<number> {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(await r.server.metrics.registry.metrics());
  assert.ok(m, `${name} is exported`);
  return Number(m[1]);
}

/** The EPP's in-flight gauge and the router's own active-request count: they must always agree. */
async function held(r: TestRouter): Promise<{ eppInFlight: number; active: number }> {
  const { workers } = await r.client.listWorkers();
  return { eppInFlight: await gauge(r, "kvrouter_epp_in_flight"), active: Number(workers.reduce((n, w) => n + w.activeRequests, 0n)) };
}

const emptyEnd = (s: EnvoyStream) => s.send({ request: { case: "requestBody", value: { body: new Uint8Array(0), endOfStream: true } } });

/** One well-behaved request up to its routing answer. */
async function routed(envoy: grpc.Client, ids: number[]): Promise<EnvoyStream> {
  const s = new EnvoyStream(envoy);
  s.requestHeaders(HEADERS);
  s.requestBody(completion(ids), 1);
  const [headers] = await s.responses(1);
  assert.equal(destination(headers).header, ADDRESS);
  return s;
}

async function finish(s: EnvoyStream): Promise<void> {
  s.responseHeaders(200);
  s.responseBody(Buffer.from("{}"), true);
  await s.responses(4);
  s.call.end();
  await s.closed();
}

const routingAnswers = (all: ProcessingResponse[]) => all.filter((m) => m.response.case === "requestHeaders").length;

describe("EPP streams that end their request more than once", () => {
  it("route at most once, answer the extra end 400, and hold nothing once closed, cancelled or expired", async () => {
    let clock = 1_000_000;
    const { r, envoy } = await rig({ eppMaxInFlight: 3, now: () => clock }, { activeRequestTtlMs: 60_000 });
    const zero = { eppInFlight: 0, active: 0 };

    // The tracker's case: headers, a body, then 9 more empty bodies with end_of_stream, all at once.
    const burst = new EnvoyStream(envoy);
    burst.requestHeaders(HEADERS);
    burst.requestBody(completion(tokens(8, 0)), 1);
    for (let i = 0; i < 9; i++) emptyEnd(burst);
    await burst.closed();
    let all = await burst.responses(Infinity);
    assert.ok(routingAnswers(all) <= 1, "routed at most once");
    const last = immediate(all.at(-1)!);
    assert.equal(last.status, 400);
    assert.equal(last.body.error.type, "malformed");
    assert.deepEqual(await held(r), zero, "after the server ended the stream");

    // Routed first, the extra ends after: held while it runs, freed when the extra end is refused.
    const late = await routed(envoy, tokens(8, 100));
    assert.deepEqual(await held(r), { eppInFlight: 1, active: 1 }, "during: one request, one slot");
    for (let i = 0; i < 9; i++) emptyEnd(late);
    await late.closed();
    all = await late.responses(Infinity);
    assert.equal(routingAnswers(all), 1);
    assert.equal(immediate(all.at(-1)!).status, 400);
    assert.deepEqual(await held(r), zero, "after close");

    // request_headers with end_of_stream (a request without a body), sent three times.
    const bare = new EnvoyStream(envoy);
    bare.requestHeaders(HEADERS, { endOfStream: true });
    const [first] = await bare.responses(1);
    assert.equal(destination(first).header, ADDRESS);
    assert.deepEqual(await held(r), { eppInFlight: 1, active: 1 }, "during");
    bare.requestHeaders(HEADERS, { endOfStream: true });
    bare.requestHeaders(HEADERS, { endOfStream: true });
    await bare.closed();
    all = await bare.responses(Infinity);
    assert.equal(routingAnswers(all), 1);
    assert.equal(immediate(all.at(-1)!).status, 400);
    assert.deepEqual(await held(r), zero, "after close");

    // Routed, then cancelled by the client.
    const cancelled = await routed(envoy, tokens(8, 200));
    assert.deepEqual(await held(r), { eppInFlight: 1, active: 1 }, "during");
    cancelled.call.cancel();
    await cancelled.closed();
    await waitFor(async () => (await held(r)).active === 0, "the cancelled stream's load is freed");
    assert.deepEqual(await held(r), zero, "after a cancel");

    // Routed and never finished: --active-request-ttl frees the load, and the EPP's count follows.
    const forgotten = await routed(envoy, tokens(8, 300));
    assert.deepEqual(await held(r), { eppInFlight: 1, active: 1 }, "during");
    clock += 61_000;
    await waitFor(async () => (await held(r)).active === 0, "the router expires the request");
    assert.deepEqual(await held(r), zero, "after the TTL, with the stream still open");
    await finish(forgotten);
    assert.deepEqual(await held(r), zero, "after the expired stream closes");

    // Nothing leaked: --epp-max-in-flight 3 still admits 3 well-behaved requests at once, and sheds the 4th.
    const three = [await routed(envoy, tokens(8, 400)), await routed(envoy, tokens(8, 500)), await routed(envoy, tokens(8, 600))];
    assert.deepEqual(await held(r), { eppInFlight: 3, active: 3 });
    const fourth = new EnvoyStream(envoy);
    fourth.requestHeaders(HEADERS);
    fourth.requestBody(completion(tokens(8, 700)), 1);
    assert.equal(immediate((await fourth.responses(1))[0]).status, 429);
    await fourth.closed();
    for (const s of three) await finish(s);
    assert.deepEqual(await held(r), zero);
    await finish(await routed(envoy, tokens(8, 800)));
    assert.deepEqual(await held(r), zero);
  });
});

describe("EPP request bodies past --epp-max-buffered-bytes", () => {
  it("refuses the body that would pass the bound with 503, routes the others, and holds no bytes once streams end", async () => {
    const { r, envoy } = await rig({ maxBodyBytes: 64 * 1024, eppMaxBufferedBytes: 80_000 });
    const buffered = () => gauge(r, "kvrouter_epp_buffered_bytes");
    const body = (offset: number) => completion(tokens(8, offset), 50_000 - completion(tokens(8, offset)).length);
    /** Headers and the first 30,000 bytes of a 50,000-byte body; the rest is still to come. */
    const open = (b: Buffer) => {
      const s = new EnvoyStream(envoy);
      s.requestHeaders(HEADERS);
      s.send({ request: { case: "requestBody", value: { body: b.subarray(0, 30_000), endOfStream: false } } });
      return s;
    };
    const bodyA = body(0);
    assert.equal(bodyA.length, 50_000);

    const a = open(bodyA);
    const b = open(body(100));
    await waitFor(async () => (await buffered()) === 60_000, "two half bodies held");
    const c = open(body(200));
    const [refusal] = await c.responses(1);
    assert.equal(immediate(refusal).status, 503);
    assert.equal(immediate(refusal).body.error.type, "buffers_full");
    await c.closed();
    assert.equal(await buffered(), 60_000, "the refused body holds nothing");

    // The earlier streams still route: A's body fills the bound exactly.
    a.send({ request: { case: "requestBody", value: { body: bodyA.subarray(30_000), endOfStream: true } } });
    const [headers, echoed] = await a.responses(2);
    assert.equal(destination(headers).header, ADDRESS);
    const streamed = echoed.response.case === "requestBody" ? echoed.response.value.response?.bodyMutation?.mutation : undefined;
    assert.equal(streamed?.case === "streamedResponse" && Buffer.from(streamed.value.body).equals(bodyA), true, "A's body passes through whole");
    assert.equal(await buffered(), 30_000, "A's body is let go once routed");

    b.call.cancel();
    await b.closed();
    await waitFor(async () => (await buffered()) === 0, "B's half body is let go on cancel");
    await finish(a);

    // A half body abandoned by a client that closes its side is let go too.
    const d = open(body(300));
    await waitFor(async () => (await buffered()) === 30_000, "D's half body held");
    d.call.end();
    await d.closed();
    assert.equal(await buffered(), 0);

    // With the bytes back, a whole new body is accepted and routed.
    const e = new EnvoyStream(envoy);
    e.requestHeaders(HEADERS);
    e.requestBody(body(400), 4);
    assert.equal(destination((await e.responses(1))[0]).header, ADDRESS);
    await finish(e);
    assert.equal(await buffered(), 0);
    assert.equal(await gauge(r, "kvrouter_epp_in_flight"), 0);
  });
});
