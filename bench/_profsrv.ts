import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { ingestTraffic, sendAll } from "./ingestWire.js";
const SERVERS = fileURLToPath(new URL("./ingestServers.ts", import.meta.url));
const args = process.argv.slice(2);
const child = spawn(process.execPath, ["--cpu-prof", "--cpu-prof-dir=/tmp/prof4", "--import", "tsx", SERVERS, ...args], { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, KV_ROUTER_LOG: "error" } });
const port = await new Promise<number>((resolve) => { let out = ""; child.stdout!.on("data", (d) => { out += d; const m = /PORT (\d+)/.exec(out); if (m) resolve(Number(m[1])); }); });
const traffic = ingestTraffic(204800, true);
for (let i = 0; i < 4; i++) { const secs = await sendAll(port, traffic.messages); console.log((traffic.blocks / secs / 1e6).toFixed(2), "M/s"); }
await new Promise<void>((r) => { child.once("exit", () => r()); child.stdin!.end(); });
