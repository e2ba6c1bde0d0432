// Tracing in process: a router whose spans go to the SDK's InMemorySpanExporter
// (injected through ServerOptions.tracing), driven over gRPC, Connect and the
// EPP (Envoy's ext_proc bytes, test/support/envoy.ts). Checks each span's
// name, attributes and status, that a traceparent sent by the client (gRPC
// metadata, HTTP header, the request headers Envoy forwards) makes it the
// parent, and that the EPP hands its own context on to the engine. The router
// makes the SDK spans of ended requests in batches: `finished()` flushes
// first, so every call answered so far has its span.
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { hrTimeToNanoseconds } from "@opentelemetry/core";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import type { ProcessingResponse } from "../gen/envoy/service/ext_proc/v3/external_processor_pb.js";
import { EnvoyStream, destination, extProcClient, immediate } from "./support/envoy.js";
import { stored } from "./support/events.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";

const B = 4;
const ADDR = ["10.0.0.1:8000", "10.0.0.2:8000"];
const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID = "00f067aa0ba902b7";
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_ID}-01`;
const SERVICE = "kvrouter.v1.KvRouterService";

const exporter = new InMemorySpanExporter();
let r: TestRouter;
let envoy: grpc.Client;
let http: string;

before(async () => {
  r = await startTestRouter(
    { blockSize: B },
    { eppPort: 0, httpPort: 0, tracing: { serviceName: "kv-router-test", exporter } },
  );
  for (const [i, address] of ADDR.entries()) await r.client.registerWorker({ workerId: BigInt(i + 1), leaseTtlSeconds: 600, address });
  // Worker 2 holds the first two blocks of tokens(8): it wins on overlap.
  await r.client.sendEvents([stored(2, 1, tokens(8), B, 100n)]);
  envoy = extProcClient(`127.0.0.1:${r.server.eppPort}`);
  http = `http://127.0.0.1:${r.server.httpPort}`;
});
after(async () => {
  envoy.close();
  await r.close();
});
beforeEach(() => {
  r.server.tracing!.flush();
  exporter.reset();
});

/** The spans of every call answered so far. */
function finished(): ReadableSpan[] {
  r.server.tracing!.flush();
  return exporter.getFinishedSpans();
}

function traceMetadata(traceparent = TRACEPARENT): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("traceparent", traceparent);
  md.set("tracestate", "vendor=abc");
  return md;
}

/** The one finished span named `name` (the SimpleSpanProcessor hands each over as it ends). */
function only(name: string): ReadableSpan {
  const spans = finished().filter((s) => s.name === name);
  assert.equal(spans.length, 1, `one ${name} span, got ${finished().map((s) => s.name).join(", ") || "none"}`);
  return spans[0];
}

function assertChildOfTraceparent(span: ReadableSpan): void {
  assert.equal(span.spanContext().traceId, TRACE_ID);
  assert.equal(span.parentSpanContext?.spanId, PARENT_ID);
  assert.equal(span.parentSpanContext?.isRemote, true);
  assert.equal(span.spanContext().traceState?.get("vendor"), "abc", "tracestate carried over");
}

