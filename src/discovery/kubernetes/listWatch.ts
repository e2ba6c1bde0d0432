// List-and-watch of one collection (pods by label selector), as the
// Kubernetes API reference describes it ("API Concepts": efficient detection
// of changes, watch bookmarks, retrieving large results in chunks):
// 1. list: GET <collection>?labelSelector=S&limit=N, then &continue=TOKEN while
//    metadata.continue is set; the last page's metadata.resourceVersion is the
//    list's version;
// 2. watch from it: GET <collection>?watch=1&resourceVersion=RV&
//    allowWatchBookmarks=true&labelSelector=S&timeoutSeconds=T, a stream of
//    JSON lines {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object"};
//    every event's object.metadata.resourceVersion is the point to resume from
//    (BOOKMARK events carry only that);
// 3. the server ends a watch after timeoutSeconds: watch again from the last
//    version; a broken connection: the same, after a backoff;
// 4. 410 Gone (as the HTTP status, or an ERROR event whose Status has code
//    410; also an expired `continue` token) means that version is no longer
//    kept: list again, and reconcile.
// Hostile or broken input is bounded: a watch line or list page larger than
// its bound is not buffered (counted, and the router relists), at most
// maxItems objects are kept, each reduced to a summary as soon as it is read.
import type { IncomingMessage } from "node:http";
import { log } from "../../util/log.js";
import { backoffMs } from "../discovery.js";
import type { KubeClient } from "./kubeClient.js";
import { resourceVersionOf } from "./pods.js";

export interface ListWatchOptions<T> {
  /** The collection, e.g. /api/v1/namespaces/NS/pods. */
  path: string;
  labelSelector: string;
  /** Largest watch event line (bytes); a list page may hold pageSize of them. */
  maxObjectBytes: number;
  /** Most objects kept; more are skipped and counted. */
  maxItems: number;
  /** Objects per list page (the `limit` parameter). */
  pageSize?: number;
  /** timeoutSeconds asked of each watch; the server closes it then (default 300, jittered). */
  watchTimeoutSeconds?: number;
  /** The key of an object (namespace/name), or undefined when it has none (skipped). */
  keyOf(o: unknown): string | undefined;
  /** What is kept of an object; may throw (a counted skip). */
  summarize(o: unknown): T;
}

export interface ListWatchHandler<T> {
  /** Every object after a (re)list, by key: what is not in it is gone. */
  resync(items: ReadonlyMap<string, T>): void;
  upsert(key: string, item: T): void;
  remove(key: string): void;
}

/** An answer of the API server other than 200, with its Status (if it sent one). */
export class KubeApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** Counters for /metrics (kvrouter_discovery_kubernetes_*) and tests. */
export interface ListWatchStats {
  lists: number;
  relists: number;
  watches: number;
  gone: number;
  bookmarks: number;
  events: number;
  failures: number;
  /** Objects or lines skipped, by reason. */
  skipped: Record<"oversized" | "malformed" | "over_max_items" | "unreadable", number>;
}

const DEFAULT_PAGE_SIZE = 100;
/** A Status body read from an error answer: small; the rest is discarded. */
const MAX_STATUS_BYTES = 64 * 1024;
/** A watch that sent nothing for its timeout plus this long is dead (a half-open connection): watch again. */
const IDLE_GRACE_MS = 60_000;
/** A watch that ends sooner than this is followed by a pause of this long. */
const MIN_WATCH_MS = 1_000;
/** Answers that retrying will not fix (credentials, RBAC, a missing namespace or resource): start-up fails on them. */
const CONFIGURATION_ERRORS = new Set([400, 401, 403, 404]);

