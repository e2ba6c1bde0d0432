// Tracing end to end: the real `kv-router` process with --otlp-endpoint
// pointing at a real OTLP/gRPC receiver (test/support/otlpReceiver.ts, built
// from the published OTLP protos), so spans cross the SDK's batch processor
// and OTLP exporter onto the wire. Also: how the flag and the OTEL_*
// variables turn into settings, and the flag's validation.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import yargs from "yargs";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { serveOptions } from "../src/cli/options.js";
import { otlpEndpointOf, otlpEndpointProblem, otlpProtocolWarning, tracingSettingsFrom } from "../src/cli/tracingFlags.js";
import { type RouterProcess, spawnRouter } from "./support/cliProcess.js";
import { stored } from "./support/events.js";
import { type OtlpReceiver, startOtlpReceiver } from "./support/otlpReceiver.js";
import { tokens } from "./support/router.js";

const TRACE_ID = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID = "b7ad6b7169203331";

describe("tracing over OTLP/gRPC, the real process", () => {
  let receiver: OtlpReceiver;
  let router: RouterProcess;
  let client: KvRouterClient;

  before(async () => {
    receiver = await startOtlpReceiver();
    router = await spawnRouter(
      ["--block-size", "4", "--grpc-port", "0", "--metrics-port", "-1", "--host", "127.0.0.1", "--otlp-endpoint", receiver.endpoint],
      // A short batch delay: spans reach the receiver within the test's patience, not 5 s later.
      { OTEL_SERVICE_NAME: "kv-router-e2e", OTEL_BSP_SCHEDULE_DELAY: "100" },
    );
    client = new KvRouterClient(router.grpcAddress);
  });
  after(async () => {
    client?.close();
    await router?.stop();
    await receiver?.stop();
  });

  it("a FindBestWorker is exported as a span of the caller's trace, with the decision's attributes", async () => {
    await client.registerWorker({ workerId: 7n, leaseTtlSeconds: 600, dpRanks: [0, 1] });
    await client.sendEvents([stored(7, 1, tokens(12), 4, 500n, { dpRank: 1 })]);
    const md = new grpc.Metadata();
    md.set("traceparent", `00-${TRACE_ID}-${PARENT_ID}-01`);
    const res = await client.findBestWorker({ tokenIds: tokens(16), requestId: "e2e-1" }, {}, md);
    assert.equal(res.worker?.dpRank, 1);

    const span = await receiver.waitFor((s) => s.name === "kvrouter.v1.KvRouterService/FindBestWorker");
    assert.equal(span.traceId, TRACE_ID);
    assert.equal(span.parentSpanId, PARENT_ID);
    assert.equal(span.kind, "SPAN_KIND_SERVER");
    assert.equal(span.status.code, "STATUS_CODE_UNSET");
    assert.equal(span.resource["service.name"], "kv-router-e2e");
    assert.equal(span.attributes["rpc.system"], "grpc");
    assert.equal(span.attributes["rpc.service"], "kvrouter.v1.KvRouterService");
    assert.equal(span.attributes["rpc.method"], "FindBestWorker");
    assert.equal(span.attributes["rpc.grpc.status_code"], 0);
    assert.equal(span.attributes["kvrouter.worker.id"], "7");
    assert.equal(span.attributes["kvrouter.worker.dp_rank"], 1);
    assert.equal(span.attributes["kvrouter.overlap_blocks"], 3);
    assert.equal(span.attributes["kvrouter.prompt_blocks"], 4);
    assert.equal(span.attributes["kvrouter.queue.wait_ms"], 0);
    assert.equal(span.attributes["kvrouter.request_id"], "e2e-1");
    assert.equal(typeof span.attributes["kvrouter.cost.logit"], "number");
    assert.equal(typeof span.attributes["kvrouter.cost.prefill_blocks"], "number");
    assert.equal(typeof span.attributes["kvrouter.cost.decode_blocks"], "number");
  });

  it("a refused Free is exported with an error status naming the gRPC status", async () => {
    await assert.rejects(client.free(""), { code: grpc.status.INVALID_ARGUMENT });
    const span = await receiver.waitFor((s) => s.name === "kvrouter.v1.KvRouterService/Free");
    assert.equal(span.status.code, "STATUS_CODE_ERROR");
    assert.match(span.status.message, /^INVALID_ARGUMENT: /);
    assert.equal(span.attributes["error.type"], "INVALID_ARGUMENT");
  });

  it("on SIGTERM the router exports what it still holds, then exits cleanly", async () => {
    await client.free("e2e-1");
    assert.equal(await router.stop(), 0, router.stderr());
    const frees = receiver.spans.filter((s) => s.name === "kvrouter.v1.KvRouterService/Free" && s.attributes["kvrouter.found"] === true);
    assert.equal(frees.length, 1, "the last Free's span arrived by the time the process exited");
    assert.match(router.stderr(), /"tracing":"http:\/\/127\.0\.0\.1:\d+ as kv-router-e2e"/, "the start log says where spans go");
  });
});

describe("tracing settings from the flag and the OTEL_* variables", () => {
  it("is off unless an endpoint is given; --otlp-endpoint wins over the traces variable, which wins over the general one", () => {
    assert.equal(tracingSettingsFrom(undefined, {}), undefined);
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://general:4317", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://traces:4317" };
    assert.deepEqual(tracingSettingsFrom("http://flag:4317", env), { endpoint: "http://flag:4317", serviceName: "kv-router" });
    assert.deepEqual(otlpEndpointOf(undefined, env), { url: "http://traces:4317", from: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" });
    assert.deepEqual(otlpEndpointOf(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: "https://general:4317" }), {
      url: "https://general:4317",
      from: "OTEL_EXPORTER_OTLP_ENDPOINT",
    });
    assert.equal(tracingSettingsFrom(undefined, { ...env, OTEL_SERVICE_NAME: "router-a" })?.serviceName, "router-a");
  });

  it("refuses an endpoint that is not an OTLP/gRPC URL, naming where it came from", async () => {
    const problem = (url: string, from = "--otlp-endpoint") => otlpEndpointProblem({ url, from });
    assert.equal(problem("http://collector:4317"), undefined);
    assert.equal(problem("https://collector.example:443/"), undefined);
    assert.match(problem("collector:4317")!, /--otlp-endpoint must be an http:\/\/ or https:\/\/ URL/);
    assert.match(problem("grpc://collector:4317")!, /must be an http:\/\/ or https:\/\/ URL/);
    assert.match(problem("http://collector:4318/v1/traces", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")!, /^OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: an OTLP\/gRPC endpoint has no path/);
    // Through the real parser, as `kv-router serve` checks it.
    const parse = (args: string[]) => serveOptions(yargs(["--block-size", "16", ...args])).strict().exitProcess(false).fail(false).parse();
    await assert.rejects(async () => parse(["--otlp-endpoint", "not a url"]), /--otlp-endpoint must be an http:\/\/ or https:\/\/ URL of an OTLP\/gRPC collector/);
    assert.equal((await parse(["--otlp-endpoint", "http://127.0.0.1:4317"])).otlpEndpoint, "http://127.0.0.1:4317");
  });

  it("warns when the environment asks for OTLP over HTTP", () => {
    assert.equal(otlpProtocolWarning({}), undefined);
    assert.equal(otlpProtocolWarning({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }), undefined);
    assert.match(otlpProtocolWarning({ OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf" })!, /OTLP\/gRPC only/);
  });
});
