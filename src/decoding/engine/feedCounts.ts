// The per-payload count matrix of an engine feed: event type × outcome, as
// kvrouter_zmq_events_total labels them. Shard threads answer with it and the
// flat reader fills it, so both paths count the way the main thread's does.
import { SKIP_REASONS } from "./convert.js";

/** Event types (rows). */
export const FEED_TYPES = ["BlockStored", "BlockRemoved", "AllBlocksCleared"] as const;
/** Outcomes (columns). */
export const FEED_OUTCOMES = ["converted", ...SKIP_REASONS, "bad_event"] as const;
/** Words of the count matrix: FEED_TYPES × FEED_OUTCOMES, row-major. */
export const FEED_COUNT_WORDS = FEED_TYPES.length * FEED_OUTCOMES.length;
