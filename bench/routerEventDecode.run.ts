// `node --expose-gc --import tsx bench/routerEventDecode.run.ts`: Dynamo event-plane messages
// (envelope over Vec<RouterEvent>) to flat batches, the library path against the flat reader,
// alternating rounds (routerEventDecode.bench.ts); prints JSON with the core count.
// BENCH_MESSAGES (default 2000), BENCH_EVENTS per message (default 4), BENCH_BLOCKS per event
// (default 4), BENCH_ROUNDS (default 7).
import { runRouterEventDecode } from "./routerEventDecode.bench.js";

const shape = {
  messages: Number(process.env.BENCH_MESSAGES ?? 2000),
  eventsPerMessage: Number(process.env.BENCH_EVENTS ?? 4),
  blocksPerEvent: Number(process.env.BENCH_BLOCKS ?? 4),
};
const result = runRouterEventDecode(shape, Number(process.env.BENCH_ROUNDS ?? 7));
console.log(JSON.stringify({ date: new Date().toISOString(), ...result }, null, 2));
