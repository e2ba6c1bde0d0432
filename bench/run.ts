// `make bench` (full) and `make bench-smoke` (BENCH_SMOKE=1, small sizes, for
// CI): runs the index and end-to-end benchmarks, prints a table of figures
// with their in-run baselines, and writes bench/results.json (the smoke mode
// writes bench/results.smoke.json, so the committed figures stay). It fails only
// on errors, never on timings.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, totalmem } from "node:os";
import { fileURLToPath } from "node:url";
import { runDynamoZmqBench } from "./dynamoZmq.bench.js";
import { runE2eBench } from "./findBestWorker.bench.js";
import { holderRows, runDefaultFleetAB, runFleetBench } from "./holders.bench.js";
import { runIngestBench } from "./ingest.bench.js";
import { runIndexBench, runIngestScaling, runSteadyBench } from "./indexer.bench.js";
import { runRawIngestScaling } from "./rawIngest.bench.js";
import { runRelayIngestScaling } from "./relayIngest.bench.js";
import { runEngineDecode } from "./engineDecode.bench.js";
import { runEngineFeed } from "./engineFeed.bench.js";
import { runRouterEventDecode } from "./routerEventDecode.bench.js";
import { runSharedReadsBench } from "./sharedReads.bench.js";
import { runTierBench } from "./tiers.bench.js";
import { TRACE, mooncake, randomPrefix } from "./workload.js";

const smoke = process.env.BENCH_SMOKE === "1";
const entries = Number(process.env.BENCH_ENTRIES ?? (smoke ? 20_000 : 1_000_000));
const shards = Math.max(2, availableParallelism());

const t0 = performance.now();
const log = (msg: string) => console.error(`[bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${msg}`);

log(`building workloads (${entries} entries each)`);
// Without the shared data directory (e.g. a bare checkout), the synthetic workload stands alone.
if (!existsSync(TRACE)) log(`no Mooncake trace at ${TRACE}: running the random-prefix workload only`);
let workloads = existsSync(TRACE) ? [mooncake(entries), randomPrefix(entries)] : [randomPrefix(entries)];
log("index benchmarks");
const index = await runIndexBench(workloads, {
  repeats: smoke ? 1 : 3,
  queries: smoke ? 200 : 2000,
  shards,
  steadyMs: smoke ? 200 : 2000,
  steadyEventsPerSec: 200_000,
});
/** Thread counts for the scaling tables: 1, 2, 4, ... up to the cores (at least 4, to show oversubscription). */
const threadCounts = [1, 2, 4, 8, 16].filter((t) => t <= Math.max(4, availableParallelism()));
log(`in-process ingest by threads (${threadCounts.join(", ")}; ${availableParallelism()} cores)`);
const ingestScaling = await runIngestScaling(workloads[0], smoke ? [1, 2] : threadCounts, smoke ? 1 : 3);
log(`in-process ingest from wire bytes by shard threads (${threadCounts.join(", ")}; ${availableParallelism()} cores)`);
const rawIngest = await runRawIngestScaling(workloads[0], smoke ? [1, 2] : threadCounts, smoke ? 1 : 3);
log(`in-process relay messages (64 workers each) in parts on shard threads vs decoded here (${availableParallelism()} cores)`);
const relayIngest = await runRelayIngestScaling(workloads[0], smoke ? [2] : [2, 4], smoke ? 1 : 3, { perMessage: 64, blocksPerEvent: 16, tokenIds: true });
log("engine payloads (vLLM msgpack) and Dynamo event-plane messages: library decode vs the flat readers");
const engineDecode = await runEngineDecode({ workers: 8, payloads: smoke ? 20 : 300, eventsPerPayload: 4, blocksPerEvent: 4 }, smoke ? 1 : 7);
const routerEventDecode = runRouterEventDecode({ messages: smoke ? 100 : 2000, eventsPerMessage: 4, blocksPerEvent: 4 }, smoke ? 1 : 7);
log(`engine feeds on shard threads vs decoded here (${availableParallelism()} cores)`);
const engineFeed = await runEngineFeed({ workers: 8, payloads: smoke ? 20 : 300, eventsPerPayload: 4, blocksPerEvent: 4 }, [1, 2], smoke ? 1 : 3);
log("find_matches on shard threads: reading their shared memory vs asking them, idle and under 90% ingest");
const sharedReads = await runSharedReadsBench(workloads[0], entries, smoke ? 200 : 2000, smoke ? 1 : 3);
log("end-to-end FindBestWorker benchmark");
const e2e = await runE2eBench(workloads[0], {
  calls: smoke ? 200 : 2000,
  concurrency: 64,
  rounds: smoke ? 1 : 3,
  shardVariants: [0, 1],
  decodeBaseline: true,
});

