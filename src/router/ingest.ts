// Ingest: worker events into the GPU index and the lower tiers, in order. The
// GPU index orders every event of a (worker, dp_rank), whatever its tier; a
// refused batch (no worker slots left) changes nothing.
import { E_KIND, EVENT_WORDS, type EventBatch, KIND_CLEARED, eventAt, eventsOf, toEventBatch } from "../protocols/eventBatch.js";
import type { LowerTierEvent, LowerTiers } from "../indexer/lowerTiers.js";
import { type ApplyResult, type EventRef, IndexCapacityError, type KvIndex, type RawStreamOf, mapRawStream } from "../indexer/types.js";
import type { IndexEvent } from "../protocols/events.js";
import { RouterError } from "./errors.js";
import type { IngestSummary } from "./types.js";

/** Events the primary (GPU) index holds: device stores and removals, and clears that reach the GPU. */
function isPrimary(e: IndexEvent): boolean {
  if (e.kind === "cleared") return e.scope !== "cache_owner";
  return e.tier === undefined || e.tier === "device";
}

/** An event's place in its (worker, dp_rank) order, with no effect on the GPU index. */
function cursorOnly(e: IndexEvent): IndexEvent {
  return { workerId: e.workerId, dpRank: e.dpRank, eventId: e.eventId, kind: "removed", blockHashes: [] };
}

/** The flag that sets the index's (worker, dp_rank) capacity, named in refusals. */
export const WORKER_RANKS_FLAG = "--max-worker-ranks";

/** An index out of worker slots as RESOURCE_EXHAUSTED naming the flag; any other error as it is. */
function capacityRefusal(err: unknown): unknown {
  if (!(err instanceof IndexCapacityError)) return err;
  return new RouterError("resource_exhausted", `${err.message}; nothing was applied (raise the limit with ${WORKER_RANKS_FLAG})`);
}

/** Runs an index operation; an index out of worker slots becomes RESOURCE_EXHAUSTED naming the flag. */
export function withIndexCapacity<T>(op: () => T): T {
  try {
    return op();
  } catch (err) {
    throw capacityRefusal(err);
  }
}

/** Rejections listed in an ingest summary; the rest are only counted. */
const MAX_LISTED_REJECTIONS = 100;

export function applyEvents(index: KvIndex, lowerTiers: LowerTiers, events: readonly IndexEvent[], restore = false): IngestSummary {
  // The primary index orders every event of a (worker, dp_rank), whatever
  // its tier: a lower-tier event reaches it as an empty removal (advancing
  // the event id), then goes to its tier. One call for the whole batch: a
  // sharded index answers it in one round trip. A batch naming more new
  // workers than the index has slots for is refused whole.
  const primary = events.every(isPrimary) ? events : events.map((e) => (isPrimary(e) ? e : cursorOnly(e)));
  const results = withIndexCapacity(() => index.applyBatch(toEventBatch(primary), restore));
  const outcomes = events.map((event, i): ApplyResult => {
    if (results[i].outcome !== "applied") return results[i];
    if (event.kind === "cleared") {
      if (event.scope !== "cache_owner") lowerTiers.clearRank(event);
    } else if (!isPrimary(event)) {
      return { ...results[i], outcome: lowerTiers.apply(event as LowerTierEvent, restore).outcome };
    }
    return results[i];
  });
  return summarize(outcomes, (i) => events[i]);
}

/** Same as applyEvents() on a flat batch (the gRPC ingest path). */
export function applyEventBatch(index: KvIndex, lowerTiers: LowerTiers, batch: EventBatch, restore = false): IngestSummary {
  // A clear also empties the rank's lower tiers: such batches take the event path.
  if (hasCleared(batch)) return applyEvents(index, lowerTiers, eventsOf(batch), restore);
  return summarize(withIndexCapacity(() => index.applyBatch(batch, restore)), (i) => eventAt(batch, i));
}

/**
 * applyEvents() that does not wait for index threads (the event planes): a
 * batch of device-tier stores and removals is queued; anything touching the
 * lower tiers applies synchronously (after what is queued). Throws, as
 * applyEvents() does, when the batch is refused.
 */
export function applyEventsAsync(index: KvIndex, lowerTiers: LowerTiers, events: readonly IndexEvent[], restore = false): Promise<IngestSummary> {
  if (!events.every((e) => isPrimary(e) && e.kind !== "cleared")) return Promise.resolve(applyEvents(index, lowerTiers, events, restore));
  const batch = toEventBatch(events);
  const applying = withIndexCapacity(() => index.applyBatchAsync(batch, restore));
  return applying.then((results) => summarize(results, (i) => events[i]));
}

/**
 * applyEventBatch() that does not wait for index threads (the gRPC ingest
 * path): the index applies batches in submission order, so the caller may
 * submit the next one before this one resolves. A batch with a clear, which
 * also touches the lower tiers, applies synchronously (after those queued).
 * Throws, as applyEventBatch() does, when the batch is refused.
 */
export function applyEventBatchAsync(index: KvIndex, lowerTiers: LowerTiers, batch: EventBatch, restore = false): Promise<IngestSummary> {
  if (hasCleared(batch)) return Promise.resolve(applyEvents(index, lowerTiers, eventsOf(batch), restore));
  // A refusal is thrown here, before anything is queued, as applyEventBatch() throws it.
  const applying = withIndexCapacity(() => index.applyBatchAsync(batch, restore));
  return applying.then((results) => summarize(results, (i) => eventAt(batch, i)));
}

/**
 * A client stream's IngestKvEvents messages applied as wire bytes by the
 * index's shard threads (KvIndex.openRawStream, whose rules it keeps), each
 * message's outcomes summed up as applyEventBatch() does.
 */
export type RawIngest = RawStreamOf<(IngestSummary & { split: boolean }) | "refused">;

/** A raw ingest for one client stream, or undefined when the index takes no raw messages. */
export function openRawIngest(index: KvIndex): RawIngest | undefined {
  const raw = index.openRawStream?.();
  if (raw === undefined) return undefined;
  return mapRawStream(raw, (applied) => (applied === "refused" ? applied : { ...summarize(applied.results, applied.eventOf), split: applied.split }));
}

/** Counts outcomes; lists the first rejections (eventOf builds an event only for those). */
function summarize(results: readonly ApplyResult[], eventOf: (i: number) => EventRef): IngestSummary {
  const summary: IngestSummary = { applied: 0, rejected: 0, rejections: [] };
  for (let i = 0; i < results.length; i++) {
    const { outcome } = results[i];
    if (outcome === "applied") {
      summary.applied++;
      continue;
    }
    summary.rejected++;
    if (summary.rejections.length < MAX_LISTED_REJECTIONS) {
      const event = eventOf(i);
      summary.rejections.push({
        worker: { workerId: event.workerId, dpRank: event.dpRank },
        eventId: event.eventId,
        reason: outcome,
      });
    }
  }
  return summary;
}

function hasCleared(batch: EventBatch): boolean {
  for (let i = 0; i < batch.count; i++) if (batch.events[i * EVENT_WORDS + E_KIND] === KIND_CLEARED) return true;
  return false;
}
