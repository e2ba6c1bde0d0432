// `node --import tsx bench/fileDiscovery.run.ts [many|big] [files]`: what
// Dynamo's file store (--discovery-backend file) costs an idle router. Starts
// the real CLI on a temp directory written as Dynamo writes it, then, for
// 20 s, samples the router's CPU (/proc/PID/stat), its RSS, and the latency of
// FindBestWorker calls (one allowed worker, so each call is cheap and its time
// is mostly the event loop's delay). Prints one JSON line per scenario.
//   many: FILES instance records (default 50,000), each touched every TTL/3
//         (Dynamo's keep-alive) by a helper process, TTL 10 s.
//   big:  one 1 GB instance record touched every 2 s, beside a normal worker.
// BENCH_SECONDS (default 20) sets the sampling time; BENCH_START_UNDER_TOUCH=1
// starts the keep-alive before the router (its start time is printed too).
// Figures: docs/RELIABILITY.md (Hostile inputs, Dynamo's file store).
import { fork } from "node:child_process";
import { linkSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { fileNameOfKey } from "../src/discovery/fileStore.js";
import { spawnRouter } from "../test/support/cliProcess.js";
import { COMPONENT, ENDPOINT, NS, instanceValue } from "../test/support/dynamo.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const TTL_SECS = 10;

// Helper mode: touch every file of a directory every `periodMs`, as Dynamo's keep-alive thread does.
if (process.argv[2] === "--toucher") {
  const [dir, periodMs] = [process.argv[3], Number(process.argv[4])];
  touchAll(dir);
  setInterval(() => touchAll(dir), periodMs);
  process.on("disconnect", () => process.exit(0)); // the parent ended, whichever way
} else {
  await main(process.argv[2] ?? "many", Number(process.argv[3] ?? 50_000));
}

function touchAll(dir: string, aheadMs = 0): void {
  const now = new Date(Date.now() + aheadMs);
  for (const name of readdirSync(dir)) utimesSync(join(dir, name), now, now);
}

function publish(dir: string, id: bigint, value: string | Buffer): void {
  const tmp = join(dir, `.tmp_${id.toString(16).padStart(16, "0")}`);
  writeFileSync(tmp, value);
  linkSync(tmp, join(dir, fileNameOfKey(`${NS}/${COMPONENT}/${ENDPOINT}/${id.toString(16)}`)));
  unlinkSync(tmp);
}

function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks (100/s)
}

function rssMb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
}

async function main(scenario: string, files: number): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), "kvr-filekv-bench-"));
  const dir = join(root, "v1/instances");
  mkdirSync(dir, { recursive: true });
  const probeWorker = 1n;
  publish(dir, probeWorker, instanceValue(probeWorker));
  if (scenario === "many") for (let i = 2; i <= files; i++) publish(dir, BigInt(i), instanceValue(BigInt(i)));
  else publish(dir, 0xb16n, Buffer.alloc(1024 ** 3, 0x20)); // 1 GB of spaces: never a valid record
  // BENCH_START_UNDER_TOUCH=1: the keep-alive runs before the router starts, as in a live fleet. Otherwise
  // the files are dated a minute ahead (fresh while the router starts) and touching starts once it serves.
  const underTouch = process.env.BENCH_START_UNDER_TOUCH === "1";
  const forkToucher = () =>
    fork(fileURLToPath(import.meta.url), ["--toucher", dir, String(scenario === "many" ? (TTL_SECS * 1000) / 3 : 2_000)], { execArgv: ["--import", "tsx"] });
  let toucher = underTouch ? forkToucher() : undefined;
  if (!underTouch) touchAll(dir, 60_000);
  const spawned = performance.now();
  const router = await spawnRouter(
    ["--grpc-port", "0", "--metrics-port", "0", "--discovery-backend", "file", "--file-kv", root, "--file-kv-ttl-secs", String(TTL_SECS), "--block-size", "4"],
    { KV_ROUTER_LOG: "info" }, // spawnRouter waits for the start log
  );
  const startSeconds = ((performance.now() - spawned) / 1000).toFixed(1);
  const pid = router.child.pid!;
  const client = new KvRouterClient(router.grpcAddress);
  const want = scenario === "many" ? files : 1;
  for (let seen = 0; seen < want; ) {
    await new Promise((r) => setTimeout(r, 1_000));
    const m = /kvrouter_discovery_workers\{backend="file"\} (\d+)/.exec(await (await fetch(router.metricsUrl!)).text());
    seen = Number(m?.[1] ?? 0);
    console.error(`${seen} of ${want} workers discovered`);
  }
  toucher ??= forkToucher();
  await new Promise((r) => setTimeout(r, 5_000)); // a first round of touches
  const latencies: number[] = [];
  let peakRss = rssMb(pid);
  const cpu0 = cpuTicks(pid);
  const t0 = performance.now();
  while (performance.now() - t0 < SECONDS * 1000) {
    const s = performance.now();
    await client.findBestWorker({ tokenIds: [1, 2, 3, 4, 5, 6, 7, 8], allowedWorkers: [{ workerId: probeWorker, dpRank: 0 }] });
    latencies.push(performance.now() - s);
    peakRss = Math.max(peakRss, rssMb(pid));
    await new Promise((r) => setTimeout(r, 20));
  }
  const cpuPct = ((cpuTicks(pid) - cpu0) / ((performance.now() - t0) / 1000)) * (100 / 100); // ticks/s at 100 Hz = percent
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(1);
  console.log(
    JSON.stringify({ scenario, underTouch, startSeconds, files: want, seconds: SECONDS, routerCpuPct: Math.round(cpuPct), peakRssMb: Math.round(peakRss), calls: latencies.length, p50Ms: q(0.5), p99Ms: q(0.99), maxMs: latencies.at(-1)!.toFixed(0), workersRemoved: router.stderr().split("worker removed").length - 1 }),
  );
  client.raw.close();
  toucher.disconnect();
  await router.stop();
  rmSync(root, { recursive: true, force: true });
}
