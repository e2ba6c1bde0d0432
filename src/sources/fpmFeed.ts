// Dynamo's forward-pass metrics into the router: each message that decodes
// (src/protocols/forwardPassMetrics.ts) and names a registered (worker,
// dp_rank) becomes that rank's engine batch report, read by the kv-adaptive
// policy for 3 s (ENGINE_BATCH_FRESH_MS; engines send one per forward pass and
// one a second when idle). Shared by the NATS and ZMQ event planes.
//
// Nothing a fleet sends here changes anything else: an oversized, malformed or
// other-version message, or one naming a worker or rank the router does not
// hold, is counted by reason, logged once per reason (and worker), and
// skipped. Reports are kept only for registered ranks, and the router drops
// them with the worker, so memory is bounded by the registry.
import { workerKeyString } from "../protocols/events.js";
import { type FpmReport, FpmSkip, decodeFpmEnvelope, decodeFpmPayload } from "../protocols/forwardPassMetrics.js";
import type { KvRouter } from "../router/router.js";
import { LogOnce } from "../util/logOnce.js";

export const FPM_OUTCOMES = ["applied", "malformed", "oversized", "unknown_version", "unknown_worker"] as const;
export type FpmOutcome = (typeof FPM_OUTCOMES)[number];

export class ForwardPassMetricsFeed {
  readonly counts: Record<FpmOutcome, number> = { applied: 0, malformed: 0, oversized: 0, unknown_version: 0, unknown_worker: 0 };
  private readonly logged = new LogOnce();

  /** `plane` names the event plane in log lines (nats, zmq). */
  constructor(
    private readonly router: KvRouter,
    private readonly plane: string,
  ) {}

  /** A whole event-plane message: the MessagePack envelope around the FPM payload (NATS). */
  onEnvelope(bytes: Uint8Array, where: Record<string, unknown>): void {
    this.take(() => decodeFpmEnvelope(bytes), where);
  }

  /** An FPM payload already taken out of its envelope (the ZMQ plane opens envelopes itself). */
  onPayload(payload: Uint8Array, where: Record<string, unknown>): void {
    this.take(() => decodeFpmPayload(payload), where);
  }

  private take(decode: () => FpmReport, where: Record<string, unknown>): void {
    let r: FpmReport;
    try {
      r = decode();
    } catch (err) {
      // Any throw from a decoder is a skip: counted, logged once per reason and first words.
      const reason = err instanceof FpmSkip ? err.reason : "malformed";
      const detail = (err as Error)?.message ?? String(err);
      this.counts[reason]++;
      this.logged.log(`${reason}:${detail.slice(0, 60)}`, "forward-pass metrics message skipped (logged once per kind)", { plane: this.plane, ...where, reason, detail });
      return;
    }
    const reg = this.router.registry.get(r.workerId);
    if (reg === undefined || !reg.dpRanks.includes(r.dpRank)) {
      this.counts.unknown_worker++;
      this.logged.log(`unknown_worker:${r.workerId}:${r.dpRank}`, "forward-pass metrics of a worker rank the router does not hold skipped (logged once per rank)", {
        plane: this.plane,
        ...where,
        worker_id: String(r.workerId),
        dp_rank: r.dpRank,
        registered_ranks: reg?.dpRanks,
      });
      return;
    }
    this.router.engineBatches.report(workerKeyString({ workerId: r.workerId, dpRank: r.dpRank }), { running: r.running, waiting: r.waiting });
    this.counts.applied++;
  }
}
