// gRPC ingest as a fleet drives it, each server in its own process, fed the
// same pre-encoded bytes by the same raw client:
// 1. IngestKvEvents throughput with token ids and with tokens_hash, next to
//    the transport floor (a bare grpc-js server that only counts the bytes,
//    with the HTTP/2 receive windows kv-router sets, and once more with
//    grpc-js's own 64 KB ones) and the naive stub, all in the same run:
//    cold (the first `blocks` into a fresh server: V8 still compiling, the
//    index growing from its start) and steady (the same server after a
//    round of that size, several rounds timed; steadyIngest below);
// 2. FindBestWorker latency (4096 tokens) while ingest runs at 50% and 90%
//    of the router's measured capacity, next to the idle figure;
// 3. ingest and query throughput at 1, 2, 4, 8 threads, with the core count.
import { type ChildProcess, spawn } from "node:child_process";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { type FindBestWorkerRequest, FindBestWorkerRequestSchema } from "../gen/kvrouter/v1/router_pb.js";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import { decodeIngestRequest } from "../src/server/convert.js";
import { IngestDecoder } from "../src/decoding/ingestDecoder.js";
import { startThread } from "../src/util/threads.js";
import { defaultIndexerShards } from "../src/cli/options.js";
import { type IngestTraffic, ingestTraffic, sendAll, sendParallel } from "./ingestWire.js";
import { type Latency, latency, median, usSince } from "./stats.js";

export interface IngestBenchConfig {
  /** Stored blocks per throughput measurement. */
  blocks: number;
  rounds: number;
  /** Length of each paced-ingest phase. */
  phaseMs: number;
  /** Thread counts of the scaling table. */
  threads: number[];
  /** Calls per query-throughput measurement. */
  queryCalls: number;
  /** Router configurations measured under paced ingest: [index shards, ingest threads, applies (ingestServers.ts)]. */
  underIngest: ([number, number] | [number, number, string])[];
  /** Steady-state ingest: rounds of `blocks` timed after one warm-up round, fresh servers per target; more --max-blocks bounds to compare. */
  steady: { timedRounds: number; servers: number; otherMaxBlocks?: number[] };
}

interface Server {
  port: number;
  stop(): Promise<void>;
}

const SERVERS = fileURLToPath(new URL("./ingestServers.ts", import.meta.url));

/** Starts one of bench/ingestServers.ts's servers in a child process. */
async function spawnServer(args: string[]): Promise<Server> {
  // BENCH_SERVER_NODE_FLAGS (e.g. "--trace-gc"): V8 flags for the servers, whose output then goes to stderr.
  const flags = process.env.BENCH_SERVER_NODE_FLAGS?.split(" ").filter((f) => f !== "") ?? [];
  const child: ChildProcess = spawn(process.execPath, [...flags, "--import", "tsx", SERVERS, ...args], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, KV_ROUTER_LOG: "error" },
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d) => {
      if (flags.length > 0) process.stderr.write(d);
      out += d;
      const m = /PORT (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once("exit", (code) => reject(new Error(`bench server ${args.join(" ")} exited (${code}) before serving`)));
  });
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.stdin!.end();
      }),
  };
}

/** Other workers' traffic that warms a fresh server up before it is timed. */
const warmUp = { token_ids: ingestTraffic(4096, true, 5, 2000), tokens_hash: ingestTraffic(4096, false, 5, 2000) };

export async function throughput(args: string[], traffic: IngestTraffic): Promise<number> {
  const server = await spawnServer(args);
  try {
    await sendAll(server.port, warmUp.token_ids.messages);
    await sendAll(server.port, warmUp.tokens_hash.messages);
    return traffic.blocks / (await sendAll(server.port, traffic.messages));
  } finally {
    await server.stop();
  }
}

/** `rounds` rounds of `blocks` fresh blocks each, every round on 64 workers of its own (worker ids from 100,000). */
export function steadyTraffic(blocks: number, withTokens: boolean, rounds: number): IngestTraffic[] {
  return Array.from({ length: rounds }, (_, r) => ingestTraffic(blocks, withTokens, 31 + r, 100_000 + 1000 * r));
}

/**
 * Ingest of a running router: each server first takes one round of `blocks` (V8 compiles the hot
 * path, the index's tables grow), then `timedRounds` more, each to fresh workers. Each repetition
 * starts one server per target side by side, and the targets take each round in turn, so a noisy second hits them all; per
 * target the median of the timed rounds of all its servers, and the median of its per-round ratios
 * to the floor's same round (paired). Targets: the floor, the router as the CLI starts it on this
 * machine, and the same with --max-blocks as an operator sets it: the fleet's cache capacity in
 * blocks. Here every worker keeps what it stored, so that is the blocks the server takes in all its
 * rounds: nothing is evicted and the index is sized once.
 */
