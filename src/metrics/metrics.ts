// Prometheus metrics for one router instance (its own registry, so several
// routers can live in one process, as they do in tests).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { KvRouterService } from "../../gen/kvrouter/v1/router_pb.js";
import type { EventOutcome } from "../indexer/types.js";
import type { WorkerStatus } from "../router/types.js";
import { mirroredCounter, mirroredTotal } from "./mirrored.js";

/** Live figures read at scrape time, set by whoever owns them. */
export interface GaugeSources {
  indexBlocks?: () => number;
  indexWorkers?: () => number;
  indexEvictions?: () => number;
  indexBytes?: () => number;
  /** Shard answers to queries, by how they were had (index shard threads only). */
  indexShardAnswers?: () => { read: number; asked: number };
  /** Index shard threads that stopped serving (index shard threads only). */
  indexShardsDown?: () => number;
  /** Ingest decoder threads replaced after they stopped (--ingest-threads only). */
  ingestDecoderRestarts?: () => number;
  activeRequests?: () => number;
  workers?: () => WorkerStatus[];
  queueDepth?: () => number;
}

/** Per-worker series exported by default; beyond it they are left out (and counted), so a big fleet cannot explode the series count. */
export const DEFAULT_METRICS_MAX_WORKERS = 256;

const EVENT_OUTCOMES: readonly (EventOutcome | "invalid")[] = ["applied", "parent_block_not_found", "stale_event_id", "invalid"];
const METHODS = KvRouterService.methods.map((m) => m.name);
const WIRE_NAMES = new Map(KvRouterService.methods.map((m) => [m.localName, m.name]));

export class RouterMetrics {
  readonly registry = new Registry();
  readonly sources: GaugeSources = {};

