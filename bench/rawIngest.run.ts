// `node --expose-gc --import tsx bench/rawIngest.run.ts [threads...]`: in-process ingest from wire
// bytes (rawIngest.bench.ts) on the Mooncake workload when the trace is there; prints JSON.
// BENCH_ENTRIES (default 1,000,000), BENCH_REPEATS (default 3).
import { existsSync } from "node:fs";
import { runRawIngestScaling } from "./rawIngest.bench.js";
import { TRACE, mooncake, randomPrefix } from "./workload.js";

const entries = Number(process.env.BENCH_ENTRIES ?? 1_000_000);
const threads = process.argv.slice(2).map(Number);
const w = existsSync(TRACE) ? mooncake(entries) : randomPrefix(entries);
const result = await runRawIngestScaling(w, threads.length > 0 ? threads : [1, 2, 4], Number(process.env.BENCH_REPEATS ?? 3));
console.log(JSON.stringify({ date: new Date().toISOString(), workload: w.name, entries, ...result }, null, 2));
