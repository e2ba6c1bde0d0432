// Index snapshots in the NATS object store. A snapshot is the index dumped as
// stored events (chains merged into multi-block events) plus the stream
// sequence it covers; a new replica loads it with restore=true, then replays
// the stream from the next sequence. One replica at a time writes one (a lock
// key in a KV bucket whose entries age out, so a crashed holder cannot wedge
// it), then trims the stream behind the previous snapshot and the slowest
// consumer.
import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { Kvm } from "@nats-io/kv";
import { type ObjectStore, Objm } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import type { IndexEvent } from "../../protocols/events.js";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import { whileClusterForms } from "../../nats/connection.js";
import type { NatsNames } from "../../protocols/natsNames.js";
import { decodeMsgpack, decodeRouterEvent, encodeMsgpack, toRouterEvent } from "../../protocols/routerEventCodec.js";
import type { StreamIngest } from "./jetstreamIngest.js";

const FORMAT = "kv-router-snapshot/1";
const LOCK_KEY = "snapshot";
/** A lock older than this (a crashed writer) ages out of the bucket. */
const LOCK_TTL_MS = 60_000;

export interface Snapshot {
  seq: number;
  events: IndexEvent[];
}

/** Merges the dump's single-block events back into chains (much smaller snapshots). */
export function chainDump(events: Iterable<IndexEvent>): IndexEvent[] {
  const out: IndexEvent[] = [];
  let last: (IndexEvent & { kind: "stored" }) | undefined;
  for (const e of events) {
    if (
      e.kind === "stored" &&
      last !== undefined &&
      last.workerId === e.workerId &&
      last.dpRank === e.dpRank &&
      last.tier === e.tier &&
      e.parentHash === last.blocks[last.blocks.length - 1].externalHash
    ) {
      last.blocks.push(...e.blocks);
      continue;
    }
    const copy = e.kind === "stored" ? { ...e, blocks: [...e.blocks] } : e;
    out.push(copy);
    last = copy.kind === "stored" ? copy : undefined;
  }
  return out;
}

export class SnapshotStore {
  private store: ObjectStore | undefined;
  private lockKv: KV | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly names: NatsNames,
    private readonly replicas: number,
  ) {}

  private async objects(): Promise<ObjectStore> {
    this.store ??= await whileClusterForms(`object store ${this.names.snapshotBucket}`, () =>
      new Objm(this.nc).create(this.names.snapshotBucket, { replicas: this.replicas }),
    );
    return this.store;
  }

  private async locks(): Promise<KV> {
    this.lockKv ??= await whileClusterForms(`bucket ${this.names.lockBucket}`, () =>
      new Kvm(this.nc).create(this.names.lockBucket, { history: 1, ttl: LOCK_TTL_MS, replicas: this.replicas }),
    );
    return this.lockKv;
  }

  /** Stream sequence the newest snapshot covers (0: none). */
  async seq(): Promise<number> {
    const info = await (await this.objects()).info(this.names.snapshotObject);
    if (info === null || info.deleted) return 0;
    return Number(info.metadata?.seq ?? 0);
  }

  async load(): Promise<Snapshot | undefined> {
    const bytes = await (await this.objects()).getBlob(this.names.snapshotObject);
    if (bytes === null) return undefined;
    const doc = decodeMsgpack(bytes) as { format?: string; seq?: unknown; events?: unknown[] };
    if (doc?.format !== FORMAT || !Array.isArray(doc.events)) {
      log.warn("ignoring a snapshot in an unknown format", { bucket: this.names.snapshotBucket });
      return undefined;
    }
    const events: IndexEvent[] = [];
    let malformed = 0;
    for (const v of doc.events) {
      try {
        const d = decodeRouterEvent(v, true);
        if (d.kind === "event") events.push(d.event);
      } catch (err) {
        // A damaged entry costs that entry, not the replica's start.
        if (malformed++ === 0) log.error("snapshot entry skipped", { bucket: this.names.snapshotBucket, error: String(err) });
      }
    }
    if (malformed > 0) log.error("snapshot had undecodable entries", { skipped: malformed });
    return { seq: Number(doc.seq), events };
  }

  async save(seq: number, events: IndexEvent[]): Promise<number> {
    const bytes = encodeMsgpack({ format: FORMAT, seq, created_ms: Date.now(), events: events.map(toRouterEvent) });
    await (await this.objects()).putBlob({ name: this.names.snapshotObject, metadata: { seq: String(seq) } }, bytes);
    return bytes.length;
  }

  /** --router-reset-states: forget every snapshot. */
  async reset(): Promise<void> {
    await (await this.objects()).delete(this.names.snapshotObject).catch(() => undefined);
  }

  async tryLock(owner: string): Promise<boolean> {
    try {
      await (await this.locks()).create(LOCK_KEY, owner);
      return true;
    } catch {
      return false;
    }
  }

  async unlock(): Promise<void> {
    await (await this.locks()).delete(LOCK_KEY).catch(() => undefined);
  }
}

