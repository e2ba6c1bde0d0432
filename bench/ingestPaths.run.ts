// `node --import tsx bench/ingestPaths.run.ts [rounds] [out.json]`: gRPC ingest by where messages are
// decoded, beside the transport floor (bare grpc-js with kv-router's windows), in alternating rounds:
// the index on the main thread; 1 and 2 index shard threads taking raw messages (decoded, hashed and
// applied there); the same shards with messages decoded on the main thread and queued as records (the
// path before raw messages). Token ids and tokens_hash on one connection (64 workers per stream, a
// relay), token ids from 8 publishers of one worker each. Medians; the core count printed beside.
import { writeFileSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { throughput, throughputParallel } from "./ingest.bench.js";
import { ingestTraffic } from "./ingestWire.js";
import { median } from "./stats.js";

const rounds = Number(process.argv[2] ?? 3);
const blocks = Number(process.env.BENCH_BLOCKS ?? 204_800);
const targets: [string, string[]][] = [
  ["floor (bare grpc-js, equal windows)", ["floor"]],
  ["main thread", ["router", "0", "0"]],
  ["1 shard, raw", ["router", "1", "0"]],
  ["1 shard, decoded here", ["router", "1", "0", "decoded"]],
  ["2 shards, raw", ["router", "2", "0"]],
  ["2 shards, decoded here", ["router", "2", "0", "decoded"]],
];
const tokens = ingestTraffic(blocks, true);
const hashes = ingestTraffic(blocks, false);
const CONNECTIONS = 8;
const perConnection = Array.from({ length: CONNECTIONS }, (_, c) => ingestTraffic(Math.ceil(blocks / CONNECTIONS), true, 17 + c, 10_000 * (c + 1), 1));
const parallelBlocks = perConnection.reduce((n, t) => n + t.blocks, 0);
const runs = new Map<string, number[]>();
const add = (k: string, v: number) => runs.set(k, [...(runs.get(k) ?? []), v]);
for (let round = 0; round < rounds; round++) {
  for (const [name, args] of targets) {
    add(`token_ids|${name}`, await throughput(args, tokens));
    add(`tokens_hash|${name}`, await throughput(args, hashes));
    add(`8 publishers|${name}`, await throughputParallel(args, perConnection.map((t) => t.messages), parallelBlocks));
    console.error(`round ${round + 1}/${rounds}: ${name}`);
  }
}
const cores = availableParallelism();
const result: Record<string, unknown> = { date: new Date().toISOString(), cores, cpu: cpus()[0]?.model, blocks, rounds };
const lines = [`gRPC ingest by path, blocks/s (median of ${rounds}; ${cores} cores, ${cpus()[0]?.model})`];
for (const payload of ["token_ids", "tokens_hash", "8 publishers"]) {
  const floor = median(runs.get(`${payload}|${targets[0][0]}`)!);
  const main = median(runs.get(`${payload}|main thread`)!);
  const row: Record<string, unknown> = {};
  for (const [name] of targets) {
    const v = median(runs.get(`${payload}|${name}`)!);
    row[name] = { blocksPerSec: v, vsFloor: v / floor, vsMainThread: v / main, runs: runs.get(`${payload}|${name}`) };
    lines.push(`  ${payload.padEnd(12)} ${name.padEnd(36)} ${(v / 1e6).toFixed(2)} M  ${(v / floor).toFixed(2)}x floor  ${(v / main).toFixed(2)}x main thread`);
  }
  result[payload] = row;
}
console.log(lines.join("\n"));
if (process.argv[3]) writeFileSync(process.argv[3], JSON.stringify(result, null, 2) + "\n");
