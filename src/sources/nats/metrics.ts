// NATS-mode counters on the router's /metrics. The parts keep plain counters
// (stats objects, handy in tests); these prom-client metrics catch up with
// them whenever Prometheus scrapes.
import { Counter, Gauge, type Registry } from "prom-client";
import type { CorePlaneStats } from "./corePlane.js";

/** What NATS mode exposes to its metrics (NatsEventSource; an interface so neither imports the other). */
export interface NatsStatsView {
  ingest?: { stats: { messages: number; malformed: number; otherTier: number; gapFilled: number; duplicates: number }; lastAppliedSeq: number };
  readonly eventPlaneStats: CorePlaneStats;
  sync?: { stats: { published: number; applied: number; malformed: number; joined: number } };
  snapshotter?: { snapshotsWritten: number };
  restored: { seq: number };
  discovery?: { malformed: number };
}

/** A counter that, on scrape, adds whatever a plain number grew by since the last scrape. */
function mirrored(
  registry: Registry,
  name: string,
  help: string,
  label: string,
  read: Record<string, () => number>,
): void {
  const last = new Map<string, number>();
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      for (const [value, get] of Object.entries(read)) {
        const now = get();
        const delta = now - (last.get(value) ?? 0);
        if (delta > 0) this.inc({ [label]: value }, delta);
        last.set(value, now);
      }
    },
  });
}

export function registerNatsMetrics(registry: Registry, src: NatsStatsView): void {
  mirrored(registry, "kvrouter_nats_messages_total", "NATS KV event messages by path and outcome", "outcome", {
    stream_applied: () => src.ingest?.stats.messages ?? 0,
    stream_malformed: () => src.ingest?.stats.malformed ?? 0,
    stream_other_tier: () => src.ingest?.stats.otherTier ?? 0,
    stream_gap_filled: () => src.ingest?.stats.gapFilled ?? 0,
    stream_redelivery_skipped: () => src.ingest?.stats.duplicates ?? 0,
    event_plane_applied: () => src.eventPlaneStats.applied,
    event_plane_malformed: () => src.eventPlaneStats.malformed,
  });
  mirrored(registry, "kvrouter_nats_replica_sync_total", "Replica-sync messages by direction", "direction", {
    published: () => src.sync?.stats.published ?? 0,
    applied: () => src.sync?.stats.applied ?? 0,
    malformed: () => src.sync?.stats.malformed ?? 0,
    joined: () => src.sync?.stats.joined ?? 0,
  });
  mirrored(registry, "kvrouter_nats_snapshots_total", "Index snapshots written to / restored from the NATS object store", "op", {
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
  new Gauge({
    name: "kvrouter_nats_discovery_malformed",
    help: "Malformed worker registrations seen in the discovery bucket",
    registers: [registry],
    collect() {
      this.set(src.discovery?.malformed ?? 0);
    },
  });
}
