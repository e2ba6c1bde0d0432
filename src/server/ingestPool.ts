// IngestKvEvents decoding off the main thread: a pool of threads running
// the hot-path decoder (ingestThread.ts). The main thread only copies each
// message's bytes into a transferable buffer, and applies the flat batches
// that come back; so with spare cores ingest decodes in parallel and a big
// message no longer holds queries up while it is decoded and hashed.
//
// A decoder that throws on a message does not end its thread (the message
// comes back "slow", see ingestThread.ts). A decoder thread that ends anyway
// (killed at its heap limit, process.exit, terminate(), an exception outside
// the decoder) is seen by its exit event: the decodes it held
// fail with IngestDecoderDownError (UNAVAILABLE; they were never applied) and
// the thread is replaced, since decoders keep no state between messages.
// More than `max` restarts within `windowMs` means something keeps killing
// them: the pool then fails every decode and tells onFailed's listeners (the
// router stops, as with a dead index shard; docs/indexer.md).
import type { Worker } from "node:worker_threads";
import type { EventBatch } from "../protocols/eventBatch.js";
import { RouterError } from "../router/errors.js";
import { log } from "../util/log.js";
import { siblingModule, startThread } from "../util/threads.js";

/** A decoded message, or "slow": decode it with protobuf-es (see ingestDecoder.ts). */
export type PoolResult = { batch: EventBatch; restore: boolean } | "slow";

/** A decode that a dead decoder thread took with it, or any decode once the pool failed: UNAVAILABLE to the stream. */
export class IngestDecoderDownError extends RouterError {
  constructor(
    message: string,
    /** The pool gave up: no decoder thread will run again until the router is restarted. */
    readonly fatal: boolean,
  ) {
    super("unavailable", message);
  }
}

export interface IngestPoolOptions {
  /** Restarts allowed within a window; one more fails the pool (default DEFAULT_RESTARTS). */
  restarts?: { max: number; windowMs: number };
  /** Test hook: each decoder thread once it serves, replacements too (a test ends one with terminate()). */
  onThread?: (thread: number, worker: Worker) => void;
  /** Test hook: the threads' decoder throws on every message, as a decoder bug would (ingestThread.ts). */
  testOnlyThrow?: boolean;
}

interface Pending {
  resolve(r: PoolResult): void;
  reject(e: Error): void;
}

/** One decoder thread and the decodes it has not answered yet. */
interface Decoder {
  index: number;
  worker: Worker;
  pending: Map<number, Pending>;
}

/** A decoded batch, or slow (with the error when the decoder threw on it). */
type Reply = { id: number; slow?: true; error?: string; count: number; events: Uint32Array; items: Uint32Array; restore: boolean };

/** Decoder throws logged (each is a bug; the message itself is decoded by protobuf-es); later ones are not. */
const MAX_LOGGED_THROWS = 10;

export class IngestPool {
  /** Five restarts a minute: a rare crash is survived, a thread killed over and over (a poison input, memory) stops the router. */
  static readonly DEFAULT_RESTARTS = { max: 5, windowMs: 60_000 };

  private next = 0;
  private id = 0;
  private throwsLogged = 0;
  private closed = false;
  /** Decoder threads replaced so far. */
  restarts = 0;
  /** When recent restarts happened (ms, performance.now), within the window. */
  private readonly recent: number[] = [];
  /** Set once the pool gave up: every decode fails with it. */
  failure: IngestDecoderDownError | undefined;
  private readonly failedListeners: ((err: IngestDecoderDownError) => void)[] = [];

  private constructor(
    private readonly entry: URL,
    private readonly blockSize: number,
    private readonly decoders: Decoder[],
    private readonly opts: IngestPoolOptions,
  ) {
    for (const d of decoders) this.watch(d);
  }