export async function runSteadyIngest(cfg: Pick<IngestBenchConfig, "blocks" | "steady">, log: (msg: string) => void) {
  const cores = availableParallelism();
  const { timedRounds, servers } = cfg.steady;
  const maxBlocks = cfg.blocks * (1 + timedRounds);
  const targets = [
    { name: "floor (bare grpc-js, counts bytes)", args: ["floor"] },
    { name: "router, defaults", args: ["router", "defaults"] },
    // The index in the main thread, the default below 2 cores (and on 2 until 2026-12-05): what the defaults gain from the shard thread.
    ...(defaultIndexerShards(cores) > 0 ? [{ name: "router, --indexer-shards 0 (index in the main thread)", args: ["router", "0", "0"] }] : []),
    { name: "router, defaults, --max-blocks sized to the fleet", args: ["router", "defaults", `--max-blocks=${maxBlocks}`] },
    ...(cfg.steady.otherMaxBlocks ?? []).map((n) => ({ name: `router, defaults, --max-blocks ${n}`, args: ["router", "defaults", `--max-blocks=${n}`] })),
  ];
  const steady: Record<string, unknown> = {
    cores,
    blocksPerRound: cfg.blocks,
    timedRounds,
    servers,
    maxBlocks,
    measures: `per server one warm-up round of ${cfg.blocks} blocks, then ${timedRounds} timed rounds of ${cfg.blocks} fresh blocks on fresh workers, the targets taking each round in turn; median of the timed rounds of ${servers} server(s) per target`,
  };
  for (const withTokens of [true, false]) {
    const payload = withTokens ? "token_ids" : "tokens_hash";
    log(`gRPC ingest, steady state (${payload}): ${servers} server(s) per target, 1 + ${timedRounds} rounds of ${cfg.blocks} blocks (${cores} cores)`);
    const rounds = steadyTraffic(cfg.blocks, withTokens, 1 + timedRounds);
    // rates[target][server][round], blocks per second.
    const rates = targets.map(() => [] as number[][]);
    for (let s = 0; s < servers; s++) {
      const started: Server[] = [];
      try {
        for (const t of targets) started.push(await spawnServer(t.args));
        targets.forEach((_, i) => rates[i].push([]));
        for (const r of rounds) {
          for (const [i, server] of started.entries()) rates[i][s].push(r.blocks / (await sendAll(server.port, r.messages)));
        }
      } finally {
        await Promise.all(started.map((server) => server.stop()));
      }
    }
    const timed = (i: number) => rates[i].flatMap((r) => r.slice(1));
    const floor = median(timed(0));
    const row: Record<string, unknown> = {};
    for (const [i, t] of targets.entries()) {
      const v = median(timed(i));
      const first = median(rates[i].map((r) => r[0]));
      const paired = median(rates[i].flatMap((r, s) => r.slice(1).map((x, k) => x / rates[0][s][k + 1])));
      row[t.name] = { blocksPerSec: v, vsFloor: v / floor, vsFloorPaired: paired, firstRoundBlocksPerSec: first, steadyVsFirstRound: v / first, args: t.args, rounds: rates[i] };
    }
    steady[payload] = row;
  }
  return steady;
}

/** Stored blocks per second into a fresh server, the lists streamed at once on connections of their own. */
export async function throughputParallel(args: string[], lists: Buffer[][], blocks: number): Promise<number> {
  const server = await spawnServer(args);
  try {
    await sendAll(server.port, warmUp.token_ids.messages);
    return blocks / (await sendParallel(server.port, lists));
  } finally {
    await server.stop();
  }
}

/** Streams RepeatingTraffic from a worker thread at `blocksPerSec` (0 = flat out). */
function pacedIngest(port: number, blocksPerSec: number, durationMs: number, firstWorker: number): Promise<{ blocks: number; secs: number }> {
  const worker = startThread(new URL("./pacedIngest.worker.ts", import.meta.url), { workerData: { port, blocksPerSec, durationMs, firstWorker } });
  return new Promise((resolve, reject) => {
    worker.once("message", (m) => {
      resolve(m);
      void worker.terminate();
    });
    worker.once("error", reject);
  });
}

