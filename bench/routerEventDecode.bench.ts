// Dynamo's event-plane messages (core NATS and Dynamo's ZMQ plane carry the
// same envelope) decoded into the index's flat EventBatch: the library path
// (protocols/routerEventCodec.ts eventPlaneEvents: @msgpack/msgpack into
// objects with bigints, IndexEvents, then toEventBatch as applyEventsAsync
// does) against the flat reader (decoding/dynamo/routerEventReader.ts), in
// process, alternating rounds on the same messages, median per event and per
// block. Messages are shaped as current publishers write them: a named
// EventEnvelope whose bin payload is a Vec<RouterEvent> (residency_domain
// worker, storage_tier device, mm_extra_info nil per block, u64 hashes).
import { cpus } from "node:os";
import { routerEventReader } from "../src/decoding/dynamo/routerEventReader.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import { encodeMsgpack, eventPlaneEvents } from "../src/protocols/routerEventCodec.js";
import { seededRandom } from "../src/util/random.js";

export interface RouterEventDecodeShape {
  messages: number;
  eventsPerMessage: number;
  blocksPerEvent: number;
}

export interface RouterEventDecodeResult {
  cores: number;
  shape: RouterEventDecodeShape;
  rounds: number;
  /** Median over rounds, microseconds. */
  usPerEvent: { library: number; flat: number };
  usPerBlock: { library: number; flat: number };
  /** library / flat. */
  speedup: number;
}

function messagesOf(shape: RouterEventDecodeShape): Uint8Array[] {
  const rnd = seededRandom(21);
  const u64 = () => BigInt(Math.floor(rnd() * 2 ** 32)) * 2n ** 32n + BigInt(Math.floor(rnd() * 2 ** 32));
  let id = 0;
  return Array.from({ length: shape.messages }, (_, m) => {
    const events = Array.from({ length: shape.eventsPerMessage }, (_, e) => {
      // Three stores to one removal, as a steady cache turns over.
      const data =
        e % 4 === 3
          ? { removed: { block_hashes: Array.from({ length: shape.blocksPerEvent }, u64) } }
          : {
              stored: {
                parent_hash: e % 2 === 0 ? null : u64(),
                blocks: Array.from({ length: shape.blocksPerEvent }, () => ({ block_hash: u64(), tokens_hash: u64(), mm_extra_info: null })),
              },
            };
      return { worker_id: 0x7587_8889_1234_5678n, storage_tier: "device", residency_domain: "worker", event: { event_id: ++id, data, dp_rank: m % 4 } };
    });
    return encodeMsgpack({ topic: "kv-events", publisher_id: 0x1234n, sequence: m, published_at: 1_733_300_000_000, payload: encodeMsgpack(events) });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export function runRouterEventDecode(shape: RouterEventDecodeShape, rounds: number): RouterEventDecodeResult {
  const messages = messagesOf(shape);
  const reader = routerEventReader();
  let sink = 0;
  const library = () => {
    for (const m of messages) sink += toEventBatch(eventPlaneEvents(m, () => undefined)).count;
  };
  const flat = () => {
    for (const m of messages) {
      const b = reader.read(m);
      if (b === undefined) throw new Error("the bench's message was handed back");
      sink += b.count;
    }
  };
  // Same answers first (a bench of a wrong reader measures nothing).
  for (const m of messages.slice(0, 10)) {
    const a = toEventBatch(eventPlaneEvents(m, () => undefined));
    const b = reader.read(m)!;
    if (a.events.join() !== b.events.join() || a.items.join() !== b.items.join()) throw new Error("the reader and the library disagree");
  }
  const times = { library: [] as number[], flat: [] as number[] };
  library();
  flat(); // warm-up
  for (let r = 0; r < rounds; r++) {
    for (const [name, fn] of r % 2 === 0 ? ([["library", library], ["flat", flat]] as const) : ([["flat", flat], ["library", library]] as const)) {
      globalThis.gc?.();
      const t0 = process.hrtime.bigint();
      fn();
      times[name].push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }
  if (sink < 0) console.log(sink);
  const events = shape.messages * shape.eventsPerMessage;
  const blocks = events * shape.blocksPerEvent;
  const lib = median(times.library);
  const fl = median(times.flat);
  return {
    cores: cpus().length,
    shape,
    rounds,
    usPerEvent: { library: lib / events, flat: fl / events },
    usPerBlock: { library: lib / blocks, flat: fl / blocks },
    speedup: lib / fl,
  };
}