  static async start(threads: number, blockSize: number, opts: IngestPoolOptions = {}): Promise<IngestPool> {
    const entry = siblingModule(import.meta.url, "ingestThread");
    const workers = Array.from({ length: threads }, (_, i) => spawn(entry, blockSize, i, opts.testOnlyThrow));
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            w.once("message", () => resolve());
            w.once("error", reject);
          }),
      ),
    );
    const pool = new IngestPool(
      entry,
      blockSize,
      workers.map((worker, index) => ({ index, worker, pending: new Map() })),
      opts,
    );
    workers.forEach((w, i) => opts.onThread?.(i, w));
    return pool;
  }

  get threads(): number {
    return this.decoders.length;
  }

  /** Calls `listener` once if the pool gives up (see the header). */
  onFailed(listener: (err: IngestDecoderDownError) => void): void {
    this.failedListeners.push(listener);
  }

  /** Decodes one message's bytes on the next thread (round robin). */
  decode(bytes: Uint8Array): Promise<PoolResult> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    // gRPC's buffers are views of larger pooled ones: copy into a buffer of its own to transfer it.
    const copy = new Uint8Array(bytes);
    const id = this.id++;
    const d = this.decoders[this.next++ % this.decoders.length];
    return new Promise((resolve, reject) => {
      d.pending.set(id, { resolve, reject });
      // A replacement still starting queues the message until it serves.
      d.worker.postMessage({ id, bytes: copy }, [copy.buffer]);
    });
  }

  /** Settles the thread's decodes as they come back, and replaces it when it ends. */
  private watch(d: Decoder): void {
    const { worker } = d;
    let error: unknown;
    worker.on("message", (m: Reply | "ready") => {
      if (typeof m !== "object") return;
      const p = d.pending.get(m.id);
      if (p === undefined) return;
      d.pending.delete(m.id);
      if (m.error !== undefined && this.throwsLogged < MAX_LOGGED_THROWS) {
        this.throwsLogged++;
        log.error("the ingest decoder threw on a message (a bug; the message was decoded by protobuf-es instead)", { thread: d.index, error: m.error });
      }
      p.resolve(m.slow ? "slow" : { batch: { count: m.count, events: m.events, items: m.items }, restore: m.restore });
    });
    // An uncaught exception or ERR_WORKER_OUT_OF_MEMORY; the exit event follows.
    worker.on("error", (err) => (error = err));
    worker.on("exit", (code) => {
      if (this.closed || d.worker !== worker) return;
      this.died(d, error === undefined ? `its thread exited with code ${code}` : `its thread stopped: ${describe(error)}`, error);
    });
    worker.unref();
  }

  /** Fails the decodes the thread took with it, then replaces it, or gives up past the restart bound. */
  private died(d: Decoder, reason: string, error: unknown): void {
    const lost = new IngestDecoderDownError(`ingest decoder thread ${d.index} stopped before it decoded this message (${reason}); nothing of it was applied; send it again`, false);
    for (const p of d.pending.values()) p.reject(lost);
    d.pending.clear();
    const { max, windowMs } = this.opts.restarts ?? IngestPool.DEFAULT_RESTARTS;
    const now = performance.now();
    while (this.recent.length > 0 && now - this.recent[0] > windowMs) this.recent.shift();
    this.recent.push(now);
    const detail = error === undefined ? {} : { error: String((error as Error)?.stack ?? error) };
    if (this.recent.length > max) return this.fail(d, reason, windowMs, detail);
    this.restarts++;
    log.error("ingest decoder thread stopped: the messages it was decoding failed their streams with UNAVAILABLE; restarting it", {
      thread: d.index,
      reason,
      restarts_in_window: this.recent.length,
      ...detail,
    });
    const worker = (d.worker = spawn(this.entry, this.blockSize, d.index, this.opts.testOnlyThrow));
    this.watch(d);
    const onThread = this.opts.onThread;
    if (onThread) worker.once("message", () => onThread(d.index, worker));
  }

  private fail(d: Decoder, reason: string, windowMs: number, detail: object): void {
    const err = (this.failure = new IngestDecoderDownError(
      `ingest decoder threads stopped ${this.recent.length} times within ${Math.round(windowMs / 1000)} s (the last: thread ${d.index}, ${reason}); ` +
        "the router cannot decode IngestKvEvents until it is restarted",
      true,
    ));
    log.error("ingest decoder threads keep stopping: IngestKvEvents fails with UNAVAILABLE from now on, and the router must be restarted", {
      thread: d.index,
      reason,
      ...detail,
    });
    // The live threads' decodes still come back; only new ones are refused.
    for (const listener of this.failedListeners) queueMicrotask(() => listener(err));
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.decoders.map((d) => d.worker.terminate()));
    const closed = new IngestDecoderDownError("the router is stopping", true);
    for (const d of this.decoders) for (const p of d.pending.values()) p.reject(closed);
  }
}

function spawn(entry: URL, blockSize: number, index: number, testOnlyThrow = false): Worker {
  return startThread(entry, { workerData: { blockSize, testOnlyThrow }, name: `kv-ingest-decoder-${index}` });
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const message = String(e?.message ?? err).split("\n", 1)[0];
  return e?.code !== undefined ? `${e.code}: ${message}` : message;
}
