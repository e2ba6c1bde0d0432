// Dynamo's file discovery store (DYN_FILE_KV), watched. Dynamo's FileStore
// (lib/runtime/src/storage/kv/file.rs) keeps a bucket such as `v1/instances`
// as the directory `$DYN_FILE_KV/v1/instances`, one file per key, named by
// the key relative to the bucket percent-encoded (every byte but [A-Za-z0-9]
// as %XX: `dynamo%2Fbackend%2Fgenerate%2F17216e63492ef21f`). Writers publish
// through `.tmp_*` files and renames, and keep their files alive by touching
// them; a file not touched for the TTL is expired (Dynamo's processes delete
// it). So here a key exists while its file exists and is fresh.
//
// fs.watch gives prompt changes; a periodic rescan makes it robust (events
// can be lost or coalesced, and expiry makes no event at all).
import { type FSWatcher, watch } from "node:fs";
import { readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { log } from "../util/log.js";
import { type StoreHandler, type StoreHealth, type WatchedStore, backoffMs } from "./discovery.js";

/** Dynamo's FileStore TEMP_FILE_PREFIX: half-written files the watcher ignores. */
const TEMP_FILE_PREFIX = ".tmp_";

export interface FileStoreOptions {
  /** DYN_FILE_KV; Dynamo's default is `$TMPDIR/dynamo_store_kv`. */
  root: string;
  /** A key whose file was not touched for this long is gone (Dynamo's default TTL: 10 s). */
  ttlMs: number;
  /** Rescan period; defaults to a third of the TTL, between 100 ms and 2 s. */
  rescanMs?: number;
}

/** Dynamo's Key::url_safe (percent_encode with NON_ALPHANUMERIC) and its inverse. */
export function fileNameOfKey(relativeKey: string): string {
  let out = "";
  for (const byte of new TextEncoder().encode(relativeKey)) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

export function keyOfFileName(name: string): string {
  try {
    return decodeURIComponent(name);
  } catch {
    return name; // Dynamo decodes lossily too; such a key matches no prefix we watch
  }
}

interface Seen {
  mtimeMs: number;
  size: number;
  value: Uint8Array;
}

export class FileStore implements WatchedStore {
  readonly backend = "file";
  readonly health: StoreHealth = { up: false, reconnects: 0 };
  private readonly seen = new Map<string, Seen>();
  private readonly watchers = new Map<string, FSWatcher>();
  private prefixes: readonly string[] = [];
  private handler: StoreHandler | undefined;
  private timer: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private rescanWanted = false;
  private failures = 0;
  private stopped = false;
  private synced = false;

  constructor(private readonly opts: FileStoreOptions) {}

  async start(prefixes: readonly string[], handler: StoreHandler): Promise<void> {
    this.prefixes = prefixes;
    this.handler = handler;
    await this.scan();
    this.arm(this.period());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    await this.scanning;
  }

  private period(): number {
    return this.opts.rescanMs ?? Math.min(2_000, Math.max(100, Math.floor(this.opts.ttlMs / 3)));
  }

  private arm(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.scan().then(() => this.arm(this.health.up ? this.period() : backoffMs(this.failures))), ms);
    this.timer.unref();
  }

  /** Bucket directories holding the prefixes: `v1/instances/ns/c/ep/` lives in `$root/v1/instances`. */
  private buckets(): string[] {
    return [...new Set(this.prefixes.map((p) => p.split("/").slice(0, 2).join("/")))];
  }

  /** Scans (coalescing calls that arrive while a scan runs) and reports what changed. */
  private scan(): Promise<void> {
    if (this.scanning) {
      this.rescanWanted = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.rescanWanted = false;
        await this.scanOnce();
      } while (this.rescanWanted && !this.stopped);
    })().finally(() => (this.scanning = undefined));
    return this.scanning;
  }

  private async scanOnce(): Promise<void> {
    const now = Date.now();
    const current = new Map<string, Seen>();
    try {
      await stat(this.opts.root); // the root itself gone (unmounted, deleted): an outage, not "no workers"
      for (const bucket of this.buckets()) {
        const dir = join(this.opts.root, bucket);
        let names: string[];
        try {
          names = await readdir(dir);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENOENT") continue; // no worker created this bucket yet
          throw err;
        }
        this.watchDir(dir);
        for (const name of names) {
          if (name.startsWith(TEMP_FILE_PREFIX)) continue;
          const key = `${bucket}/${keyOfFileName(name)}`;
          if (!this.prefixes.some((p) => key.startsWith(p))) continue;
          const path = join(dir, name);
          let st;
          try {
            st = await stat(path);
          } catch {
            continue; // deleted between readdir and stat
          }
          if (!st.isFile() || now - st.mtimeMs > this.opts.ttlMs) continue; // expired: its writer stopped touching it
          const old = this.seen.get(key);
          if (old && old.size === st.size && old.mtimeMs === st.mtimeMs) {
            current.set(key, old);
            continue;
          }
          try {
            current.set(key, { mtimeMs: st.mtimeMs, size: st.size, value: new Uint8Array(await readFile(path)) });
          } catch {
            continue;
          }
        }
      }
    } catch (err) {
      this.failures++;
      if (this.health.up || !this.health.lastError) {
        log.warn("file discovery store unreadable; serving with the workers last seen, retrying", { root: this.opts.root, error: String(err) });
      }
      this.health.up = false;
      this.health.lastError = String(err);
      this.synced = false; // resync in full when it is back
      return;
    }
    this.report(current);
  }

  private report(current: Map<string, Seen>): void {
    const h = this.handler!;
    if (!this.synced) {
      if (this.health.lastError !== undefined) {
        this.health.reconnects++;
        log.info("file discovery store readable again; resynced", { root: this.opts.root });
      }
      this.seen.clear();
      for (const [k, v] of current) this.seen.set(k, v);
      h.resync(new Map([...current].map(([k, v]) => [k, v.value])));
    } else {
      for (const key of [...this.seen.keys()]) {
        if (!current.has(key)) {
          this.seen.delete(key);
          h.delete(key);
        }
      }
      for (const [key, v] of current) {
        const old = this.seen.get(key);
        this.seen.set(key, v);
        if (old !== v && (!old || !sameBytes(old.value, v.value))) h.put(key, v.value);
      }
    }
    this.synced = true;
    this.failures = 0;
    this.health.up = true;
    this.health.lastError = undefined;
  }

  private watchDir(dir: string): void {
    if (this.watchers.has(dir) || this.stopped) return;
    try {
      const w = watch(dir, { persistent: false }, () => void this.scan());
      w.on("error", () => {
        w.close();
        this.watchers.delete(dir); // re-armed by the next successful scan
      });
      this.watchers.set(dir, w);
    } catch {
      // The periodic rescan covers a directory we cannot watch.
    }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