  readonly events = new Counter({
    name: "kvrouter_kv_events_total",
    help: "KV events by outcome: applied, or the reason they were rejected",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly ingestMessages = new Counter({
    name: "kvrouter_ingest_messages_total",
    help: "IngestKvEvents messages by where they were decoded: shard (as raw bytes, on the index shard thread that applied them), shard_split (naming workers of several shards: each shard decoded and applied its own events' bytes, committed together), main (on the main thread or a decoder thread), shard_refused (sent raw, handed back by the shard, then decoded on the main thread)",
    labelNames: ["path"] as const,
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
  readonly indexEvictions = mirroredTotal(
    this.registry,
    "kvrouter_index_evictions_total",
    "(block, worker) entries evicted because the index reached --max-blocks",
    () => this.sources.indexEvictions?.() ?? 0,
  );
  readonly indexBytes = new Gauge({
    collect: gaugeFrom(() => this.sources.indexBytes),
    name: "kvrouter_index_memory_bytes",
    help: "Bytes the index's typed arrays hold (capacity, all shards)",
    registers: [this.registry],
  });
  readonly indexShardAnswers = mirroredCounter(
    this.registry,
    "kvrouter_index_shard_answers_total",
    "Index shard threads' answers to queries by how they were had: read (from the shard's shared memory, without waking it) or asked (of the shard thread: its memory could not be read whole at that moment, or shared reads are off on this CPU)",
    "path",
    { read: () => this.sources.indexShardAnswers?.().read ?? 0, asked: () => this.sources.indexShardAnswers?.().asked ?? 0 },
  );
  readonly indexShardsDown = new Gauge({
    collect: gaugeFrom(() => this.sources.indexShardsDown),
    name: "kvrouter_index_shards_down",
    help: "Index shard threads that stopped serving (an exception, killed for memory, terminated): above 0 the router answers UNAVAILABLE, reports not ready and not live, and exits to be restarted",
    registers: [this.registry],
  });
  readonly ingestDecoderRestarts = mirroredTotal(
    this.registry,
    "kvrouter_ingest_decoder_restarts_total",
    "Ingest decoder threads (--ingest-threads) replaced after they stopped (an exception, killed for memory, terminated); the messages they were decoding failed their streams with UNAVAILABLE. Past 5 restarts a minute the router stops instead",
    () => this.sources.ingestDecoderRestarts?.() ?? 0,
  );
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
  private readonly unauthenticated = new Counter({
    name: "kvrouter_unauthenticated_total",
    help: "State-changing calls refused for a missing or wrong bearer token, by method",
    labelNames: ["method"] as const,
    registers: [this.registry],
  });
  readonly connectionsRefused = new Counter({
    name: "kvrouter_connections_refused_total",
    help: "Connections closed as they arrived because their port already held --max-connections-per-port, by port (grpc, metrics, http, epp)",
    labelNames: ["port"] as const,
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

  // Scheduling layer: the admission queue, predict-on-route, session affinity.
  readonly queueDepth = new Gauge({
    collect: gaugeFrom(() => this.sources.queueDepth),
    name: "kvrouter_queue_depth",
    help: "FindBestWorker calls waiting in the router's queue (--router-queue-threshold)",
    registers: [this.registry],
  });
  readonly queueWait = new Histogram({
    name: "kvrouter_queue_wait_seconds",
    help: "Time queued calls waited, by how they left: routed, cancelled (client gone or deadline passed), timed_out (--router-max-queue-wait-secs), failed",
    labelNames: ["outcome"] as const,
    buckets: [0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly queueRefused = new Counter({
    name: "kvrouter_queue_refused_total",
    help: "FindBestWorker calls answered RESOURCE_EXHAUSTED: busy (every candidate past a busy threshold) or queue_full",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly predictions = new Counter({
    name: "kvrouter_predicted_routes_total",
    help: "Predict-on-route predictions at their TTL: confirmed (the worker's events stored the blocks) or wrong",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly sessionAffinity = new Counter({
    name: "kvrouter_session_affinity_total",
    help: "Requests with a session_id: new (no live binding), kept (stayed within the slack), broken (moved)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });

  /** The per-worker gauges, filled from one ListWorkers snapshot per scrape. */
  // Registered first of the four, so it is collected first and fills the others too.
  readonly workerCachedBlocks = this.workerGauge("cached_blocks", "KV blocks the index holds for this worker", () => this.collectWorkers());
  readonly workerActiveRequests = this.workerGauge("active_requests", "Routed requests not yet freed on this worker");
  readonly workerPrefillTokens = this.workerGauge("prefill_tokens", "Prompt tokens of this worker's requests still in prefill");
  readonly workerDecodeBlocks = this.workerGauge("decode_blocks", "Distinct KV blocks of this worker's active requests (decode load)");
  readonly workersOmitted = new Gauge({
    name: "kvrouter_worker_series_omitted",
    help: "Workers left out of the kvrouter_worker_* series because there are more than --metrics-max-workers",
    registers: [this.registry],
  });

  constructor(
    withProcessMetrics = true,
    private readonly maxWorkerSeries = DEFAULT_METRICS_MAX_WORKERS,
  ) {
    if (withProcessMetrics) collectDefaultMetrics({ register: this.registry });
    // Every label value known up front is exported from the first scrape, at 0, so rate() works at once.
    for (const outcome of EVENT_OUTCOMES) this.events.inc({ outcome }, 0);
    for (const kind of ["unknown_removal", "event_id_gap"]) this.eventAnomalies.inc({ kind }, 0);
    for (const path of ["shard", "shard_split", "main", "shard_refused"]) this.ingestMessages.inc({ path }, 0);
    for (const method of METHODS) {
      this.invalidRequests.inc({ method }, 0);
      this.unauthenticated.inc({ method }, 0);
    }
    for (const reason of ["busy", "queue_full"]) this.queueRefused.inc({ reason }, 0);
    for (const port of ["grpc", "metrics", "http", "epp"]) this.connectionsRefused.inc({ port }, 0);
    for (const outcome of ["confirmed", "wrong"]) this.predictions.inc({ outcome }, 0);
    for (const outcome of ["new", "kept", "broken"]) this.sessionAffinity.inc({ outcome }, 0);
  }

  /**
   * Counts a call refused for its token. `method` is the handler's name
   * (findBestWorker); the label is the wire name (FindBestWorker), as in every
   * method label here, whichever transport refused it.
   */
  tokenRefused(method: string): void {
    this.unauthenticated.inc({ method: WIRE_NAMES.get(method) ?? method });
  }

  private workerGauge(name: string, help: string, collect?: () => void): Gauge<"worker_id" | "dp_rank"> {
    return new Gauge({
      name: `kvrouter_worker_${name}`,
      help: `${help} (at most --metrics-max-workers workers)`,
      labelNames: ["worker_id", "dp_rank"] as const,
      registers: [this.registry],
      collect,
    });
  }

  private collectWorkers(): void {
    const gauges = [this.workerCachedBlocks, this.workerActiveRequests, this.workerPrefillTokens, this.workerDecodeBlocks];
    for (const g of gauges) g.reset(); // workers that left take their series with them
    const workers = this.sources.workers?.() ?? [];
    workers.sort((a, b) => (a.worker.workerId === b.worker.workerId ? a.worker.dpRank - b.worker.dpRank : a.worker.workerId < b.worker.workerId ? -1 : 1));
    const shown = workers.slice(0, this.maxWorkerSeries);
    this.workersOmitted.set(workers.length - shown.length);
    for (const w of shown) {
      const labels = { worker_id: w.worker.workerId.toString(), dp_rank: String(w.worker.dpRank) };
      this.workerCachedBlocks.set(labels, w.cachedBlocks);
      this.workerActiveRequests.set(labels, w.load.requests);
      this.workerPrefillTokens.set(labels, w.load.prefillTokens);
      this.workerDecodeBlocks.set(labels, w.load.decodeBlocks);
    }
  }
}

function gaugeFrom(source: () => (() => number) | undefined) {
  return function (this: Gauge) {
    const read = source();
    if (read === undefined) return;
    try {
      this.set(read());
    } catch {
      // A source that cannot answer now (an index shard thread down) keeps its last value: /metrics still serves the rest.
    }
  };
}
