// Dynamo's etcd discovery store, watched: read every key under the prefixes
// at one revision (a resync), then watch from the next revision. etcd3's
// watcher resumes by itself after a short disconnect; anything worse (etcd
// gone, the revision compacted away) tears the watch down and the loop
// retries with backoff, resyncing in full when etcd answers again. In the
// meantime the router keeps serving with what it knew.
import { Etcd3, type IKeyValue, type Watcher } from "etcd3";
import { log } from "../util/log.js";
import { type StoreHandler, type StoreHealth, type WatchedStore, backoffMs } from "./discovery.js";

export interface EtcdStoreOptions {
  /** Client URLs (Dynamo's ETCD_ENDPOINTS, comma-separated). */
  endpoints: string[];
  /** Per-call deadline, so a hung etcd is noticed. */
  callTimeoutMs?: number;
}

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
    this.client = new Etcd3({
      hosts: this.opts.endpoints,
      defaultCallOptions: () => ({ deadline: Date.now() + (this.opts.callTimeoutMs ?? 5_000) }),
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
      const entries = new Map<string, Uint8Array>();
      let revision = 0n;
      for (const prefix of prefixes) {
        const res = await this.client!.getAll().prefix(prefix).exec();
        revision = revision > BigInt(res.header.revision) ? revision : BigInt(res.header.revision);
        for (const kv of res.kvs) entries.set(kv.key.toString("utf8"), new Uint8Array(kv.value));
      }
      // Watch from just after the newest snapshot revision: nothing between is missed.
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
