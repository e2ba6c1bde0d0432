// `node --expose-gc --import tsx bench/ingestScaling.run.ts [threads...]`: in-process
// ingest by shard threads alone (waiting vs queued applies, beside the index in
// this thread), on the Mooncake workload when the trace is there; prints JSON.
import { existsSync } from "node:fs";
import { runIngestScaling } from "./indexer.bench.js";
import { TRACE, mooncake, randomPrefix } from "./workload.js";

const entries = Number(process.env.BENCH_ENTRIES ?? 1_000_000);
const threads = process.argv.slice(2).map(Number);
const w = existsSync(TRACE) ? mooncake(entries) : randomPrefix(entries);
const result = await runIngestScaling(w, threads.length > 0 ? threads : [1, 2, 4], Number(process.env.BENCH_REPEATS ?? 3), 64, Number(process.env.BENCH_BATCH_EVENTS ?? 16));
console.log(JSON.stringify({ date: new Date().toISOString(), workload: w.name, entries, ...result }, null, 2));
