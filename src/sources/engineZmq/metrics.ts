// Counters of the ZeroMQ event feed, registered on the router's registry so
// they appear on its /metrics endpoint.
import { Counter, Gauge, type Registry } from "prom-client";
import { SKIP_REASONS } from "../../decoding/engine/convert.js";

export class ZmqMetrics {
  readonly frames: Counter<"outcome">;
  readonly events: Counter<"type" | "outcome">;
  readonly gaps: Counter<"outcome">;
  readonly restarts: Counter;
  readonly stale: Gauge<"worker_id" | "dp_rank">;
  readonly subscribers: Gauge;
  readonly workersFileReloads: Counter<"outcome">;
  readonly loadScrapes: Counter<"outcome">;
  readonly decoded: Counter<"path">;

  constructor(registry?: Registry) {
    const registers = registry ? [registry] : [];
    this.frames = new Counter({
      name: "kvrouter_zmq_frames_total",
      help: "ZeroMQ messages from engines by outcome: applied, replayed, duplicate, malformed (framing), undecodable (payload)",
      labelNames: ["outcome"] as const,
      registers,
    });
    this.events = new Counter({
      name: "kvrouter_zmq_events_total",
      help: "Engine KV events by type and outcome: converted, or why they were not given to the index",
      labelNames: ["type", "outcome"] as const,
      registers,
    });
    this.gaps = new Counter({
      name: "kvrouter_zmq_gaps_total",
      help: "Sequence gaps in an engine's feed: replayed (recovered through the replay socket) or unrecoverable (worker marked stale)",
      labelNames: ["outcome"] as const,
      registers,
    });
    this.restarts = new Counter({
      name: "kvrouter_zmq_publisher_restarts_total",
      help: "Engine publishers seen restarting (sequence back to 0); their blocks were dropped",
      registers,
    });
    this.stale = new Gauge({
      name: "kvrouter_worker_stale",
      help: "1 while the index may be missing blocks of this worker (events lost and not replayed), else 0",
      labelNames: ["worker_id", "dp_rank"] as const,
      registers,
    });
    this.subscribers = new Gauge({
      name: "kvrouter_zmq_subscribers",
      help: "Engine endpoints the router subscribes to",
      registers,
    });
    this.workersFileReloads = new Counter({
      name: "kvrouter_zmq_workers_file_reloads_total",
      help: "Loads of --workers-file by outcome: ok, or invalid (the previous worker set is kept)",
      labelNames: ["outcome"] as const,
      registers,
    });
    this.loadScrapes = new Counter({
      name: "kvrouter_engine_load_scrapes_total",
      help: "Reads of engines' /metrics for the load cost term, by outcome: ok, failed (the term is dropped until the next ok)",
      labelNames: ["outcome"] as const,
      registers,
    });
    this.decoded = new Counter({
      name: "kvrouter_zmq_decoded_total",
      help: "Engine payloads by where they were decoded: shard (on the index shard thread that owns the worker), main, or shard_refused (handed back by the shard and decoded on the main thread)",
      labelNames: ["path"] as const,
      registers,
    });
    // Every outcome is exported from the first scrape, at 0, so rate() works at once.
    for (const outcome of ["applied", "replayed", "duplicate", "malformed", "undecodable"]) this.frames.inc({ outcome }, 0);
    for (const type of ["BlockStored", "BlockRemoved", "AllBlocksCleared"]) {
      for (const outcome of ["converted", "bad_event", ...SKIP_REASONS]) this.events.inc({ type, outcome }, 0);
    }
    for (const outcome of ["replayed", "unrecoverable"]) this.gaps.inc({ outcome }, 0);
    for (const outcome of ["ok", "invalid"]) this.workersFileReloads.inc({ outcome }, 0);
    for (const outcome of ["ok", "failed"]) this.loadScrapes.inc({ outcome }, 0);
    for (const path of ["shard", "main", "shard_refused"]) this.decoded.inc({ path }, 0);
  }
}
