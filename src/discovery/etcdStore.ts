// Dynamo's etcd discovery store, watched: read every key under the prefixes
// at one revision (a resync), then watch from the next revision. etcd3's
// watcher resumes by itself after a short disconnect; anything worse (etcd
// gone, the revision compacted away) tears the watch down and the loop
// retries with backoff, resyncing in full when etcd answers again. In the
// meantime the router keeps serving with what it knew.
import { Etcd3, type IKeyValue, Range, type Watcher } from "etcd3";
import { log } from "../util/log.js";
import { type StoreHandler, type StoreHealth, type WatchedStore, backoffMs } from "./discovery.js";

export interface EtcdStoreOptions {
  /** Client URLs (Dynamo's ETCD_ENDPOINTS, comma-separated). */
  endpoints: string[];
  /** Per-call deadline of unary calls, so a hung etcd is noticed. */
  callTimeoutMs?: number;
  /**
   * Quiet time after which the client pings etcd (answer due within
   * callTimeoutMs), so a hung etcd is noticed on the watch stream too, which
   * has no deadline. Default 10 s; etcd refuses pings more often than its
   * --grpc-keepalive-min-time (5 s by default).
   */
  keepaliveMs?: number;
}

/** Largest message taken from etcd (grpc-js refuses anything over 4 MiB by default): room for one big model card. */
export const RECEIVE_LIMIT_BYTES = 64 * 1024 * 1024;
/**
 * etcd answers a range in one message, so the snapshot is read in pages. A
 * prefix's first page is small (8 records of up to 8 MiB fit the limit); later
 * pages hold as many records like the largest seen as fit in PAGE_BYTES (8x
 * headroom), at most MAX_PAGE_KEYS: etcd counts the rest of the range for every
 * page, so small pages of many small records (100,000 instances) are slow.
 */
const FIRST_PAGE_KEYS = 8;
const PAGE_BYTES = RECEIVE_LIMIT_BYTES / 8;
const MAX_PAGE_KEYS = 1_000;

export class EtcdStore implements WatchedStore {
  readonly backend = "etcd";
  readonly health: StoreHealth = { up: false, reconnects: 0 };
  private client: Etcd3 | undefined;
  private watchers: Watcher[] = [];
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private attempt = 0;
  private generation = 0;

  constructor(private readonly opts: EtcdStoreOptions) {}

  async start(prefixes: readonly string[], handler: StoreHandler): Promise<void> {
    const callTimeoutMs = this.opts.callTimeoutMs ?? 5_000;
    this.client = new Etcd3({
      hosts: this.opts.endpoints,
      grpcOptions: {
        "grpc.max_receive_message_length": RECEIVE_LIMIT_BYTES,
        "grpc.keepalive_time_ms": this.opts.keepaliveMs ?? 10_000,
        "grpc.keepalive_timeout_ms": callTimeoutMs,
      },
      // Unary calls only: a deadline on the watch stream would end it (and flap discovery_up) every callTimeoutMs.
      defaultCallOptions: (call) => (call.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    });
    await this.connect(prefixes, handler);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    await this.closeWatchers();
    this.client?.close();
  }

  /** One attempt: snapshot + watch. On failure, schedules the next attempt. */
  private async connect(prefixes: readonly string[], handler: StoreHandler): Promise<void> {
    const gen = ++this.generation;
    try {
      await this.closeWatchers();
      const { entries, revision } = await this.snapshot(prefixes);
      // Watch from just after the snapshot's revision: nothing between is missed.
      for (const prefix of prefixes) {
        const w = await this.client!.watch().prefix(prefix).startRevision(String(revision + 1n)).create();
        this.watchers.push(w);
        w.on("put", (kv: IKeyValue) => handler.put(kv.key.toString("utf8"), new Uint8Array(kv.value)));
        w.on("delete", (kv: IKeyValue) => handler.delete(kv.key.toString("utf8")));
        w.on("disconnected", () => this.down("watch disconnected"));
        w.on("connected", () => {
          if (!this.health.up) this.up();
        });
        w.on("error", (err: Error) => {
          if (gen !== this.generation) return;
          this.down(String(err));
          this.schedule(prefixes, handler); // e.g. compacted: start over with a fresh snapshot
        });
      }
      handler.resync(entries);
      this.up();
    } catch (err) {
      if (gen !== this.generation || this.stopped) return;
      this.down(String(err));
      this.schedule(prefixes, handler);
    }
  }

  /** Every key under the prefixes, read in pages all at the first page's revision (one consistent view). */
  private async snapshot(prefixes: readonly string[]): Promise<{ entries: Map<string, Uint8Array>; revision: bigint }> {
    const entries = new Map<string, Uint8Array>();
    let revision: string | undefined;
    for (const prefix of prefixes) {
      const { end } = Range.prefix(prefix);
      let start = Buffer.from(prefix);
      let [limit, largest] = [FIRST_PAGE_KEYS, 1];
      for (;;) {
        const page = this.client!.getAll().inRange({ start, end }).limit(limit);
        const res = await (revision === undefined ? page : page.revision(revision)).exec();
        revision ??= res.header.revision;
        for (const kv of res.kvs) {
          entries.set(kv.key.toString("utf8"), new Uint8Array(kv.value));
          largest = Math.max(largest, kv.key.length + kv.value.length);
        }
        if (!res.more || res.kvs.length === 0) break;
        start = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]); // the key right after the last
        limit = Math.max(1, Math.min(MAX_PAGE_KEYS, Math.floor(PAGE_BYTES / largest)));
      }
    }
    return { entries, revision: BigInt(revision!) };
  }

  private schedule(prefixes: readonly string[], handler: StoreHandler): void {
    if (this.stopped) return;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => void this.connect(prefixes, handler), backoffMs(this.attempt++));
    this.retry.unref();
  }

  private up(): void {
    if (this.health.lastError !== undefined) {
      this.health.reconnects++;
      log.info("etcd discovery reachable again; resynced", { endpoints: this.opts.endpoints.join(","), reconnects: this.health.reconnects });
    }
    this.health.up = true;
    this.health.lastError = undefined;
    this.attempt = 0;
  }

  private down(error: string): void {
    if (this.health.up || this.health.lastError === undefined) {
      log.warn("etcd discovery unreachable; serving with the workers last seen, retrying", { endpoints: this.opts.endpoints.join(","), error });
    }
    this.health.up = false;
    this.health.lastError = error;
  }

  private async closeWatchers(): Promise<void> {
    const ws = this.watchers;
    this.watchers = [];
    await Promise.all(ws.map((w) => w.cancel().catch(() => undefined)));
  }
}
