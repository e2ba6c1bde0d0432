// What tracing costs FindBestWorker: routers with the same index answering
// the same requests in one process, one with tracing off, one exporting
// every span (all sampled) with the real OTLP/gRPC exporter behind the batch
// processor to a real OTLP/gRPC receiver this bench starts in a process of
// its own (bench/otlpReceiverProcess.ts: it decodes every span, as a
// collector would, without that work counting as the router's). Every
// request carries a sampled traceparent, as a traced client sends it.
// Sequential calls go to the routers in turn, call by call (the order
// rotating), so the load of a shared machine hits them alike; a second
// router with tracing off shows how far two identical routers differ.
// Concurrent calls go in rounds, alternating, with the CPU time per call of
// this process (client and router). Figures are medians; never fails on timings.
//   node --import tsx bench/tracing.bench.ts      (BENCH_SMOKE=1: small)
import { spawn } from "node:child_process";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type FindBestWorkerRequest, FindBestWorkerRequestSchema } from "../gen/kvrouter/v1/router_pb.js";
import type { RunningServer } from "../src/app/startServer.js";
import { startBenchRouter } from "./ingestServers.js";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import type { TracingSettings } from "../src/tracing/setup.js";
import { type Latency, latency, median, usSince } from "./stats.js";
import { BLOCK, randomPrefix } from "./workload.js";

const smoke = process.env.BENCH_SMOKE === "1";
const entries = Number(process.env.BENCH_ENTRIES ?? (smoke ? 20_000 : 200_000));
/** Sequential calls per router and prompt size. */
const sequentialCalls = smoke ? 300 : 6000;
/** Concurrent: rounds of `roundCalls` per router and prompt size. */
const rounds = smoke ? 1 : 9;
const roundCalls = smoke ? 200 : 1000;
const PROMPT_SIZES = [4096, 256];
const CONCURRENCY = 64;
const TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

interface Run {
  callsPerSec: number;
  latencyUs: Latency;
  /** CPU time of this process per call (client and router), µs. */
  cpuUsPerCall: number;
}

type Call = (req: FindBestWorkerRequest) => Promise<unknown>;

async function measure(call: Call, reqs: FindBestWorkerRequest[], n: number, concurrency: number): Promise<Run> {
  const samples: number[] = [];
  let next = 0;
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const lane = async () => {
    while (next < n) {
      const req = reqs[next++ % reqs.length];
      const t = process.hrtime.bigint();
      await call(req);
      samples.push(usSince(t));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  const cpu = process.cpuUsage(cpu0);
  return { callsPerSec: n / (usSince(t0) / 1e6), latencyUs: latency(samples), cpuUsPerCall: (cpu.user + cpu.system) / n };
}

const medianRun = (runs: Run[]): Run => ({
  callsPerSec: median(runs.map((r) => r.callsPerSec)),
  latencyUs: { p50: median(runs.map((r) => r.latencyUs.p50)), p99: median(runs.map((r) => r.latencyUs.p99)), max: Math.max(...runs.map((r) => r.latencyUs.max)) },
  cpuUsPerCall: median(runs.map((r) => r.cpuUsPerCall)),
});

function benchRouter(tracing?: TracingSettings): Promise<RunningServer> {
  return startBenchRouter({ tracing });
}

/** The receiver process; `counts()` closes its stdin and reads what it received. */
async function startReceiverProcess() {
  const child = spawn(process.execPath, ["--import", "tsx", "bench/otlpReceiverProcess.ts"], {
    cwd: new URL("..", import.meta.url),
    stdio: ["pipe", "pipe", "inherit"],
  });
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  while (!/ENDPOINT (\S+)\n/.test(out)) {
    if (child.exitCode !== null) throw new Error("the OTLP receiver process exited");
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    endpoint: /ENDPOINT (\S+)\n/.exec(out)![1],
    async counts(): Promise<{ spans: number; exports: number }> {
      child.stdin!.end();
      while (!/SPANS (\d+) EXPORTS (\d+)\n/.test(out)) await new Promise((r) => setTimeout(r, 20));
      const [, spans, exports] = /SPANS (\d+) EXPORTS (\d+)\n/.exec(out)!;
      return { spans: Number(spans), exports: Number(exports) };
    },
  };
}

const t0 = performance.now();
const say = (msg: string) => console.error(`[tracing bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${msg}`);

say(`building the random-prefix workload (${entries} entries)`);
const w = randomPrefix(entries);
const receiver = await startReceiverProcess();
const OFF = "tracing off";
const OFF2 = "tracing off (a second router)";
const ON = "tracing on (OTLP/gRPC)";
const targets = [
  { name: OFF, server: await benchRouter() },
  { name: OFF2, server: await benchRouter() },
  { name: ON, server: await benchRouter({ endpoint: receiver.endpoint, serviceName: "kv-router-bench" }) },
].map((t) => {
  for (let i = 0; i < w.events.length; i += 64) t.server.router.applyEvents(w.events.slice(i, i + 64));
  const client = new KvRouterClient(`127.0.0.1:${t.server.grpcPort}`);
  // The raw client with one prebuilt message and the same metadata for every call: no per-call copies.
  const md = new grpc.Metadata();
  md.set("traceparent", TRACEPARENT);
  const call: Call = (req) =>
    new Promise((resolve, reject) =>
      (client.raw as unknown as Record<string, Function>).findBestWorker(req, md, (e: Error | null, res: unknown) => (e ? reject(e) : resolve(res))),
    );
  return { ...t, client, call };
});

/** Sequential calls, router by router in turn, the order rotating each time: per-call latencies by router. */
async function sequential(reqs: FindBestWorkerRequest[], n: number): Promise<Map<string, number[]>> {
  const samples = new Map(targets.map((t) => [t.name, [] as number[]]));
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < targets.length; k++) {
      const t = targets[(i + k) % targets.length];
      const t0 = process.hrtime.bigint();
      await t.call(reqs[i % reqs.length]);
      samples.get(t.name)!.push(usSince(t0));
    }
  }
  return samples;
}

