// `node --expose-gc --import tsx bench/relayIngest.run.ts [threads...]`: in-process ingest of relay
// messages (relayIngest.bench.ts; 64 workers per message) on the Mooncake workload when the trace is
// there; prints JSON. BENCH_ENTRIES (default 200,000), BENCH_ROUNDS (default 5), BENCH_PER_MESSAGE (64),
// BENCH_BLOCKS_PER_EVENT (16), BENCH_TOKENS_HASH=1 (tokens_hash instead of token ids).
import { existsSync } from "node:fs";
import { runRelayIngestScaling } from "./relayIngest.bench.js";
import { TRACE, mooncake, randomPrefix } from "./workload.js";

const entries = Number(process.env.BENCH_ENTRIES ?? 200_000);
const threads = process.argv.slice(2).map(Number);
const w = existsSync(TRACE) ? mooncake(entries) : randomPrefix(entries);
const shape = {
  perMessage: Number(process.env.BENCH_PER_MESSAGE ?? 64),
  blocksPerEvent: Number(process.env.BENCH_BLOCKS_PER_EVENT ?? 16),
  tokenIds: process.env.BENCH_TOKENS_HASH !== "1",
};
const result = await runRelayIngestScaling(w, threads.length > 0 ? threads : [1, 2, 4], Number(process.env.BENCH_ROUNDS ?? 5), shape);
console.log(JSON.stringify({ date: new Date().toISOString(), workload: w.name, entries, ...result }, null, 2));