describe("tracing: gRPC", () => {
  it("FindBestWorker: a server span in the caller's trace, with the chosen worker, overlap, queue wait and cost breakdown", async () => {
    const res = await r.client.findBestWorker({ tokenIds: tokens(8), requestId: "g-1", explain: true }, {}, traceMetadata());
    const span = only(`${SERVICE}/FindBestWorker`);
    assert.equal(span.kind, SpanKind.SERVER);
    assertChildOfTraceparent(span);
    assert.equal(span.status.code, SpanStatusCode.UNSET);
    assert.equal(span.resource.attributes["service.name"], "kv-router-test");
    const a = span.attributes;
    assert.equal(a["rpc.system"], "grpc");
    assert.equal(a["rpc.service"], SERVICE);
    assert.equal(a["rpc.method"], "FindBestWorker");
    assert.equal(a["rpc.grpc.status_code"], 0);
    assert.equal(a["kvrouter.worker.id"], "2");
    assert.equal(a["kvrouter.worker.dp_rank"], 0);
    assert.equal(a["kvrouter.overlap_blocks"], 2);
    assert.equal(a["kvrouter.prompt_blocks"], 2);
    assert.equal(a["kvrouter.queue.wait_ms"], res.queuedMs);
    assert.equal(a["kvrouter.candidates"], 2);
    assert.equal(a["kvrouter.request_id"], "g-1");
    assert.equal(a["kvrouter.prompt_tokens"], 8);
    // The cost breakdown is the chosen worker's score, as explain reports it.
    const chosen = res.scores.find((s) => s.worker?.workerId === 2n)!;
    assert.equal(a["kvrouter.cost.logit"], chosen.logit);
    assert.equal(a["kvrouter.cost.prefill_blocks"], chosen.prefillBlocks);
    assert.equal(a["kvrouter.cost.decode_blocks"], Number(chosen.decodeBlocks));
    await r.client.free("g-1");
  });

  it("without a traceparent the span starts a trace of its own", async () => {
    await r.client.findBestWorker({ tokenIds: tokens(8) });
    const span = only(`${SERVICE}/FindBestWorker`);
    assert.equal(span.parentSpanContext, undefined);
    assert.match(span.spanContext().traceId, /^[0-9a-f]{32}$/);
    assert.notEqual(span.spanContext().traceId, TRACE_ID);
  });

  it("a refusal sets the span's status to error, named by the gRPC status", async () => {
    await assert.rejects(r.client.findBestWorker({ tokenIds: [] }, {}, traceMetadata()), { code: grpc.status.INVALID_ARGUMENT });
    const span = only(`${SERVICE}/FindBestWorker`);
    assertChildOfTraceparent(span);
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.match(span.status.message!, /^INVALID_ARGUMENT: token_ids is empty/);
    assert.equal(span.attributes["error.type"], "INVALID_ARGUMENT");
    assert.equal(span.attributes["rpc.grpc.status_code"], grpc.status.INVALID_ARGUMENT);
  });

  it("MarkPrefillCompleted and Free: a span each, with the request id and whether it was active", async () => {
    await r.client.findBestWorker({ tokenIds: tokens(8), requestId: "g-2" });
    finished();
    exporter.reset();
    assert.equal((await r.client.markPrefillCompleted("g-2", traceMetadata())).found, true);
    assert.equal((await r.client.free("g-2", traceMetadata())).found, true);
    assert.equal((await r.client.free("g-2")).found, false);
    const prefill = only(`${SERVICE}/MarkPrefillCompleted`);
    assertChildOfTraceparent(prefill);
    assert.deepEqual([prefill.attributes["kvrouter.request_id"], prefill.attributes["kvrouter.found"]], ["g-2", true]);
    const frees = finished().filter((s) => s.name === `${SERVICE}/Free`);
    assert.deepEqual(
      frees.map((s) => [s.attributes["kvrouter.found"], s.spanContext().traceId === TRACE_ID]),
      [
        [true, true],
        [false, false],
      ],
    );
  });

  it("calls other than the per-request ones are not traced", async () => {
    await r.client.listWorkers();
    await r.client.keepAlive(1n);
    assert.deepEqual(finished(), []);
  });

  it("a sampled-out caller (trace flags 00) gets no span exported (parent-based sampling, the SDK's default)", async () => {
    await r.client.findBestWorker({ tokenIds: tokens(8) }, {}, traceMetadata(`00-${TRACE_ID}-${PARENT_ID}-00`));
    assert.deepEqual(finished(), []);
  });
});

describe("tracing: spans made in batches", () => {
  it("keep the start of their request, not the moment the SDK span is made", () => {
    const tracing = r.server.tracing!;
    const none = () => undefined;
    const a = tracing.startRpc("grpc", SERVICE, "A", none);
    // The SDK places a span on the wall clock to the millisecond: let B start a few later.
    for (const until = performance.now() + 3; performance.now() < until; );
    const b = tracing.startRpc("grpc", SERVICE, "B", none);
    // B ends first, so the batch makes B's span before A's.
    tracing.end(b);
    tracing.end(a);
    const [sb, sa] = finished();
    assert.deepEqual([sb.name, sa.name], [`${SERVICE}/B`, `${SERVICE}/A`]);
    assert.ok(hrTimeToNanoseconds(sa.startTime) < hrTimeToNanoseconds(sb.startTime), "A started before B");
  });
});

