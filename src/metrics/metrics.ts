// Prometheus metrics for one router instance (its own registry, so several
// routers can live in one process, as they do in tests).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Live figures read at scrape time, set by whoever owns them. */
export interface GaugeSources {
  indexBlocks?: () => number;
  indexWorkers?: () => number;
  indexEvictions?: () => number;
  activeRequests?: () => number;
}

export class RouterMetrics {
  readonly registry = new Registry();
  readonly sources: GaugeSources = {};

  readonly events = new Counter({
    name: "kvrouter_kv_events_total",
    help: "KV events by outcome: applied, or the reason they were rejected",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly eventAnomalies = new Counter({
    name: "kvrouter_kv_event_anomalies_total",
    help: "Applied events with something off: unknown_removal (block not held), event_id_gap",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly indexBlocks = new Gauge({
    collect: gaugeFrom(() => this.sources.indexBlocks),
    name: "kvrouter_index_blocks",
    help: "Distinct blocks (by sequence hash) held by at least one worker",
    registers: [this.registry],
  });
  readonly indexWorkers = new Gauge({
    collect: gaugeFrom(() => this.sources.indexWorkers),
    name: "kvrouter_index_workers",
    help: "Workers (worker_id, dp_rank) known to the index",
    registers: [this.registry],
  });
  readonly indexEvictions = new Gauge({
    collect: gaugeFrom(() => this.sources.indexEvictions),
    name: "kvrouter_index_evictions",
    help: "(block, worker) entries evicted since start because the index reached --max-blocks",
    registers: [this.registry],
  });
  readonly decisions = new Counter({
    name: "kvrouter_routing_decisions_total",
    help: "FindBestWorker decisions made",
    registers: [this.registry],
  });
  readonly overlapRatio = new Histogram({
    name: "kvrouter_routing_overlap_ratio",
    help: "Fraction of the prompt's blocks cached on the chosen worker",
    buckets: [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1],
    registers: [this.registry],
  });
  readonly requestDuration = new Histogram({
    name: "kvrouter_grpc_request_duration_seconds",
    help: "gRPC handling time by method and status code",
    labelNames: ["method", "code"] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1],
    registers: [this.registry],
  });
  readonly invalidRequests = new Counter({
    name: "kvrouter_invalid_requests_total",
    help: "Requests rejected as bad input, by method",
    labelNames: ["method"] as const,
    registers: [this.registry],
  });
  readonly unauthenticated = new Counter({
    name: "kvrouter_unauthenticated_total",
    help: "State-changing calls refused for a missing or wrong bearer token, by method",
    labelNames: ["method"] as const,
    registers: [this.registry],
  });
  readonly activeRequests = new Gauge({
    collect: gaugeFrom(() => this.sources.activeRequests),
    name: "kvrouter_active_requests",
    help: "Routed requests not yet freed",
    registers: [this.registry],
  });
  readonly expiredRequests = new Counter({
    name: "kvrouter_expired_requests_total",
    help: "Requests freed because their client never called Free within --active-request-ttl",
    registers: [this.registry],
  });
  readonly expiredWorkers = new Counter({
    name: "kvrouter_expired_workers_total",
    help: "Workers removed because their lease ran out",
    registers: [this.registry],
  });

  constructor(withProcessMetrics = true) {
    if (withProcessMetrics) collectDefaultMetrics({ register: this.registry });
  }
}

function gaugeFrom(source: () => (() => number) | undefined) {
  return function (this: Gauge) {
    const read = source();
    if (read !== undefined) this.set(read());
  };
}
