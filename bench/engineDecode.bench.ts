// Engine payload decoding in process (issue 21): the cost per stored block of
// turning a vLLM msgpack payload into the index's flat EventBatch with local
// hashes, two ways, in the same run:
// - "library": @msgpack/msgpack into objects (bigint hashes), convert.ts to
//   IndexEvents (each block hashed by @node-rs/xxhash), toEventBatch (what the
//   subscriber did before the flat reader, and still does for what it hands back);
// - "flat": src/decoding/engine/flatReader.ts (bytes to words, token ids hashed
//   in WebAssembly), copying the batch out as the main thread does.
// Rounds alternate between the two (a shared 2-core machine is noisy); figures
// are medians of the rounds, with the core count. Array- and map-encoded events.
import { availableParallelism } from "node:os";
import { decode, encode } from "@msgpack/msgpack";
import { FEED_COUNT_WORDS } from "../src/decoding/engine/feedCounts.js";
import { decodeForShardReference } from "../src/decoding/engine/shardFeed.js";
import { EngineBatchReader } from "../src/decoding/engine/flatReader.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import { type FeedShape, enginePayloads } from "./engineFeed.bench.js";
import { gc, median, usSince } from "./stats.js";

const BLOCK = 16;
type Encoding = "array" | "map";
const STORED = ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name"];

/** The same payloads with map-encoded batches and events (vLLM since its switch to map encoding). */
function asMaps(payloads: Uint8Array[]): Uint8Array[] {
  return payloads.map((p) => {
    const [ts, events, rank] = decode(p, { useBigInt64: true }) as [number, unknown[][], number];
    const mapped = events.map(([type, ...rest]) => Object.fromEntries([["type", type], ...STORED.map((k, i) => [k, rest[i]])]));
    return encode({ ts, events: mapped, data_parallel_rank: rank }, { useBigInt64: true });
  });
}

/** µs per block of decoding every payload one way. */
function round(way: "library" | "flat", payloads: Uint8Array[], blocks: number, reader: EngineBatchReader): number {
  const counts = new Int32Array(FEED_COUNT_WORDS);
  const worker = { workerId: 7n, defaultRank: 0 };
  let held = 0;
  gc();
  const t0 = process.hrtime.bigint();
  for (const p of payloads) {
    if (way === "flat") {
      const flat = reader.read(p, "vllm", 7n, 0, counts);
      if (flat === undefined) throw new Error("the flat reader handed a bench payload back");
      held += flat.batch.count;
    } else {
      const decoded = decodeForShardReference(p, "vllm", worker, BLOCK, counts);
      if (decoded === undefined) throw new Error("the reference refused a bench payload");
      held += toEventBatch(decoded.events).count;
    }
  }
  const us = usSince(t0);
  if (held === 0) throw new Error("nothing decoded");
  return us / blocks;
}

export async function runEngineDecode(shape: FeedShape, rounds: number) {
  const arrays = enginePayloads(shape).flat();
  const byEncoding: Record<Encoding, Uint8Array[]> = { array: arrays, map: asMaps(arrays) };
  const blocks = arrays.length * shape.eventsPerPayload * shape.blocksPerEvent;
  const reader = new EngineBatchReader(BLOCK);
  const rows = (["array", "map"] as const).map((encoding) => {
    const payloads = byEncoding[encoding];
    // Warm both paths (JIT, WebAssembly tier-up) before timing.
    round("library", payloads, blocks, reader);
    round("flat", payloads, blocks, reader);
    const library: number[] = [];
    const flat: number[] = [];
    for (let r = 0; r < rounds; r++) {
      library.push(round("library", payloads, blocks, reader));
      flat.push(round("flat", payloads, blocks, reader));
    }
    return {
      encoding,
      bytesPerBlock: payloads.reduce((n, p) => n + p.length, 0) / blocks,
      libraryUsPerBlock: median(library),
      flatUsPerBlock: median(flat),
      flatVsLibrary: median(flat) / median(library),
      allRounds: { library, flat },
    };
  });
  return { cores: availableParallelism(), ...shape, blockSize: BLOCK, blocks, rounds, rows };
}