function findBest(client: KvRouterClient, req: FindBestWorkerRequest): Promise<unknown> {
  return new Promise((resolve, reject) =>
    (client.raw as unknown as Record<string, Function>).findBestWorker(req, (e: Error | null, r: unknown) => (e ? reject(e) : resolve(r))),
  );
}

/** Sequential queries for `ms`: latency of each. */
async function queriesFor(client: KvRouterClient, reqs: FindBestWorkerRequest[], ms: number): Promise<Latency & { calls: number }> {
  const samples: number[] = [];
  const t0 = performance.now();
  for (let i = 0; performance.now() - t0 < ms; i++) {
    const t = process.hrtime.bigint();
    await findBest(client, reqs[i % reqs.length]);
    samples.push(usSince(t));
  }
  return { ...latency(samples), calls: samples.length };
}

/** `calls` queries, 32 in flight: calls per second. */
async function queryThroughput(client: KvRouterClient, reqs: FindBestWorkerRequest[], calls: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  const lane = async () => {
    while (next < calls) await findBest(client, reqs[next++ % reqs.length]);
  };
  await Promise.all(Array.from({ length: 32 }, lane));
  return calls / ((performance.now() - t0) / 1000);
}

/** A router holding `prefill` plus prompts that hit it: 4096-token queries. */
async function preparedRouter(args: string[], prefill: IngestTraffic) {
  const server = await spawnServer(args);
  await sendAll(server.port, prefill.messages);
  const client = new KvRouterClient(`127.0.0.1:${server.port}`);
  // Each worker's chain start, padded to 4096 tokens: a query matching up to 64 blocks on one worker.
  const reqs = prefill.prefixes.map((p) =>
    create(FindBestWorkerRequestSchema, { tokenIds: Array.from({ length: 4096 }, (_, j) => p[j] ?? j) }),
  );
  return { server, client, reqs };
}

