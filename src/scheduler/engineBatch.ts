// An engine's batch as the engine itself counts it: the most sequences it runs
// at once (its batch slots: vLLM max_num_seqs, SGLang max_running_requests;
// Dynamo's ModelRuntimeConfig.max_num_seqs, WorkerStats.request_total_slots),
// how many it runs now (request_active_slots; ForwardPassMetrics'
// scheduled prefill + decode requests) and how many wait for a slot
// (num_requests_waiting; ForwardPassMetrics' queued requests). docs/dynamo.md
// cites the sources. A worker whose slots are all taken and that has requests
// waiting is backed up: a new prompt there waits for a running sequence to
// finish, however little of it is left to prefill. One busy with a large
// prefill but with free slots is not: the next prompt starts within steps.

/** A worker's batch slots and what fills them; slots 0 = not reported. */
export interface EngineBatch {
  slots: number;
  running: number;
  waiting: number;
  /** True when running/waiting came from the engine; false when the router projected them from its own requests. */
  reported: boolean;
}

/** What an engine reports about its batch (a ForwardPassMetrics message, a /metrics scrape). */
export interface EngineBatchReport {
  running: number;
  waiting: number;
}

/**
 * An engine report older than this is not used: Dynamo's forward-pass metrics
 * arrive every forward pass and at least every second when idle (the FPM
 * heartbeat), and kv-router polls /metrics every second; three missed beats
 * mean the feed stopped, and a stale count would steer traffic wrongly.
 */
export const ENGINE_BATCH_FRESH_MS = 3_000;

/**
 * Without a fresh engine report, the router's own count: the requests it routed to the worker
 * and not yet freed fill its slots first, the rest wait (Dynamo's router-side projection, which
 * its engine metrics overwrite when they arrive).
 */
export function projectedBatch(slots: number, activeRequests: number): EngineBatch {
  return { slots, running: Math.min(activeRequests, slots), waiting: Math.max(0, activeRequests - slots), reported: false };
}

/** Every slot taken and requests waiting for one. A worker that reports no slots is never backed up. */
export function backedUp(b: EngineBatch | undefined): boolean {
  return b !== undefined && b.slots > 0 && b.running >= b.slots && b.waiting > 0;
}

/** The engines' latest batch reports, by worker key; read with the worker's reported slots. */
export class EngineBatches {
  private readonly reports = new Map<string, EngineBatchReport & { at: number }>();

  constructor(private readonly now: () => number) {}

  report(workerKey: string, r: EngineBatchReport): void {
    this.reports.set(workerKey, { running: Math.max(0, r.running), waiting: Math.max(0, r.waiting), at: this.now() });
  }

  /** The engine's fresh report, else the router's projection from the requests it routed there and has not seen freed. */
  batch(workerKey: string, slots: number, activeRequests: number): EngineBatch {
    const r = this.reports.get(workerKey);
    if (r !== undefined && this.now() - r.at <= ENGINE_BATCH_FRESH_MS) return { slots, running: r.running, waiting: r.waiting, reported: true };
    return projectedBatch(slots, activeRequests);
  }

  forgetWorker(matches: (workerKey: string) => boolean): void {
    for (const key of [...this.reports.keys()]) if (matches(key)) this.reports.delete(key);
  }
}
