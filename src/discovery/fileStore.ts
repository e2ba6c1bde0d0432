// Dynamo's file discovery store (DYN_FILE_KV), watched. Dynamo's FileStore
// (lib/runtime/src/storage/kv/file.rs) keeps a bucket such as `v1/instances`
// as the directory `$DYN_FILE_KV/v1/instances`, one file per key, named by
// the key relative to the bucket percent-encoded (every byte but [A-Za-z0-9]
// as %XX: `dynamo%2Fbackend%2Fgenerate%2F17216e63492ef21f`). Writers publish
// through `.tmp_*` files and a link or rename, and keep their files alive by
// touching them; a file not touched for the TTL is expired (Dynamo's processes
// delete it). So here a key exists while its file exists and is fresh.
//
// An idle fleet must cost next to nothing, even with 50,000 files each
// touched every few seconds, so the periodic scan does no per-file work
// unless it has a reason:
// - a directory is listed again only when its mtime or inode changed (a file
//   was created, deleted or renamed in it) or changed too recently to trust;
// - a file is stat'ed when first listed, when a watch event names it, when
//   its TTL could have run out (mtime + TTL), and at least about once a minute
//   (watch events can be lost; a stale file may be touched again);
// - a file is read only when it is a new version: Dynamo publishes every value
//   as a new file, so a different inode, size or birth time. A newer mtime
//   alone is a keep-alive touch (Dynamo's own watcher ignores those too), and
//   a file over MAX_RECORD_BYTES is never read.
// fs.watch makes creations, deletions and renames prompt; its "change" events
// (one per touch) start nothing.
import { type FSWatcher, type Stats, stat as statCallback, watch } from "node:fs";
import { open, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { log } from "../util/log.js";
import { type StoreHandler, type StoreHealth, type WatchedStore, backoffMs } from "./discovery.js";

/** Dynamo's FileStore TEMP_FILE_PREFIX: half-written files the watcher ignores. */
const TEMP_FILE_PREFIX = ".tmp_";
/**
 * The largest record read: 1.5 MiB, etcd's default request limit, so any value
 * Dynamo could also keep in etcd (its default store) fits. Dynamo's records
 * (instances, event channels, model cards naming their files by path) are a
 * few KB; a bigger file is skipped, counted and logged, and never read.
 */
export const MAX_RECORD_BYTES = 1.5 * 1024 * 1024;
/** Even a file whose TTL is far off is stat'ed about this often (with jitter). */
const VERIFY_MS = 60_000;
/** A directory whose mtime is this recent may change again within its timestamp's granularity: list it again. */
const RACY_MS = 2_000;
/** Watch events start a scan at most this often. */
const EVENT_SCAN_DELAY_MS = 250;
/** stat() calls in flight at once. */
const STAT_CONCURRENCY = 16;

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

/** One record file under a watched prefix, as last seen. */
interface RecordFile {
  key: string;
  path: string;
  /** The version read (see the header): inode, size and birth time. */
  ino: number;
  size: number;
  birthtimeMs: number;
  /** Its last good bytes (kept while a newer version is over the bound), or undefined if none. */
  value: Uint8Array | undefined;
  /** What the handler holds for this key. */
  held: Uint8Array | undefined;
  /** When to stat it next (0: at the next scan). */
  checkAt: number;
}

interface Bucket {
  name: string;
  dir: string;
  /** The directory's mtime and inode when it was last listed. */
  mtimeMs: number;
  ino: number;
  files: Map<string, RecordFile>;
  /** Names listed that are not ours (temp files, other prefixes), so they are decoded once. */
  ignored: Set<string>;
  /** Names that watch events reported created, deleted or renamed since the last scan. */
  hinted: Set<string>;
}

interface Change {
  key: string;
  value: Uint8Array | undefined;
}

export class FileStore implements WatchedStore {
  readonly backend = "file";
  readonly health: StoreHealth = { up: false, reconnects: 0 };
  /** What the scans cost, for /metrics (kvrouter_discovery_file_ops_total). */
  readonly ops = { scan: 0, list: 0, stat: 0, read: 0 };
  private buckets: Bucket[] = [];
  private readonly watchers = new Map<string, FSWatcher>();
  private prefixes: readonly string[] = [];
  private handler: StoreHandler | undefined;
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private rescanWanted = false;
  private failures = 0;
  private stopped = false;
  private synced = false;

  constructor(private readonly opts: FileStoreOptions) {}

  async start(prefixes: readonly string[], handler: StoreHandler): Promise<void> {
    this.prefixes = prefixes;
    this.handler = handler;
    // Bucket directories holding the prefixes: `v1/instances/ns/c/ep/` lives in `$root/v1/instances`.
    const names = new Set(prefixes.map((p) => p.split("/").slice(0, 2).join("/")));
    this.buckets = [...names].map((name) => ({ name, dir: join(this.opts.root, name), mtimeMs: -1, ino: -1, files: new Map(), ignored: new Set(), hinted: new Set() }));
    await this.scan();
    this.arm(this.period());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.soon);
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

  /** A scan shortly (watch events come in bursts: a temp file, a link, an unlink). */
  private scanSoon(): void {
    if (this.soon || this.stopped) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      void this.scan();
    }, EVENT_SCAN_DELAY_MS);
    this.soon.unref();
  }

  /** One scan at a time; asking during a scan runs one more soon after it. */
  private scan(): Promise<void> {
    if (this.scanning) {
      this.rescanWanted = true;
      return this.scanning;
    }
    this.scanning = this.scanOnce().finally(() => {
      this.scanning = undefined;
      if (this.rescanWanted) {
        this.rescanWanted = false;
        this.scanSoon();
      }
    });
    return this.scanning;
  }

  private async scanOnce(): Promise<void> {
    this.ops.scan++;
    const now = Date.now();
    const full = !this.synced; // the first scan, or the first after an outage: check every file
    const changes: Change[] = [];
    try {
      await stat(this.opts.root); // the root itself gone (unmounted, deleted): an outage, not "no workers"
      for (const b of this.buckets) await this.scanBucket(b, now, full, changes);
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
    this.report(full, changes);
  }

  private async scanBucket(b: Bucket, now: number, full: boolean, changes: Change[]): Promise<void> {
    const st = await statIfExists(b.dir);
    if (st?.ino !== b.ino) this.unwatch(b); // removed or replaced: a watch on the old directory sees nothing more
    if (!st) {
      // No worker created this bucket yet, or it was removed: none of its keys exist.
      for (const f of b.files.values()) settle(f, undefined, changes);
      b.files.clear();
      [b.mtimeMs, b.ino] = [-1, -1];
      return;
    }
    this.watchDir(b);
    const hinted = b.hinted;
    b.hinted = new Set();
    const listed = full || st.mtimeMs !== b.mtimeMs || st.ino !== b.ino || now - st.mtimeMs < RACY_MS;
    if (listed) {
      await this.list(b, changes);
      [b.mtimeMs, b.ino] = [st.mtimeMs, st.ino]; // as stat'ed before the listing: a later change lists again
    }
    // Without a watcher, a file renamed over another is only seen by a stat: check all when the directory changed.
    const unwatched = listed && !this.watchers.has(b.dir);
    const due = [...b.files].filter(([name, f]) => full || unwatched || f.checkAt <= now || hinted.has(name)).map(([, f]) => f);
    await eachLimited(due, STAT_CONCURRENCY, (f) => this.check(f, now, changes));
  }

  /** Lists the bucket's directory: new names get a record (checked at once), vanished ones are deleted. */
  private async list(b: Bucket, changes: Change[]): Promise<void> {
    this.ops.list++;
    const files = new Map<string, RecordFile>();
    const ignored = new Set<string>();
    for (const name of await readdir(b.dir)) {
      const known = b.files.get(name);
      if (known) files.set(name, known);
      else if (b.ignored.has(name) || name.startsWith(TEMP_FILE_PREFIX)) ignored.add(name);
      else {
        const key = `${b.name}/${keyOfFileName(name)}`;
        if (this.prefixes.some((p) => key.startsWith(p))) files.set(name, newRecordFile(key, join(b.dir, name)));
        else ignored.add(name);
      }
    }
    for (const [name, f] of b.files) if (!files.has(name)) settle(f, undefined, changes);
    b.files = files;
    b.ignored = ignored;
  }

  /** Stats one file: gone or stale, it holds no key; a new version is read. */
  private async check(f: RecordFile, now: number, changes: Change[]): Promise<void> {
    this.ops.stat++;
    const st = await statIfExists(f.path);
    const fresh = st !== undefined && st.isFile() && now - st.mtimeMs <= this.opts.ttlMs;
    f.checkAt = nextCheck(fresh ? st.mtimeMs : undefined, now, this.opts.ttlMs);
    if (fresh && !sameVersion(f, st)) await this.read(f, st);
    settle(f, fresh ? f.value : undefined, changes);
  }

  private async read(f: RecordFile, st: Stats): Promise<void> {
    if (st.size > MAX_RECORD_BYTES) return this.oversized(f, st);
    this.ops.read++;
    const got = await readRecord(f.path);
    if (got === "changed") f.checkAt = 0; // replaced or written while we read: again at the next scan
    else if (got.bytes === undefined) this.oversized(f, got.version);
    else [f.value, f.ino, f.size, f.birthtimeMs] = [got.bytes, got.version.ino, got.version.size, got.version.birthtimeMs];
  }

  /** Remembers the version, so it is neither read nor reported again; the key keeps its last good value, if any. */
  private oversized(f: RecordFile, version: Stats): void {
    [f.ino, f.size, f.birthtimeMs] = [version.ino, version.size, version.birthtimeMs];
    this.handler!.skip(f.key, `record of ${version.size} bytes is over the ${MAX_RECORD_BYTES}-byte bound; not read`);
  }

  private report(full: boolean, changes: Change[]): void {
    const h = this.handler!;
    if (full) {
      if (this.health.lastError !== undefined) {
        this.health.reconnects++;
        log.info("file discovery store readable again; resynced", { root: this.opts.root });
      }
      const entries = new Map<string, Uint8Array>();
      for (const b of this.buckets) for (const f of b.files.values()) if (f.held) entries.set(f.key, f.held);
      h.resync(entries);
    } else {
      for (const c of changes) {
        if (c.value) h.put(c.key, c.value);
        else h.delete(c.key);
      }
    }
    this.synced = true;
    this.failures = 0;
    this.health.up = true;
    this.health.lastError = undefined;
  }

  private unwatch(b: Bucket): void {
    this.watchers.get(b.dir)?.close();
    this.watchers.delete(b.dir);
  }

  private watchDir(b: Bucket): void {
    if (this.watchers.has(b.dir) || this.stopped) return;
    try {
      const w = watch(b.dir, { persistent: false }, (event, name) => {
        // "change" is a touch (or a write in place, which Dynamo never does): the timed checks cover it.
        if (event !== "rename") return;
        if (name && !name.startsWith(TEMP_FILE_PREFIX)) b.hinted.add(name);
        this.scanSoon();
      });
      w.on("error", () => {
        w.close();
        this.watchers.delete(b.dir); // re-armed by the next successful scan
      });
      this.watchers.set(b.dir, w);
    } catch {
      // The periodic rescan covers a directory we cannot watch.
    }
  }
}

