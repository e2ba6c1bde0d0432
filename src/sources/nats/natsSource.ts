// NATS mode (--nats-url): one EventSource that wires a router into a NATS
// deployment: snapshot restore + JetStream event ingest, the core-NATS
// MessagePack event plane, worker discovery, replica sync and snapshots.
import { hostname } from "node:os";
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type NatsConnectOptions, connectNats } from "../../nats/connection.js";
import { DiscoveryWatcher, openDiscoveryBucket } from "../../discovery/natsKv.js";
import { type NatsNames, natsNames, safeName } from "../../protocols/natsNames.js";
import { ReplicaSync } from "./replicaSync.js";
import { SnapshotStore, Snapshotter } from "./snapshots.js";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import type { EventSource, EventSourceContext } from "../../router/eventSource.js";
import { StreamIngest, ensureStream } from "./jetstreamIngest.js";
import { type CorePlaneStats, NatsCorePlane } from "./corePlane.js";
import { NatsFpmPlane } from "./fpmPlane.js";
import { registerNatsMetrics } from "./metrics.js";
import type { SkipCounter } from "../skipCounter.js";

export interface NatsModeOptions {
  connect: NatsConnectOptions;
  /** namespace.component.endpoint */
  endpoint: string;
  /** This replica's id: names its durable consumer and tags its sync messages. */
  routerId?: string;
  replicaSync: boolean;
  /** Unsnapshotted stream messages that trigger a snapshot; 0 turns snapshots off. */
  snapshotThreshold: number;
  resetStates: boolean;
  /** Replicas of the stream and buckets this router creates (3 on a 3-node cluster). */
  streamReplicas: number;
  /** Also read the core-NATS MessagePack event plane (not durable): KV events and the engines' forward-pass metrics. */
  eventPlane: boolean;
  /** Watch the discovery bucket. */
  discovery: boolean;
  snapshotCheckMs?: number;
}

/** Stable across restarts on a fixed port (so a restart reuses its consumer); unique per process on port 0. */
export function defaultRouterId(grpcPort: number): string {
  return safeName(`kv-router-${hostname()}-${grpcPort === 0 ? `pid${process.pid}` : grpcPort}`);
}

export class NatsEventSource implements EventSource {
  readonly name = "nats";
  readonly names: NatsNames;
  readonly routerId: string;
  nc: NatsConnection | undefined;
  jsm: JetStreamManager | undefined;
  ingest: StreamIngest | undefined;
  snapshots: SnapshotStore | undefined;
  snapshotter: Snapshotter | undefined;
  sync: ReplicaSync | undefined;
  discovery: DiscoveryWatcher | undefined;
  /** Events restored from the snapshot at start, and how long the restore took. */
  restored = { events: 0, seq: 0, ms: 0 };
  private readonly corePlane: NatsCorePlane;
  /** Dynamo's forward-pass metrics (engine batch reports), read with the event plane. */
  readonly fpmPlane: NatsFpmPlane;

  constructor(private readonly opts: NatsModeOptions) {
    this.names = natsNames(opts.endpoint);
    this.routerId = safeName(opts.routerId ?? `kv-router-${hostname()}-${process.pid}`);
    this.corePlane = new NatsCorePlane([this.names.endpointEventPlaneSubject, this.names.eventPlaneSubject]);
    this.fpmPlane = new NatsFpmPlane([this.names.endpointFpmSubject, this.names.fpmSubject]);
  }

  get eventPlaneStats(): CorePlaneStats {
    return this.corePlane.stats;
  }

  get eventPlaneSkips(): SkipCounter {
    return this.corePlane.skips;
  }

  async start(router: KvRouter, context?: EventSourceContext): Promise<void> {
    const o = this.opts;
    if (context) registerNatsMetrics(context.registry, this);
    const nc = (this.nc = await connectNats({ ...o.connect, name: o.connect.name ?? this.routerId }));
    const jsm = (this.jsm = await jetstreamManager(nc));
    const js = jetstream(nc);
    await ensureStream(jsm, this.names, o.streamReplicas);
    this.snapshots = new SnapshotStore(nc, this.names, o.streamReplicas);

    if (o.resetStates) {
      // Purge, not delete: deleting the stream would drop every replica's consumer.
      await jsm.streams.purge(this.names.stream);
      await this.snapshots.reset();
      log.info("--router-reset-states: stream purged and snapshot deleted", { stream: this.names.stream });
    }

    if (o.discovery) {
      this.discovery = new DiscoveryWatcher(await openDiscoveryBucket(nc, this.names, o.streamReplicas));
      await this.discovery.start(router);
    }

    let fromSeq = 1;
    if (!o.resetStates) {
      const started = Date.now();
      const snap = await this.snapshots.load();
      if (snap) {
        router.applyEvents(snap.events, true);
        fromSeq = snap.seq + 1;
        this.restored = { events: snap.events.length, seq: snap.seq, ms: Date.now() - started };
        log.info("index restored from snapshot", { seq: snap.seq, events: snap.events.length, ms: this.restored.ms });
      }
    }
    this.ingest = new StreamIngest(js, jsm, this.names, this.routerId);
    await this.ingest.start(router, fromSeq);

    if (o.snapshotThreshold > 0) {
      this.snapshotter = new Snapshotter(
        this.snapshots,
        jsm,
        this.names,
        this.ingest,
        router,
        o.snapshotThreshold,
        this.routerId,
        o.snapshotCheckMs ?? 1000,
      );
      this.snapshotter.start();
    }
    if (o.replicaSync) {
      this.sync = new ReplicaSync(nc, this.names, this.routerId);
      await this.sync.start(router);
    }
    if (o.eventPlane) {
      this.corePlane.start(nc, router);
      this.fpmPlane.start(nc, router);
      await nc.flush(); // the server knows our interest before we report started
    }
    log.info("NATS mode on", {
      router_id: this.routerId,
      stream: this.names.stream,
      event_plane: o.eventPlane ? this.corePlane.subjects.join(", ") : "off",
      forward_pass_metrics: o.eventPlane ? this.fpmPlane.subjects.join(", ") : "off",
      discovery_bucket: o.discovery ? this.names.discoveryBucket : "off",
      replica_sync: o.replicaSync ? this.names.activeSequencesSubject : "off",
      snapshot_threshold: o.snapshotThreshold,
    });
  }

  async stop(): Promise<void> {
    await this.snapshotter?.stop();
    await this.sync?.stop();
    await this.discovery?.stop();
    await this.corePlane.stop();
    await this.fpmPlane.stop();
    // A gracefully stopped replica deletes its consumer so it holds back no trimming.
    await this.ingest?.stop(true);
    await this.nc?.drain().catch(() => this.nc?.close());
  }
}
