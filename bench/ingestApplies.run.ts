// `node --import tsx bench/ingestApplies.run.ts [blocks] [hash]`: gRPC ingest into
// kv-router (a server process per run) with the index in the main thread, and
// with 1 and 2 index shard threads whose applies are waited for (the old way)
// or queued; token ids unless "hash". Prints the median of 3 rounds.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { ingestTraffic, sendAll } from "./ingestWire.js";
const SERVERS = fileURLToPath(new URL("./ingestServers.ts", import.meta.url));
async function server(args: string[]) {
  const child = spawn(process.execPath, ["--import", "tsx", SERVERS, ...args], { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, KV_ROUTER_LOG: "error" } });
  const port = await new Promise<number>((resolve) => { let out = ""; child.stdout!.on("data", (d) => { out += d; const m = /PORT (\d+)/.exec(out); if (m) resolve(Number(m[1])); }); });
  return { port, stop: () => new Promise<void>((r) => { child.once("exit", () => r()); child.stdin!.end(); }) };
}
const traffic = ingestTraffic(Number(process.argv[2] ?? 102400), process.argv[3] !== "hash");
const warm = ingestTraffic(8192, true, 3, 5000);
const configs: [string, string[]][] = [["main", ["router", "0", "0"]], ["1 shard wait", ["router", "1", "0", "wait"]], ["1 shard queued", ["router", "1", "0"]], ["2 shards wait", ["router", "2", "0", "wait"]], ["2 shards queued", ["router", "2", "0"]]];
const res: Record<string, number[]> = {};
for (let round = 0; round < 3; round++) {
  for (const [name, args] of configs) {
    const s = await server(args);
    await sendAll(s.port, warm.messages);
    const secs = await sendAll(s.port, traffic.messages);
    (res[name] ??= []).push(traffic.blocks / secs);
    await s.stop();
  }
}
for (const [k, v] of Object.entries(res)) { v.sort((a, b) => a - b); console.log(k.padEnd(18), v.map((x) => (x / 1e6).toFixed(2)).join(" "), "median", (v[1] / 1e6).toFixed(2), "M blocks/s"); }
process.exit(0);