const out: Record<string, unknown> = {};
const lines: string[] = [];
const f = (n: number, d = 0) => n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
let traced = 0;
for (const tokens of PROMPT_SIZES) {
  const reqs = w.prompts(tokens, 256).map((p) => create(FindBestWorkerRequestSchema, { tokenIds: Array.from(p) }));
  say(`${tokens}-token prompts: warm-up, ${sequentialCalls} sequential calls per router, ${rounds} rounds of ${roundCalls} concurrent (${CONCURRENCY}) calls`);
  await sequential(reqs, Math.min(500, sequentialCalls));
  const seq = await sequential(reqs, sequentialCalls);
  traced += Math.min(500, sequentialCalls) + sequentialCalls;
  const lat = Object.fromEntries([...seq].map(([name, xs]) => [name, latency(xs)]));
  out[`${tokens} tokens, sequential`] = { latencyUs: lat, p50OnVsOff: lat[ON].p50 / lat[OFF].p50, p50Off2VsOff: lat[OFF2].p50 / lat[OFF].p50 };
  lines.push(`${tokens} tokens, sequential, ${sequentialCalls} calls per router, in turn:`);
  for (const [name, l] of Object.entries(lat)) lines.push(`  p50 ${f(l.p50).padStart(6)} us, p99 ${f(l.p99).padStart(7)} us  ${name}`);
  lines.push(`  p50 on/off ${f(lat[ON].p50 / lat[OFF].p50, 3)}x (two routers with tracing off: ${f(lat[OFF2].p50 / lat[OFF].p50, 3)}x)`);

  const concurrent = targets.filter((t) => t.name !== OFF2);
  const runs = new Map<string, Run[]>(concurrent.map((t) => [t.name, []]));
  for (let round = 0; round < rounds; round++) {
    for (const t of round % 2 === 0 ? concurrent : [...concurrent].reverse()) {
      runs.get(t.name)!.push(await measure(t.call, reqs, roundCalls, CONCURRENCY));
      if (t.name === ON) traced += roundCalls;
    }
  }
  const off = medianRun(runs.get(OFF)!);
  const on = medianRun(runs.get(ON)!);
  out[`${tokens} tokens, concurrent-${CONCURRENCY}`] = {
    off,
    on,
    p50OnVsOff: on.latencyUs.p50 / off.latencyUs.p50,
    throughputOnVsOff: on.callsPerSec / off.callsPerSec,
    cpuOnVsOff: on.cpuUsPerCall / off.cpuUsPerCall,
  };
  lines.push(`${tokens} tokens, ${CONCURRENCY} concurrent, median of ${rounds} rounds:`);
  for (const [name, r] of [[OFF, off], [ON, on]] as const) {
    lines.push(`  ${f(r.callsPerSec).padStart(6)} req/s, p50 ${f(r.latencyUs.p50).padStart(6)} us, ${f(r.cpuUsPerCall).padStart(4)} us CPU/call  ${name}`);
  }
  lines.push(`  on/off: throughput ${f(on.callsPerSec / off.callsPerSec, 3)}x, p50 ${f(on.latencyUs.p50 / off.latencyUs.p50, 3)}x, CPU/call ${f(on.cpuUsPerCall / off.cpuUsPerCall, 3)}x`);
}

for (const t of targets) {
  t.client.close();
  await t.server.stop(); // the traced router exports what it still holds
}
const received = await receiver.counts();

console.log(`FindBestWorker, tracing off vs on, same run (${new Date().toISOString()}, ${entries} entries, 64 workers, block ${BLOCK})`);
for (const line of lines) console.log(line);
console.log(`spans received by the OTLP receiver: ${received.spans} of ${traced} traced calls, in ${received.exports} Export calls`);
