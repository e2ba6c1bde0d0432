// Wraps any KvIndex to count what happens to events and expose the index's
// size, so no index implementation carries metrics code of its own.
import { type EventBatch, eventAt } from "../protocols/eventBatch.js";
import { type ApplyResult, type EngineFeed, type EventRef, type KvIndex, type Overlaps, type RawStream, mapRawStream } from "../indexer/types.js";
import type { IndexEvent, WorkerKey } from "../protocols/events.js";
import { LogOnce } from "../util/logOnce.js";
import type { RouterMetrics } from "./metrics.js";

export class MeteredIndex implements KvIndex {
  /** Workers already warned about, so a misbehaving worker logs once, not per event. */
  private readonly warned = new LogOnce();

  constructor(
    private readonly inner: KvIndex,
    private readonly metrics: RouterMetrics,
  ) {
    metrics.sources.indexBlocks = () => inner.size();
    metrics.sources.indexWorkers = () => inner.workers().length;
  }

  get capacity(): number {
    return this.inner.capacity;
  }

  applyBatch(batch: EventBatch, restore?: boolean): ApplyResult[] {
    // The event is built only to word a warning.
    return this.countAll(this.inner.applyBatch(batch, restore), (i) => eventAt(batch, i));
  }

  applyBatchAsync(batch: EventBatch, restore?: boolean): Promise<ApplyResult[]> {
    return this.inner.applyBatchAsync(batch, restore).then((results) => this.countAll(results, (i) => eventAt(batch, i)));
  }

  openRawStream(): RawStream | undefined {
    const raw = this.inner.openRawStream?.();
    if (raw === undefined) return undefined;
    return mapRawStream(raw, (applied) => {
      if (applied !== "refused") this.countAll(applied.results, applied.eventOf);
      return applied;
    });
  }

  openEngineFeed(): EngineFeed | undefined {
    const feed = this.inner.openEngineFeed?.();
    if (feed === undefined) return undefined;
    return {
      get outstanding() {
        return feed.outstanding;
      },
      submit: (message, payload) =>
        feed.submit(message, payload)?.then((applied) => {
          if (applied !== "refused") this.countAll(applied.results, applied.eventOf);
          return applied;
        }),
      resume: () => feed.resume(),
      close: () => feed.close(),
    };
  }

  /**
   * Counts a batch's results: the common case (all applied, no anomaly) is one
   * counter increment per batch, not one labelled lookup per event (the ingest hot path).
   */
  private countAll(results: ApplyResult[], eventOf: (i: number) => EventRef): ApplyResult[] {
    let plain = 0;
    for (let i = 0; i < results.length; i++) {
      const r = results[i];
      if (r.outcome === "applied" && !r.notes.gap && r.notes.unknownRemovals === 0) plain++;
      else this.count(() => eventOf(i), r);
    }
    if (plain > 0) this.metrics.events.inc({ outcome: "applied" }, plain);
    return results;
  }

  private count(eventOf: () => EventRef, result: ApplyResult): void {
    this.metrics.events.inc({ outcome: result.outcome });
    if (result.notes.unknownRemovals > 0) {
      this.metrics.eventAnomalies.inc({ kind: "unknown_removal" }, result.notes.unknownRemovals);
    }
    if (result.notes.gap) this.metrics.eventAnomalies.inc({ kind: "event_id_gap" });
    if (result.outcome !== "applied" || result.notes.gap) {
      const event = eventOf();
      const what = result.outcome === "applied" ? "event_id_gap" : result.outcome;
      const key = `${event.workerId}:${event.dpRank}:${what}`;
      const metric = what === "event_id_gap" ? 'kvrouter_kv_event_anomalies_total{kind="event_id_gap"}' : `kvrouter_kv_events_total{outcome="${what}"}`;
      this.warned.log(key, `KV event anomaly (logged once per worker and kind; counted in ${metric})`, {
        worker_id: event.workerId,
        dp_rank: event.dpRank,
        event_id: event.eventId,
        what,
      });
    }
  }

  findMatches(sequenceHashes: readonly bigint[]): Overlaps {
    return this.inner.findMatches(sequenceHashes);
  }
  findMatchesWords(words: Uint32Array, n: number): Overlaps {
    return this.inner.findMatchesWords(words, n);
  }
  storeRouted(worker: WorkerKey, sequenceHashes: readonly bigint[]): void {
    this.inner.storeRouted(worker, sequenceHashes);
  }
  removeRouted(worker: WorkerKey, sequenceHashes: readonly bigint[]): void {
    this.inner.removeRouted(worker, sequenceHashes);
  }
  removeWorker(workerId: bigint): number {
    return this.inner.removeWorker(workerId);
  }
  blockCounts(): Map<string, number> {
    return this.inner.blockCounts();
  }
  lastEventIds(): Map<string, bigint> {
    return this.inner.lastEventIds();
  }
  get workerSetVersion(): number {
    return this.inner.workerSetVersion;
  }

  workers(): WorkerKey[] {
    return this.inner.workers();
  }
  size(): number {
    return this.inner.size();
  }
  dump(): Iterable<IndexEvent> {
    return this.inner.dump();
  }
  sequenceHashOf(worker: WorkerKey, externalHash: bigint): bigint | undefined {
    return this.inner.sequenceHashOf(worker, externalHash);
  }
}