function newRecordFile(key: string, path: string): RecordFile {
  return { key, path, ino: -1, size: -1, birthtimeMs: -1, value: undefined, held: undefined, checkAt: 0 };
}

function sameVersion(f: RecordFile, st: Stats): boolean {
  return f.ino === st.ino && f.size === st.size && f.birthtimeMs === st.birthtimeMs;
}

/** Records a change when what the key should hold differs from what the handler holds. */
function settle(f: RecordFile, want: Uint8Array | undefined, changes: Change[]): void {
  if (want === f.held) return;
  const same = want !== undefined && f.held !== undefined && Buffer.from(want.buffer, want.byteOffset, want.byteLength).equals(f.held);
  f.held = want;
  if (!same) changes.push({ key: f.key, value: want });
}

/**
 * A fresh file is checked when its TTL could run out, and at least about every
 * VERIFY_MS; a stale or missing one every TTL (it may be touched again), at
 * most VERIFY_MS. Jittered, so the checks of files first seen together spread out.
 */
function nextCheck(freshMtimeMs: number | undefined, now: number, ttlMs: number): number {
  const jitter = 0.75 + Math.random() / 4;
  if (freshMtimeMs === undefined) return now + Math.min(ttlMs, VERIFY_MS) * jitter;
  return Math.min(freshMtimeMs + ttlMs + 1, now + VERIFY_MS * jitter);
}