export class ListWatch<T> {
  readonly stats: ListWatchStats = {
    lists: 0,
    relists: 0,
    watches: 0,
    gone: 0,
    bookmarks: 0,
    events: 0,
    failures: 0,
    skipped: { oversized: 0, malformed: 0, over_max_items: 0, unreadable: 0 },
  };
  readonly health = { up: false, reconnects: 0, lastError: undefined as string | undefined };
  private resourceVersion: string | undefined;
  private readonly keys = new Set<string>();
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private failures = 0;
  /** 410s since a watch last delivered something: past the first, relists back off (a server answering only 410). */
  private goneStreak = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: ListWatchOptions<T>,
    private readonly handler: ListWatchHandler<T>,
  ) {}

  /**
   * Lists once (errors such as 401, 403 or 404 are thrown: the configuration
   * is wrong), then watches in the background until stop().
   */
  async start(): Promise<void> {
    try {
      await this.list();
    } catch (err) {
      if (err instanceof KubeApiError && CONFIGURATION_ERRORS.has(err.code)) throw err;
      this.fail(err); // the server may come back: keep trying in the background
    }
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.wake?.();
    await this.running;
  }

  /** Objects held now. */
  get size(): number {
    return this.keys.size;
  }

  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.resourceVersion === undefined) {
          this.stats.relists++;
          await this.list();
        }
        const began = Date.now();
        await this.watch();
        this.goneStreak = 0;
        // A server that ends every watch at once must not make this a busy loop.
        if (Date.now() - began < MIN_WATCH_MS) await this.sleep(MIN_WATCH_MS);
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof KubeApiError && err.code === 410) {
          // The version we hold is gone from the server's history: relist at once.
          this.stats.gone++;
          this.resourceVersion = undefined;
          log.info("Kubernetes watch expired (410 Gone); listing again", { path: this.opts.path, reason: err.message });
          if (++this.goneStreak > 1) await this.sleep(backoffMs(this.goneStreak - 2, 200, 10_000));
          continue;
        }
        this.fail(err);
        await this.sleep(backoffMs(this.failures, 200, 10_000));
      }
    }
  }

  private fail(err: unknown): void {
    this.failures++;
    this.stats.failures++;
    const message = err instanceof Error ? err.message : String(err);
    if (this.health.up || this.health.lastError !== message) {
      log.warn("Kubernetes list/watch failed; serving with the pods last seen, retrying", { path: this.opts.path, error: message });
    }
    this.health.up = false;
    this.health.lastError = message;
  }

  private ok(): void {
    if (this.health.lastError !== undefined) {
      this.health.reconnects++;
      log.info("Kubernetes list/watch working again", { path: this.opts.path });
    }
    this.failures = 0;
    this.health.up = true;
    this.health.lastError = undefined;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private query(params: Record<string, string>): string {
    const q = new URLSearchParams(params);
    if (this.opts.labelSelector !== "") q.set("labelSelector", this.opts.labelSelector);
    return `${this.opts.path}?${q}`;
  }

  /** Lists every page and hands the handler the whole set (a continue token that expired restarts the list). */
  private async list(): Promise<void> {
    this.stats.lists++;
    const items = new Map<string, T>();
    const pageSize = this.opts.pageSize ?? DEFAULT_PAGE_SIZE;
    let token: string | undefined;
    let version: string | undefined;
    do {
      const params: Record<string, string> = { limit: String(pageSize) };
      if (token !== undefined) params.continue = token;
      const res = await this.client.get(this.query(params), this.abort.signal);
      await throwUnlessOk(res);
      const page = await readBounded(res, pageSize * this.opts.maxObjectBytes);
      if (page === undefined) {
        this.stats.skipped.oversized++;
        throw new Error(`a list page of ${this.opts.path} is over ${pageSize * this.opts.maxObjectBytes} bytes (${pageSize} objects of --k8s-max-object-bytes)`);
      }
      const doc = parseObject(page);
      if (doc === undefined || !Array.isArray(doc.items)) throw new Error(`the list of ${this.opts.path} is not a JSON list object`);
      for (const item of doc.items) this.collect(items, item);
      const md = (doc.metadata ?? {}) as Record<string, unknown>;
      token = typeof md.continue === "string" && md.continue !== "" ? md.continue : undefined;
      version = resourceVersionOf(doc);
    } while (token !== undefined);
    if (version === undefined) throw new Error(`the list of ${this.opts.path} has no metadata.resourceVersion`);
    this.resourceVersion = version;
    this.keys.clear();
    for (const k of items.keys()) this.keys.add(k);
    this.handler.resync(items);
    this.ok();
  }

  private collect(items: Map<string, T>, o: unknown): void {
    const key = this.opts.keyOf(o);
    if (key === undefined) {
      this.stats.skipped.malformed++;
      return;
    }
    if (!items.has(key) && items.size >= this.opts.maxItems) {
      this.stats.skipped.over_max_items++;
      return;
    }
    try {
      items.set(key, this.opts.summarize(o));
    } catch {
      this.stats.skipped.unreadable++;
    }
  }

  /** One watch request, until the server ends it (resolves) or it fails (throws). */
  private async watch(): Promise<void> {
    this.stats.watches++;
    const timeout = this.opts.watchTimeoutSeconds ?? Math.round(300 + Math.random() * 60);
    const res = await this.client.get(
      this.query({ watch: "1", resourceVersion: this.resourceVersion!, allowWatchBookmarks: "true", timeoutSeconds: String(timeout) }),
      this.abort.signal,
    );
    await throwUnlessOk(res);
    this.ok();
    await new Promise<void>((resolve, reject) => {
      const lines = new LineReader(this.opts.maxObjectBytes);
      let idle: NodeJS.Timeout | undefined;
      const arm = () => {
        clearTimeout(idle);
        idle = setTimeout(() => res.destroy(new Error(`watch sent nothing for ${timeout}s + ${IDLE_GRACE_MS / 1000}s`)), timeout * 1000 + IDLE_GRACE_MS);
        idle.unref();
      };
      const finish = (err?: Error) => {
        clearTimeout(idle);
        res.removeAllListeners("data");
        if (!res.destroyed) res.destroy();
        if (err) reject(err);
        else resolve();
      };
      arm();
      res.on("data", (chunk: Buffer) => {
        arm();
        try {
          for (const line of lines.push(chunk)) this.event(line);
        } catch (err) {
          finish(err as Error);
        }
      });
      res.once("end", () => finish());
      res.once("error", (err) => finish(this.stopped ? undefined : err));
      res.once("close", () => finish(res.readableEnded || this.stopped ? undefined : new Error("watch connection closed")));
    });
  }

  /** One watch event line. */
  private event(line: Buffer | "oversized"): void {
    if (line === "oversized") {
      // Not buffered, so its object is unknown: only a fresh list can tell what changed.
      this.stats.skipped.oversized++;
      this.resourceVersion = undefined;
      throw new Error(`a watch event of ${this.opts.path} is over --k8s-max-object-bytes (${this.opts.maxObjectBytes}); listing again`);
    }
    const ev = parseObject(line);
    const type = ev?.type;
    if (ev === undefined || typeof type !== "string") {
      this.stats.skipped.malformed++;
      return;
    }
    this.stats.events++;
    const o = ev.object;
    if (type === "ERROR") {
      const status = (o ?? {}) as Record<string, unknown>;
      const code = typeof status.code === "number" ? status.code : 0;
      throw new KubeApiError(code, String(status.reason ?? ""), `watch ERROR event: ${String(status.message ?? JSON.stringify(status)).slice(0, 500)}`);
    }
    this.goneStreak = 0;
    const version = resourceVersionOf(o);
    if (type === "BOOKMARK") {
      this.stats.bookmarks++;
    } else if (type === "ADDED" || type === "MODIFIED" || type === "DELETED") {
      const key = this.opts.keyOf(o);
      if (key === undefined) this.stats.skipped.malformed++;
      else if (type === "DELETED") {
        if (this.keys.delete(key)) this.handler.remove(key);
      } else this.upsert(key, o);
    } else {
      this.stats.skipped.malformed++;
    }
    if (version !== undefined) this.resourceVersion = version;
  }

  private upsert(key: string, o: unknown): void {
    if (!this.keys.has(key) && this.keys.size >= this.opts.maxItems) {
      this.stats.skipped.over_max_items++;
      return;
    }
    let item: T;
    try {
      item = this.opts.summarize(o);
    } catch {
      this.stats.skipped.unreadable++;
      return;
    }
    this.keys.add(key);
    this.handler.upsert(key, item);
  }
}