/** Periodically checks the backlog and, when it is over the threshold, snapshots and trims. */
export class Snapshotter {
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  snapshotsWritten = 0;

  constructor(
    private readonly store: SnapshotStore,
    private readonly jsm: JetStreamManager,
    private readonly names: NatsNames,
    private readonly ingest: StreamIngest,
    private readonly router: KvRouter,
    private readonly threshold: number,
    private readonly owner: string,
    private readonly checkMs: number,
  ) {}

  start(): void {
    const jitter = Math.floor(Math.random() * (this.checkMs / 5));
    this.timer = setInterval(() => void this.check(), this.checkMs + jitter);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    while (this.busy) await new Promise((r) => setTimeout(r, 20));
  }

  /** One check; returns true when this replica wrote a snapshot. */
  async check(): Promise<boolean> {
    if (this.busy) return false;
    this.busy = true;
    try {
      const last = (await this.jsm.streams.info(this.names.stream)).state.last_seq;
      const covered = await this.store.seq();
      if (last - covered <= this.threshold) return false;
      // Only a replica that has applied past the threshold itself can help.
      if (this.ingest.lastAppliedSeq - covered <= this.threshold) return false;
      if (!(await this.store.tryLock(this.owner))) return false;
      try {
        // Re-read under the lock: another replica may just have written one.
        const coveredNow = await this.store.seq();
        if (this.ingest.lastAppliedSeq - coveredNow <= this.threshold) return false;
        await this.snapshot();
        return true;
      } finally {
        await this.store.unlock();
      }
    } catch (err) {
      log.warn("snapshot check failed", { error: String(err) });
      return false;
    } finally {
      this.busy = false;
    }
  }

  private async snapshot(): Promise<void> {
    const started = Date.now();
    // Synchronous dump: the index and lastAppliedSeq are consistent here.
    const seq = this.ingest.lastAppliedSeq;
    const events = chainDump(this.router.dump());
    const previous = await this.store.seq();
    const bytes = await this.store.save(seq, events);
    // Trim only behind the *previous* snapshot: a replica that loaded it a
    // moment ago and is still creating its consumer finds its tail intact.
    const purgeBelow = Math.min(previous, await this.minAckFloor()) + 1;
    if (purgeBelow > 1) await this.jsm.streams.purge(this.names.stream, { seq: purgeBelow });
    this.snapshotsWritten++;
    log.info("index snapshot written; stream trimmed", {
      seq,
      events: events.length,
      bytes,
      purged_below: purgeBelow,
      ms: Date.now() - started,
    });
  }

  /** The lowest sequence every consumer has acknowledged (consumers with no ack yet are ignored, as Dynamo does). */
  private async minAckFloor(): Promise<number> {
    let min = Number.MAX_SAFE_INTEGER;
    for await (const ci of this.jsm.consumers.list(this.names.stream)) {
      const floor = ci.ack_floor?.stream_seq ?? 0;
      if (floor > 0) min = Math.min(min, floor);
    }
    return min;
  }
}
