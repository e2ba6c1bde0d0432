// `node --import tsx bench/connectionFlood.run.ts [sockets] [port] [-- router flags]`:
// idle sockets against one port of a router whose process may open 4,096
// files (`ulimit -n`, BENCH_OPEN_FILES), then whether the other ports still answer. Starts
// the real CLI with gRPC, metrics, HTTP and EPP ports, opens SOCKETS (default
// 5,000) idle TCP connections to PORT (http, grpc, epp or metrics; default
// http), waits 2 s (BENCH_WAIT_MS), then asks /healthz on the metrics port (or the HTTP port
// when the metrics port is the one flooded) and FindBestWorker over a new gRPC
// connection, 5 s each. Prints one JSON line: what answered, and how many of
// the idle sockets the router closed.
import { spawn } from "node:child_process";
import { connect, type Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { KvRouterClient } from "../src/client/kvRouterClient.js";

const sockets = Number(process.argv[2] ?? 5_000);
const target = process.argv[3] ?? "http";
const extra = process.argv.includes("--") ? process.argv.slice(process.argv.indexOf("--") + 1) : [];

const args = ["--grpc-port", "0", "--metrics-port", "0", "--http-port", "0", "--epp-port", "0", "--block-size", "4", ...extra];
const openFiles = Number(process.env.BENCH_OPEN_FILES ?? 4096);
const child = spawn("bash", ["-c", `ulimit -n ${openFiles} && exec "${process.execPath}" --import tsx src/cli/main.ts ${args.join(" ")}`], {
  stdio: ["ignore", "pipe", "pipe"],
  env: { ...process.env, KV_ROUTER_LOG: "info" }, // the start log names the metrics port
});
let stdout = "";
let stderr = "";
child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
while (!stderr.includes('"kv-router started"') && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
const portOf = (re: RegExp, text: string) => Number(re.exec(text)?.[1]);
const ports: Record<string, number> = {
  grpc: portOf(/kv-router listening on \S+:(\d+)/, stdout),
  http: portOf(/kv-router http listening on \S+:(\d+)/, stdout),
  epp: portOf(/kv-router epp listening on \S+:(\d+)/, stdout),
  metrics: portOf(/"metrics":"[^"]*:(\d+)\/metrics"/, stderr),
};

const open: Socket[] = [];
let closedByRouter = 0;
let refused = 0;
for (let i = 0; i < sockets; i++) {
  const s = connect(ports[target], "127.0.0.1");
  s.on("error", () => refused++);
  s.resume(); // read what the router sends (HTTP/2 settings), or its close is never seen
  s.on("close", () => closedByRouter++);
  open.push(s);
  if (i % 200 === 199) await new Promise((r) => setTimeout(r, 20)); // let the router accept
}
await new Promise((r) => setTimeout(r, Number(process.env.BENCH_WAIT_MS ?? 2_000)));

const probePort = target === "metrics" ? ports.http : ports.metrics;
const healthz = await fetch(`http://127.0.0.1:${probePort}/healthz`, { signal: AbortSignal.timeout(5_000) }).then(
  (r) => String(r.status),
  (e: Error) => e.name,
);
const client = new KvRouterClient(`127.0.0.1:${ports.grpc}`, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
// No workers are registered: an answer is FAILED_PRECONDITION; no answer is DEADLINE_EXCEEDED or UNAVAILABLE.
const findBestWorker = await client.findBestWorker({ tokenIds: [1, 2, 3, 4] }, { deadline: Date.now() + 5_000 }).then(
  () => "OK",
  (e: grpc.ServiceError) => grpc.status[e.code],
);
client.raw.close();
console.log(JSON.stringify({ target, sockets, extra: extra.join(" "), healthz, probePort: target === "metrics" ? "http" : "metrics", findBestWorker, closedByRouter, refused }));
for (const s of open) s.destroy();
child.kill("SIGTERM");