/** Splits a byte stream into lines of at most `max` bytes; a longer line is reported as "oversized", never buffered whole. */
export class LineReader {
  private parts: Buffer[] = [];
  private size = 0;
  private overflowing = false;

  constructor(private readonly max: number) {}

  push(chunk: Buffer): (Buffer | "oversized")[] {
    const out: (Buffer | "oversized")[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
      this.take(chunk.subarray(start, nl));
      if (this.overflowing) out.push("oversized");
      else if (this.size > 0) out.push(this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts));
      this.parts = [];
      this.size = 0;
      this.overflowing = false;
      start = nl + 1;
    }
    this.take(chunk.subarray(start));
    return out;
  }

  private take(piece: Buffer): void {
    if (this.overflowing || piece.length === 0) return;
    if (this.size + piece.length > this.max) {
      this.overflowing = true;
      this.parts = [];
      this.size = 0;
      return;
    }
    this.parts.push(Buffer.from(piece)); // a copy: the chunk's memory is not pinned by a short piece
    this.size += piece.length;
  }
}

function parseObject(bytes: Buffer): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(bytes.toString("utf8"));
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Reads the whole body, or undefined (and the connection dropped) past `max` bytes. */
async function readBounded(res: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      res.destroy();
      return undefined;
    }
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

/** Throws a KubeApiError (with the Status's reason and message) for any answer but 200. */
async function throwUnlessOk(res: IncomingMessage): Promise<void> {
  const code = res.statusCode ?? 0;
  if (code === 200) return;
  const body = await readBounded(res, MAX_STATUS_BYTES).catch(() => undefined);
  const status = body ? parseObject(body) : undefined;
  const reason = typeof status?.reason === "string" ? status.reason : "";
  const message = typeof status?.message === "string" ? status.message.slice(0, 500) : res.statusMessage ?? "";
  throw new KubeApiError(code, reason, `HTTP ${code}${reason ? ` ${reason}` : ""}: ${message}`);
}