log("lower tiers on the lookup path");
const tiers = await runTierBench(workloads[workloads.length - 1], smoke ? 200 : 2000);

const prompts = workloads[0].prompts(8192, 256);
workloads = [];
log("query wait behind steady ingest");
const steady = await runSteadyBench(prompts, entries, {
  repeats: 1,
  queries: 0,
  shards,
  steadyMs: smoke ? 300 : 3000,
  steadyEventsPerSec: 200_000,
});

log("Dynamo ZMQ event plane decode");
const dynamoZmq = runDynamoZmqBench(smoke ? 2_000 : 50_000, smoke ? 1 : 3);
log("gRPC ingest benchmarks");
const grpc = await runIngestBench(
  { blocks: smoke ? 4096 : 204_800, rounds: smoke ? 1 : 3, phaseMs: smoke ? 300 : 3000, threads: smoke ? [1] : [1, 2, 4, 8], queryCalls: smoke ? 64 : 2000, underIngest: smoke ? [[0, 1]] : [[0, 0], [0, 1], [1, 0, "asked"], [1, 0], [2, 0]], steady: smoke ? { timedRounds: 2, servers: 1 } : { timedRounds: 5, servers: 3 } },
  log,
);

// Last: its baseline builds indexes of several hundred MB.
log("index memory and find_matches by known worker ranks (holder sets vs the old core)");
const fleets = runFleetBench(
  { blocks: smoke ? 20_000 : 200_000, baselineMaxBytes: smoke ? 64 << 20 : 700 << 20, ranks: [64, 20_000, 100_000], baselineMaxRanks: smoke ? 20_000 : 100_000, queries: smoke ? 200 : 2000, rounds: smoke ? 1 : 3 },
  log,
);
const defaultFleet: Record<string, ReturnType<typeof runDefaultFleetAB>> = {};
for (const make of existsSync(TRACE) ? [mooncake, randomPrefix] : [randomPrefix]) {
  const w = make(entries);
  log(`64-rank fleet, old core vs holder sets: ${w.name}`);
  defaultFleet[w.name] = runDefaultFleetAB(w, smoke ? 200 : 2000, smoke ? 2 : 6);
}

const results = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, model: cpus()[0]?.model, memGB: Math.round(totalmem() / 2 ** 30), node: process.version },
  mode: smoke ? "smoke" : "full",
  entries,
  shardThreads: shards,
  index,
  ingestScaling,
  rawIngest,
  relayIngest,
  engineDecode,
  routerEventDecode,
  engineFeed,
  sharedReads: { ...sharedReads, byShards: Object.fromEntries(Object.entries(sharedReads.byShards).map(([k, v]) => [k, v.summary])) },
  steadyIngest: steady,
  e2e,
  dynamoZmq,
  ...grpc,
  tiers,
  holderSets: { fleets, defaultFleet },
};
// Committed figures of earlier code and runs (keys this run does not write, see docs/indexer.md) are kept beside the new ones.
const resultsFile = fileURLToPath(new URL(smoke ? "./results.smoke.json" : "./results.json", import.meta.url));
const previous: Record<string, unknown> = !smoke && existsSync(resultsFile) ? JSON.parse(readFileSync(resultsFile, "utf8")) : {};
const kept = Object.fromEntries(Object.entries(previous).filter(([k]) => !(k in results)));
writeFileSync(resultsFile, JSON.stringify({ ...results, ...kept }, null, 2) + "\n");