describe("tracing: Connect", () => {
  it("FindBestWorker over HTTP/JSON: the traceparent header parents the span; rpc.system is connect_rpc", async () => {
    const res = await fetch(`${http}/${SERVICE}/FindBestWorker`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: TRACEPARENT, tracestate: "vendor=abc" },
      body: JSON.stringify({ tokenIds: tokens(8) }),
    });
    assert.equal(res.status, 200);
    const span = only(`${SERVICE}/FindBestWorker`);
    assertChildOfTraceparent(span);
    assert.equal(span.attributes["rpc.system"], "connect_rpc");
    assert.equal(span.attributes["rpc.method"], "FindBestWorker");
    assert.equal(span.attributes["kvrouter.worker.id"], "2");
    assert.equal(span.attributes["kvrouter.overlap_blocks"], 2);
  });

  it("a refused call: error status with the gRPC status name, and Connect's code", async () => {
    const res = await fetch(`${http}/${SERVICE}/Free`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: TRACEPARENT },
      body: JSON.stringify({ requestId: "" }),
    });
    assert.equal(res.status, 400);
    const span = only(`${SERVICE}/Free`);
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.match(span.status.message!, /^INVALID_ARGUMENT: request_id is empty/);
    assert.equal(span.attributes["rpc.connect_rpc.error_code"], "invalid_argument");
  });
});

describe("tracing: EPP", () => {
  const HEADERS = { ":method": "POST", ":path": "/v1/completions?x=1", "content-type": "application/json", "x-request-id": "epp-t" };
  const body = Buffer.from(JSON.stringify({ model: "m", prompt: tokens(8), max_tokens: 1 }));

  /** The headers the EPP sets on the request it sends on (the header mutation), by name. */
  function mutation(res: ProcessingResponse): Map<string, string> {
    assert.equal(res.response.case, "requestHeaders");
    const set = res.response.case === "requestHeaders" ? (res.response.value.response?.headerMutation?.setHeaders ?? []) : [];
    return new Map(set.map((h) => [h.header!.key, Buffer.from(h.header!.rawValue).toString()]));
  }

  async function finish(s: EnvoyStream): Promise<void> {
    s.responseHeaders(200);
    s.responseBody(Buffer.from("{}"), true);
    await s.responses(4);
    s.call.end();
    await s.closed();
  }

  it("a pick is a span in the client's trace (from the request headers Envoy forwards), and the engine gets it as parent", async () => {
    const s = new EnvoyStream(envoy);
    s.requestHeaders({ ...HEADERS, traceparent: TRACEPARENT, tracestate: "vendor=abc" });
    s.requestBody(body);
    const [headers] = await s.responses(2);
    const span = only("kvrouter.epp.pick");
    assert.equal(span.kind, SpanKind.SERVER);
    assertChildOfTraceparent(span);
    const a = span.attributes;
    assert.equal(a["kvrouter.worker.id"], "2");
    assert.equal(a["kvrouter.overlap_blocks"], 2);
    assert.equal(a["kvrouter.prompt_blocks"], 2);
    assert.equal(a["kvrouter.queue.wait_ms"], 0);
    assert.equal(typeof a["kvrouter.cost.logit"], "number");
    assert.equal(a["kvrouter.request_id"], "epp-t");
    assert.equal(a["http.request.method"], "POST");
    assert.equal(a["url.path"], "/v1/completions", "no query string");
    assert.equal(a["kvrouter.epp.endpoints"], destination(headers).header);
    assert.equal(destination(headers).header!.split(",")[0], ADDR[1]);
    // The traceparent sent on names the pick's span: the engine's spans become its children.
    const set = mutation(headers);
    assert.equal(set.get("traceparent"), `00-${TRACE_ID}-${span.spanContext().spanId}-01`);
    assert.equal(set.get("tracestate"), "vendor=abc");
    await finish(s);
    assert.equal(finished().length, 1, "one span per pick; the response adds none");
  });

  it("without a traceparent the pick starts a trace, and hands that on", async () => {
    const s = new EnvoyStream(envoy);
    s.requestHeaders(HEADERS);
    s.requestBody(body);
    const [headers] = await s.responses(2);
    const span = only("kvrouter.epp.pick");
    assert.equal(span.parentSpanContext, undefined);
    assert.equal(mutation(headers).get("traceparent"), `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`);
    await finish(s);
  });

  it("a refused pick is an error span with the HTTP status the client gets", async () => {
    const s = new EnvoyStream(envoy);
    s.requestHeaders({ ...HEADERS, traceparent: TRACEPARENT }, { subset: ["10.9.9.9:1"] });
    s.requestBody(body);
    const [res] = await s.responses(1);
    assert.equal(immediate(res).status, 503);
    await s.closed();
    const span = only("kvrouter.epp.pick");
    assert.equal(span.spanContext().traceId, TRACE_ID);
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.match(span.status.message!, /^503 no_endpoint: /);
    assert.equal(span.attributes["http.response.status_code"], 503);
    assert.equal(span.attributes["error.type"], "no_endpoint");
  });
});
