// `node --expose-gc --import tsx bench/engineDecode.run.ts`: the cost per block of decoding vLLM
// msgpack payloads (token ids, blocks of 16) into hashed flat batches, the library path against the
// flat reader, in process, alternating rounds (engineDecode.bench.ts); prints JSON. BENCH_WORKERS
// (default 8), BENCH_PAYLOADS per worker (default 300), BENCH_ROUNDS (default 7).
import { runEngineDecode } from "./engineDecode.bench.js";

const shape = {
  workers: Number(process.env.BENCH_WORKERS ?? 8),
  payloads: Number(process.env.BENCH_PAYLOADS ?? 300),
  eventsPerPayload: 4,
  blocksPerEvent: 4,
};
const result = await runEngineDecode(shape, Number(process.env.BENCH_ROUNDS ?? 7));
console.log(JSON.stringify({ date: new Date().toISOString(), ...result }, null, 2));
