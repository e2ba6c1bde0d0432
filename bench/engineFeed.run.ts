// `node --expose-gc --import tsx bench/engineFeed.run.ts [threads...]`: engine ZeroMQ payloads
// (vLLM msgpack, token ids) decoded on the main thread against decoded on the index shard threads,
// in process (engineFeed.bench.ts); prints JSON. BENCH_WORKERS (default 8), BENCH_PAYLOADS per
// worker (default 500), BENCH_ROUNDS (default 3).
import { runEngineFeed } from "./engineFeed.bench.js";

const threads = process.argv.slice(2).map(Number);
const shape = {
  workers: Number(process.env.BENCH_WORKERS ?? 8),
  payloads: Number(process.env.BENCH_PAYLOADS ?? 500),
  eventsPerPayload: 4,
  blocksPerEvent: 4,
};
const result = await runEngineFeed(shape, threads.length > 0 ? threads : [1, 2], Number(process.env.BENCH_ROUNDS ?? 3));
console.log(JSON.stringify({ date: new Date().toISOString(), ...result }, null, 2));