/** fs.stat through a callback (a third of the promise API's CPU per call), undefined when the path is gone. */
function statIfExists(path: string): Promise<Stats | undefined> {
  return new Promise((resolve, reject) =>
    statCallback(path, (err, st) => {
      if (!err) resolve(st);
      else if (err.code === "ENOENT" || err.code === "ENOTDIR") resolve(undefined);
      else reject(err);
    }),
  );
}

/**
 * Reads a record through one descriptor: the version is that descriptor's
 * (so it matches the bytes), and never more than MAX_RECORD_BYTES is read
 * (bytes undefined: over the bound). "changed": gone, or a size other than
 * its stat said (a write in place under way).
 */
async function readRecord(path: string): Promise<{ version: Stats; bytes: Uint8Array | undefined } | "changed"> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch {
    return "changed";
  }
  try {
    const version = await fh.stat();
    if (version.size > MAX_RECORD_BYTES) return { version, bytes: undefined };
    const buf = Buffer.alloc(version.size + 1); // one byte more, to see a file that grew
    let n = 0;
    for (let r; n < buf.length && (r = await fh.read(buf, n, buf.length - n, n)).bytesRead > 0; ) n += r.bytesRead;
    return n === version.size ? { version, bytes: new Uint8Array(buf.buffer, buf.byteOffset, n) } : "changed";
  } finally {
    await fh.close();
  }
}

/** Runs fn over items with at most `limit` in flight. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
