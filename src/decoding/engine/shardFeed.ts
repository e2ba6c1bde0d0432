// An engine feed's payload (vLLM/SGLang msgpack) decoded where it is applied:
// on the index shard thread that owns the worker. Same decoder and converter
// as the main thread's path (decode.ts, convert.ts); what the shard cannot
// settle alone (anything that is logged with its detail, touches the lower
// tiers or clears a rank) is handed back, and the main thread takes the
// message the way it always did.
import { type IndexEvent, type WorkerKey } from "../../protocols/events.js";
import { SKIP_REASONS, isQuietSkip, toIndexEvent } from "./convert.js";
import { type EngineKind, decodeBatch } from "./decode.js";

/** Event types in the count matrix a shard answers with (rows). */
export const FEED_TYPES = ["BlockStored", "BlockRemoved", "AllBlocksCleared"] as const;
/** Outcomes in the count matrix (columns): as kvrouter_zmq_events_total labels them. */
export const FEED_OUTCOMES = ["converted", ...SKIP_REASONS, "bad_event"] as const;
/** Words of the count matrix: FEED_TYPES × FEED_OUTCOMES. */
export const FEED_COUNT_WORDS = FEED_TYPES.length * FEED_OUTCOMES.length;

/** Engine kinds as one word of a shard's queue entry. */
export const ENGINE_CODES: readonly EngineKind[] = ["vllm", "sglang"];

export interface ShardFeedBatch {
  dpRank: number;
  /** Device-tier stores and removals, event ids 0 (the shard numbers them). */
  events: IndexEvent[];
}

/**
 * One payload's events for the shard to apply, its counts added to `counts`
 * (FEED_COUNT_WORDS, row-major), or undefined when the main thread must take
 * it: the payload does not decode, an event does not decode, a skip that is
 * logged with its detail, a clear (it also empties the lower tiers) or an
 * event on another storage tier (the lower tiers live on the main thread).
 * `counts` is written only for a batch that is returned.
 */
export function decodeForShard(
  payload: Uint8Array,
  engine: EngineKind,
  worker: { workerId: bigint; defaultRank: number },
  blockSize: number,
  counts: Int32Array,
): ShardFeedBatch | undefined {
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