export async function runIngestBench(cfg: IngestBenchConfig, log: (msg: string) => void) {
  const cores = availableParallelism();
  log(`gRPC ingest: encoding ${cfg.blocks} stored blocks with token ids and with tokens_hash`);
  const tokens = ingestTraffic(cfg.blocks, true);
  const hashes = ingestTraffic(cfg.blocks, false);
  const targets = [
    { name: "floor (bare grpc-js, counts bytes)", args: ["floor"] },
    { name: "floor with grpc-js's 64 KB windows", args: ["floor-64k"] },
    { name: "naive stub (proto-loader + Map)", args: ["naive"] },
    { name: "router", args: ["router", "0", "0"] },
    { name: "router, 1 ingest thread", args: ["router", "0", "1"] },
    { name: "router, 1 index shard (raw messages decoded there)", args: ["router", "1", "0"] },
    { name: "router, 1 index shard, decoded here", args: ["router", "1", "0", "decoded"] },
    { name: "router, 2 index shards (raw)", args: ["router", "2", "0"] },
  ];
  const runs = new Map<string, number[]>();
  for (let round = 0; round < cfg.rounds; round++) {
    for (const [payload, traffic] of [["token_ids", tokens], ["tokens_hash", hashes]] as const) {
      for (const t of targets) {
        const key = `${payload}|${t.name}`;
        runs.set(key, [...(runs.get(key) ?? []), await throughput(t.args, traffic)]);
      }
    }
  }
  const grpcIngest: Record<string, unknown> = {
    cores,
    // token_ids and tokens_hash below: the cold figure (their keys kept from before steadyIngest existed).
    measures: `token_ids, tokens_hash: the first ${cfg.blocks} blocks into a fresh server (after 16 warm-up messages of 512 blocks, 8 with token ids and 8 with tokens_hash, to other workers), median of ${cfg.rounds} servers`,
    blocks: cfg.blocks,
    bytesPerBlock: { token_ids: tokens.bytes / tokens.blocks, tokens_hash: hashes.bytes / hashes.blocks },
  };
  for (const payload of ["token_ids", "tokens_hash"]) {
    const floor = median(runs.get(`${payload}|${targets[0].name}`)!);
    const naive = median(runs.get(`${payload}|${targets[2].name}`)!);
    const row: Record<string, unknown> = {};
    for (const t of targets) {
      const v = median(runs.get(`${payload}|${t.name}`)!);
      row[t.name] = { blocksPerSec: v, vsFloor: v / floor, vsNaive: v / naive };
    }
    grpcIngest[payload] = row;
  }
  grpcIngest.steadyIngest = await runSteadyIngest(cfg, log);
  // In-process: the hot-path decoder (wire bytes -> hashed flat batch) against protobuf-es + convert.ts.
  const decoder = new IngestDecoder(64);
  const decodeRuns = { hotPath: [] as number[], protobufEs: [] as number[] };
  for (let round = 0; round < cfg.rounds + 1; round++) {
    let t0 = performance.now();
    for (const m of tokens.messages) decoder.decode(m);
    decodeRuns.hotPath.push(tokens.blocks / ((performance.now() - t0) / 1000));
    t0 = performance.now();
    for (const m of tokens.messages) toEventBatch(decodeIngestRequest(m, 64, "m").events);
    decodeRuns.protobufEs.push(tokens.blocks / ((performance.now() - t0) / 1000));
  }
  grpcIngest.decodeInProcess = {
    hotPathBlocksPerSec: median(decodeRuns.hotPath.slice(1)),
    protobufEsBlocksPerSec: median(decodeRuns.protobufEs.slice(1)),
  };
  const queryUnderIngest = await runQueryUnderIngest(cfg, log);

  log(`gRPC ingest: scaling at ${cfg.threads.join(", ")} threads (${cores} cores)`);
  const scaling: Record<string, unknown> = { cores };
  const queryPrefill = ingestTraffic(Math.min(cfg.blocks, 65_536), true, 13);
  const configs: string[][] = [["main thread", "0", "0"]];
  for (const n of cfg.threads) {
    configs.push(
      [`${n} ingest threads`, "0", String(n)],
      [`${n} index shards`, String(n), "0"],
      [`${n} index shards, decoded here`, String(n), "0", "decoded"],
      [`${n} index shards, waiting applies`, String(n), "0", "wait"],
    );
  }
  // The same blocks from 8 engines' publishers on 8 connections, one worker each (as engines publish).
  const CONNECTIONS = 8;
  const perConnection = Array.from({ length: CONNECTIONS }, (_, c) => ingestTraffic(Math.ceil(cfg.blocks / CONNECTIONS), true, 17 + c, 10_000 * (c + 1), 1));
  const parallelBlocks = perConnection.reduce((n, t) => n + t.blocks, 0);
  scaling.connections = CONNECTIONS;
  for (const [name, ...args] of configs) {
    const ingest = await throughput(["router", ...args], tokens);
    const ingest8 = await throughputParallel(["router", ...args], perConnection.map((t) => t.messages), parallelBlocks);
    const q = await preparedRouter(["router", ...args], queryPrefill);
    const qps = await queryThroughput(q.client, q.reqs, cfg.queryCalls);
    q.client.close();
    await q.server.stop();
    scaling[name] = { ingestBlocksPerSec: ingest, ingestBlocksPerSec8Connections: ingest8, findBestWorker32Way: qps };
  }
  return { grpcIngest, queryUnderIngest, scaling };
}

/** FindBestWorker latency idle and while ingest runs at 50% and 90% of each configuration's measured capacity. */
export async function runQueryUnderIngest(cfg: Pick<IngestBenchConfig, "blocks" | "phaseMs" | "underIngest">, log: (msg: string) => void) {
  log("gRPC ingest: query latency under paced ingest");
  const prefill = ingestTraffic(Math.min(cfg.blocks, 204_800), true, 11);
  const queryUnderIngest: Record<string, unknown> = {};
  for (const [shards, threads, applies] of cfg.underIngest) {
    const r = await preparedRouter(["router", String(shards), String(threads), ...(applies ? [applies] : [])], prefill);
    await queriesFor(r.client, r.reqs, 300);
    const capacityRun = await pacedIngest(r.server.port, 0, cfg.phaseMs, 1000);
    const capacity = capacityRun.blocks / capacityRun.secs;
    const row: Record<string, unknown> = { capacityBlocksPerSec: capacity };
    row.idle = await queriesFor(r.client, r.reqs, cfg.phaseMs);
    for (const share of [0.5, 0.9]) {
      const ingest = pacedIngest(r.server.port, capacity * share, cfg.phaseMs + 400, 1100 + share * 100);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const q = await queriesFor(r.client, r.reqs, cfg.phaseMs);
      const done = await ingest;
      row[`${share * 100}%`] = { ...q, ingestBlocksPerSec: done.blocks / done.secs };
    }
    r.client.close();
    await r.server.stop();
    queryUnderIngest[`index shards ${shards}, ingest threads ${threads}${applies ? `, ${applies}` : ""}`] = row;
  }
  return queryUnderIngest;
}