// ---- the table --------------------------------------------------------------
const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "-");
const rows: string[][] = [];
for (const [name, r] of Object.entries(index) as [string, any][]) {
  const ing = r.ingestBlocksPerSec as Record<string, number>;
  for (const [k, v] of Object.entries(ing)) rows.push([name, "ingest stored blocks/s", k, f(v), `${f(v / ing.naive, 1)}x naive`]);
  for (const [k, v] of Object.entries(r.hashing8192 as Record<string, any>)) {
    rows.push([name, "hash 8192 tokens p50/p99 us", k, `${f(v.p50, 1)} / ${f(v.p99, 1)}`, `${f(v.blocksPerSec)} blocks/s`]);
  }
  for (const [k, v] of Object.entries(r.hashing8192VsBefore as Record<string, any>)) {
    rows.push([name, "hash 8192 tokens p50 us: now | before", k, `${f(v.now.p50, 1)} | ${f(v.before.p50, 1)}`, `${f(v.ratioP50, 2)}x before (passes ${f(v.ratioMin, 2)}-${f(v.ratioMax, 2)})`]);
  }
  for (const [k, v] of Object.entries((r.hashing8192VsLoopSimd ?? {}) as Record<string, any>)) {
    rows.push([name, "hash 8192 tokens p50 us: now | loop SIMD", k, `${f(v.now.p50, 1)} | ${f(v.before.p50, 1)}`, `${f(v.ratioP50, 2)}x loop SIMD (passes ${f(v.ratioMin, 2)}-${f(v.ratioMax, 2)})`]);
  }
  const q = r.findMatches8192Us as Record<string, any>;
  for (const [k, v] of Object.entries(q)) rows.push([name, "find_matches 8192 tok p50/p99 us", k, `${f(v.p50, 1)} / ${f(v.p99, 1)}`, `${f(q.naive.p50 / v.p50, 1)}x naive p50`]);
  const qv = r.queryVsBefore as { findMatchesWithHashing: Record<string, any>; hashing: Record<string, any> } | undefined;
  for (const [group, title] of [["findMatchesWithHashing", "find_matches with prompt hashing p50 us: now | baseline"], ["hashing", "hash 8192 tokens p50 us: now | baseline"]] as const) {
    for (const [k, v] of Object.entries(qv?.[group] ?? {})) {
      rows.push([name, title, k, `${f(v.now.p50, 1)} | ${f(v.baseline.p50, 1)}`, `${f(v.ratioP50, 2)}x (passes ${f(v.ratioMin, 2)}-${f(v.ratioMax, 2)})`]);
    }
  }
  for (const [k, v] of Object.entries(r.ingestWithQueries as Record<string, any>)) {
    rows.push([name, "ingest+queries blocks/s | q p50/p99 us", k, `${f(v.storedBlocksPerSec)} | ${f(v.query.p50, 1)} / ${f(v.query.p99, 1)}`, ""]);
  }
  const mem = r.memory as Record<string, any>;
  for (const [k, v] of Object.entries(mem)) rows.push([name, "bytes per (block, worker) entry", k, f(v.bytesPerEntry, 1), `RSS ${f(v.rssMB)} MB`]);
}
for (const r of ingestScaling.rows as any[]) {
  rows.push([
    `in-process, ${ingestScaling.cores} cores`,
    "ingest blocks/s: queued | waiting",
    `${r.threads} shard thread${r.threads === 1 ? "" : "s"}`,
    `${f(r.queuedBlocksPerSec)} | ${f(r.waitingBlocksPerSec)}`,
    `${f(r.queuedVsInThread, 2)}x in-thread (${f(ingestScaling.inThreadBlocksPerSec)})`,
  ]);
}
for (const r of rawIngest.rows as any[]) {
  rows.push([
    `in-process, ${rawIngest.cores} cores`,
    "ingest from wire bytes blocks/s: raw | decoded here",
    `${r.threads} shard thread${r.threads === 1 ? "" : "s"}`,
    `${f(r.rawBlocksPerSec)} | ${f(r.decodedHereBlocksPerSec)}`,
    `${f(r.rawVsThisThread, 2)}x this thread (${f(rawIngest.thisThreadBlocksPerSec)}), ${f(r.rawVsOneThread ?? 1, 2)}x 1 thread`,
  ]);
}
for (const r of relayIngest.rows) {
  rows.push([
    `in-process, ${relayIngest.cores} cores`,
    "relay messages (64 workers each) blocks/s: in parts | decoded here",
    `${r.threads} shard threads`,
    `${f(r.rawBlocksPerSec)} | ${f(r.decodedHereBlocksPerSec)}`,
    `${f(r.rawVsDecodedHere, 2)}x decoded here; main thread ${f(r.mainCpuUsPerBlock.raw, 2)} vs ${f(r.mainCpuUsPerBlock.decodedHere, 2)} us/block`,
  ]);
}
for (const r of engineDecode.rows) {
  rows.push([`in-process, ${engineDecode.cores} cores`, "vLLM msgpack decode+hash us/block: flat | library", r.encoding, `${f(r.flatUsPerBlock, 2)} | ${f(r.libraryUsPerBlock, 2)}`, `${f(r.flatVsLibrary, 2)}x library`]);
}
rows.push([
  `in-process, ${routerEventDecode.cores} cores`,
  "Dynamo event-plane decode us/block: flat | library",
  `${routerEventDecode.shape.eventsPerMessage} events x ${routerEventDecode.shape.blocksPerEvent} blocks`,
  `${f(routerEventDecode.usPerBlock.flat, 2)} | ${f(routerEventDecode.usPerBlock.library, 2)}`,
  `${f(1 / routerEventDecode.speedup, 2)}x library`,
]);
for (const r of engineFeed.rows) {
  rows.push([
    `in-process, ${engineFeed.cores} cores`,
    "engine feeds blocks/s: on the shard | decoded here",
    `${r.threads} shard thread${r.threads === 1 ? "" : "s"}`,
    `${f(r.onShardBlocksPerSec)} | ${f(r.decodedHereBlocksPerSec)}`,
    `${f(r.onShardVsDecodedHere, 2)}x decoded here; this thread ${f(engineFeed.thisThreadBlocksPerSec)}`,
  ]);
}
for (const [k, s] of Object.entries(sharedReads.byShards)) {
  for (const mode of ["asked", "read"] as const) {
    const v = s.summary;
    rows.push([
      `in-process, ${sharedReads.cores} cores`,
      "find_matches idle p50/p99 | 90% ingest p50/p99 us",
      `${k}, ${mode === "read" ? "read shared memory" : "ask the shards"}`,
      `${f(v[`${mode}IdleP50`], 1)} / ${f(v[`${mode}IdleP99`], 1)} | ${f(v[`${mode}BusyP50`], 1)} / ${f(v[`${mode}BusyP99`], 1)}`,
      `busy p99 ${f(v[`${mode}BusyP99VsIdle`], 2)}x idle${mode === "read" ? `, ${f(v.readBusyP99 / v.askedBusyP99, 2)}x asking` : ""}`,
    ]);
  }
}
for (const [k, v] of Object.entries(steady as Record<string, any>)) {
  rows.push(["steady", "query wait @200k ev/s p50/p99/max us", k, `${f(v.waitUs.p50, 0)} / ${f(v.waitUs.p99, 0)} / ${f(v.waitUs.max, 0)}`, `${f(v.eventsPerSec)} ev/s applied`]);
}
rows.push(["tiers", "find_matches 8192 tok p50/p99 us", "GPU index only", `${f(tiers.deviceOnly.p50, 1)} / ${f(tiers.deviceOnly.p99, 1)}`, "baseline"]);
rows.push([
  "tiers",
  "find_matches 8192 tok p50/p99 us",
  "+ host/disk walk",
  `${f(tiers.withLowerTiers.p50, 1)} / ${f(tiers.withLowerTiers.p99, 1)}`,
  `${f(tiers.withLowerTiers.p50 / tiers.deviceOnly.p50, 2)}x baseline p50, ${f(tiers.lowerTierEntries)} lower-tier entries`,
]);
rows.push(["tiers", "lower-tier ingest stored blocks/s", "LowerTiers", f(tiers.lowerTierIngestBlocksPerSec), ""]);
for (const mode of ["sequential", "concurrent-64"]) {
  const row = (e2e as any)[mode] as Record<string, any>;
  for (const [k, v] of Object.entries(row)) {
    rows.push([
      "e2e 4096 tok",
      `FindBestWorker ${mode} req/s | p50/p99 us`,
      k,
      `${f(v.callsPerSec)} | ${f(v.latencyUs.p50)} / ${f(v.latencyUs.p99)}`,
      k === "echo" ? "floor" : `${f(v.p50VsEcho, 2)}x echo p50, ${f(v.p99VsEcho, 2)}x p99`,
    ]);
  }
}
{
  const z = dynamoZmq.eventsPerSec;
  rows.push(["dynamo zmq plane", "decode stored events/s (4 blocks)", "core-NATS envelope", f(z.natsEnvelope), "baseline"]);
  rows.push(["dynamo zmq plane", "decode stored events/s (4 blocks)", "ZMQ frames + envelope", f(z.zmqFrames), `${f(z.zmqFrames / z.natsEnvelope, 2)}x baseline`]);
}
for (const payload of ["token_ids", "tokens_hash"]) {
  const g = grpc.grpcIngest as any;
  for (const [k, v] of Object.entries(g[payload] as Record<string, any>)) {
    rows.push([`gRPC ingest, ${g.cores} cores`, `IngestKvEvents ${payload} blocks/s, cold: first ${f(g.blocks)} into a fresh server`, k, f(v.blocksPerSec), `${f(v.vsFloor, 2)}x floor, ${f(v.vsNaive, 1)}x naive`]);
  }
  const s = g.steadyIngest;
  for (const [k, v] of Object.entries(s[payload] as Record<string, any>)) {
    rows.push([
      `gRPC ingest, ${s.cores} cores`,
      `IngestKvEvents ${payload} blocks/s, steady: median of ${s.timedRounds}x${s.servers} rounds after one (first round)`,
      k === "router, defaults, --max-blocks sized to the fleet" ? `router, defaults, --max-blocks ${s.maxBlocks}` : k,
      `${f(v.blocksPerSec)} (${f(v.firstRoundBlocksPerSec)})`,
      `${f(v.vsFloor, 2)}x floor (paired by round ${f(v.vsFloorPaired, 2)}x), ${f(v.steadyVsFirstRound, 2)}x its first round`,
    ]);
  }
}
{
  const d = (grpc.grpcIngest as any).decodeInProcess;
  rows.push(["gRPC ingest", "decode+hash token_ids in-process blocks/s", "hot-path decoder", f(d.hotPathBlocksPerSec), `${f(d.hotPathBlocksPerSec / d.protobufEsBlocksPerSec, 1)}x protobuf-es`]);
  rows.push(["gRPC ingest", "decode+hash token_ids in-process blocks/s", "protobuf-es + convert.ts", f(d.protobufEsBlocksPerSec), "baseline"]);
}
for (const [config, qi] of Object.entries(grpc.queryUnderIngest as Record<string, any>)) {
  for (const k of ["idle", "50%", "90%"]) {
    const v = qi[k];
    const load = k === "idle" ? `capacity ${f(qi.capacityBlocksPerSec)} blocks/s` : `${f(v.ingestBlocksPerSec)} blocks/s ingested, p99 ${f(v.p99 / qi.idle.p99, 2)}x idle`;
    rows.push(["gRPC ingest", `FindBestWorker 4096 tok p50/p99/max us (${config})`, `ingest ${k}`, `${f(v.p50)} / ${f(v.p99)} / ${f(v.max)}`, load]);
  }
}
const sc = grpc.scaling as Record<string, any>;
for (const [k, v] of Object.entries(sc)) {
  if (typeof v !== "object") continue;
  rows.push([
    "scaling",
    `ingest blocks/s, 1 | ${sc.connections} connections | 32-way FindBestWorker/s (${sc.cores} cores)`,
    k,
    `${f(v.ingestBlocksPerSec)} | ${f(v.ingestBlocksPerSec8Connections)} | ${f(v.findBestWorker32Way)}`,
    "",
  ]);
}
rows.push(...holderRows(fleets, defaultFleet));
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
console.log(`kv-router benchmarks (${results.mode}, ${entries} entries, ${results.machine.cpus} cpus, ${results.date})`);
for (const r of rows) console.log(r.map((c, i) => (i === 3 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  "));
log(`done; wrote ${resultsFile}`);
