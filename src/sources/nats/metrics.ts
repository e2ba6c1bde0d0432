// NATS-mode counters on the router's /metrics. The parts keep plain counters
// (stats objects, handy in tests); these prom-client metrics catch up with
// them whenever Prometheus scrapes.
import { Gauge, type Registry } from "prom-client";
import { mirroredCounter, mirroredTotal } from "../../metrics/mirrored.js";
import type { SkipReason } from "../../protocols/routerEventCodec.js";
import type { SkipCounter } from "../skipCounter.js";
import type { CorePlaneStats } from "./corePlane.js";
import { FPM_OUTCOMES, type FpmOutcome } from "../fpmFeed.js";

/** What NATS mode exposes to its metrics (NatsEventSource; an interface so neither imports the other). */
export interface NatsStatsView {
  ingest?: {
    stats: { messages: number; malformedMessages: number; refused: number; gapFilled: number; duplicates: number };
    skips: SkipCounter;
    lastAppliedSeq: number;
  };
  readonly eventPlaneStats: CorePlaneStats;
  readonly eventPlaneSkips: SkipCounter;
  readonly fpmPlane: { count(outcome: FpmOutcome): number };
  sync?: { stats: { published: number; applied: number; malformed: number; joined: number; dropped: number } };
  snapshotter?: { snapshotsWritten: number };
  restored: { seq: number };
  discovery?: { malformed: number };
}

export function registerNatsMetrics(registry: Registry, src: NatsStatsView): void {
  // Each message is counted once, under one outcome; the sum is every message read.
  mirroredCounter(registry, "kvrouter_nats_messages_total", "NATS KV event messages by path and outcome (each counted once)", "outcome", {
    stream_applied: () => (src.ingest ? src.ingest.stats.messages - src.ingest.stats.malformedMessages - src.ingest.stats.refused : 0),
    stream_malformed: () => src.ingest?.stats.malformedMessages ?? 0,
    stream_refused: () => src.ingest?.stats.refused ?? 0,
    stream_redelivery_skipped: () => src.ingest?.stats.duplicates ?? 0,
    event_plane_applied: () => src.eventPlaneStats.messages,
    event_plane_malformed: () => src.eventPlaneStats.malformed,
    event_plane_refused: () => src.eventPlaneStats.refused,
  });
  mirroredCounter(
    registry,
    "kvrouter_nats_fpm_messages_total",
    "Dynamo forward-pass metrics messages (engine batch reports) on the NATS event plane, by outcome: applied, or skipped as malformed, oversized, unknown_version or unknown_worker",
    "outcome",
    Object.fromEntries(FPM_OUTCOMES.map((o) => [o, () => src.fpmPlane.count(o)])),
  );
  mirroredTotal(
    registry,
    "kvrouter_nats_stream_gap_filled_total",
    "Stream messages fetched one by one to fill a delivery gap (also counted in kvrouter_nats_messages_total)",
    () => src.ingest?.stats.gapFilled ?? 0,
  );
  const reasons: SkipReason[] = ["unknown_storage_tier", "unknown_residency_domain", "cache_owner_residency"];
  const skipped: Record<string, () => number> = {};
  for (const reason of reasons) {
    skipped[`stream_${reason}`] = () => src.ingest?.skips.count(reason) ?? 0;
    skipped[`event_plane_${reason}`] = () => src.eventPlaneSkips.count(reason);
  }
  mirroredCounter(registry, "kvrouter_nats_events_skipped_total", "Well-formed RouterEvents left out, by path and reason", "reason", skipped);
  mirroredCounter(registry, "kvrouter_nats_replica_sync_total", "Replica-sync messages by direction", "direction", {
    published: () => src.sync?.stats.published ?? 0,
    applied: () => src.sync?.stats.applied ?? 0,
    malformed: () => src.sync?.stats.malformed ?? 0,
    joined: () => src.sync?.stats.joined ?? 0,
    dropped: () => src.sync?.stats.dropped ?? 0,
  });
  mirroredCounter(registry, "kvrouter_nats_snapshots_total", "Index snapshots written to / restored from the NATS object store", "op", {
    written: () => src.snapshotter?.snapshotsWritten ?? 0,
    restored: () => (src.restored.seq > 0 ? 1 : 0),
  });
  new Gauge({
    name: "kvrouter_nats_stream_applied_seq",
    help: "Stream sequence of the last KV event message this replica applied",
    registers: [registry],
    collect() {
      this.set(src.ingest?.lastAppliedSeq ?? 0);
    },
  });
  mirroredTotal(
    registry,
    "kvrouter_nats_discovery_malformed_total",
    "Malformed worker registrations seen in the discovery bucket",
    () => src.discovery?.malformed ?? 0,
  );
}
