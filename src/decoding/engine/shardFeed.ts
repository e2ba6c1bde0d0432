// An engine feed's payload (vLLM/SGLang msgpack) decoded where it is applied:
// on the index shard thread that owns the worker. The flat reader
// (flatReader.ts) takes the common case; anything else goes through the same
// decoder and converter as the main thread's path (decode.ts, convert.ts).
// What the shard cannot settle alone (anything that is logged with its
// detail, touches the lower tiers or clears a rank) is handed back, and the
// main thread takes the message the way it always did.
import { E_ID_HI, E_ID_LO, EVENT_WORDS, type EventBatch, toEventBatch } from "../../protocols/eventBatch.js";
import { type IndexEvent, type WorkerKey } from "../../protocols/events.js";
import { isQuietSkip, toIndexEvent } from "./convert.js";
import { type EngineKind, decodeBatch } from "./decode.js";
import { FEED_OUTCOMES, FEED_TYPES } from "./feedCounts.js";
import { EngineBatchReader } from "./flatReader.js";

export { FEED_COUNT_WORDS, FEED_OUTCOMES, FEED_TYPES } from "./feedCounts.js";

/** Engine kinds as one word of a shard's queue entry. */
export const ENGINE_CODES: readonly EngineKind[] = ["vllm", "sglang"];

export interface ShardFeedBatch {
  dpRank: number;
  /** Device-tier stores and removals, event ids 0 (the shard numbers them: numberEvents). */
  batch: EventBatch;
}

/** One flat reader per block size in this thread (the router has one block size). */
const readers = new Map<number, EngineBatchReader>();

/** This thread's flat reader for `blockSize`. */
export function engineReader(blockSize: number): EngineBatchReader {
  let reader = readers.get(blockSize);
  if (reader === undefined) readers.set(blockSize, (reader = new EngineBatchReader(blockSize)));
  return reader;
}

/**
 * One payload's events for the shard to apply, its counts added to `counts`
 * (FEED_COUNT_WORDS, row-major), or undefined when the main thread must take
 * it: the payload does not decode, an event does not decode, a skip that is
 * logged with its detail, a clear (it also empties the lower tiers) or an
 * event on another storage tier (the lower tiers live on the main thread).
 * `counts` is written only for a batch that is returned. The batch's arrays
 * may be the reader's own (valid until this thread's next call): apply it
 * before decoding another.
 */
export function decodeForShard(
  payload: Uint8Array,
  engine: EngineKind,
  worker: { workerId: bigint; defaultRank: number },
  blockSize: number,
  counts: Int32Array,
): ShardFeedBatch | undefined {
  const flat = engineReader(blockSize).read(payload, engine, worker.workerId, worker.defaultRank, counts, true);
  if (flat !== undefined) return flat;
  const decoded = decodeForShardReference(payload, engine, worker, blockSize, counts);
  return decoded === undefined ? undefined : { dpRank: decoded.dpRank, batch: toEventBatch(decoded.events) };
}

/** decodeForShard() through decode.ts and convert.ts alone: the reference the flat reader is checked against. */
export function decodeForShardReference(
  payload: Uint8Array,
  engine: EngineKind,
  worker: { workerId: bigint; defaultRank: number },
  blockSize: number,
  counts: Int32Array,
): { dpRank: number; events: IndexEvent[] } | undefined {
  let batch;
  try {
    batch = decodeBatch(payload, engine);
  } catch {
    return undefined;
  }
  const key: WorkerKey = { workerId: worker.workerId, dpRank: batch.dpRank ?? worker.defaultRank };
  const events: IndexEvent[] = [];
  const tally: number[] = [];
  for (const e of batch.events) {
    if (e.type === "bad" || e.type === "AllBlocksCleared") return undefined;
    const converted = toIndexEvent(e, key, 0n, blockSize);
    const row = FEED_TYPES.indexOf(e.type) * FEED_OUTCOMES.length;
    if ("skip" in converted) {
      if (!isQuietSkip(converted.skip)) return undefined;
      tally.push(row + FEED_OUTCOMES.indexOf(converted.skip));
      continue;
    }
    const event = converted.event;
    if (event.kind !== "cleared" && event.tier !== undefined && event.tier !== "device") return undefined;
    tally.push(row);
    events.push(event);
  }
  for (const at of tally) counts[at]++;
  return { dpRank: key.dpRank, events };
}

const idWord = new BigUint64Array(1);
const idHalves = new Uint32Array(idWord.buffer);

/** Numbers a batch's events last + 1, last + 2, ...; returns the new last id. */
export function numberEvents(batch: EventBatch, last: bigint): bigint {
  for (let o = 0; o < batch.count * EVENT_WORDS; o += EVENT_WORDS) {
    idWord[0] = ++last;
    batch.events[o + E_ID_LO] = idHalves[0];
    batch.events[o + E_ID_HI] = idHalves[1];
  }
  return last;
}
