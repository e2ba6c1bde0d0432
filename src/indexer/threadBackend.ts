// Shards on worker threads. Every call is synchronous for the caller: it
// writes the request into the shard's SharedArrayBuffer, wakes the shard with
// Atomics.notify and sleeps in Atomics.wait until the answer is there. A call
// that fans out (apply, find, evict) wakes every shard first and then waits,
// so shards work in parallel. Because each call returns only once the shards
// have answered, a query always sees every event applied before it.
//
// submit() is the ingest path's apply that does not wait: each shard's
// records are written into its queue ring, and the results come back in its
// result ring (read when Atomics.waitAsync says they are there, and whenever
// this thread submits or waits), so this thread decodes the next batch while
// shards apply this one.
// find() reads each shard's node side in shared memory (sharedReader.ts) and
// asks a shard (a find request, served between two records) only when that
// read cannot be made whole. The consistency rule: a query sees every batch
// whose results came back before the query was made; every other call waits
// for the batches queued before it.
//
// A shard thread that dies (an exception escaping its loop, an apply that
// threw and so poisoned it (shardThread.ts), killed for
// memory, terminated) is noticed from its last words (CTL_DOWN), its exit
// event, or, while this thread waits for it and cannot see events, its
// thread's /proc entry vanishing. From then on every call that needs it, and
// every batch queued to it, fails with IndexShardDownError; its memory is no
// longer read; onDown's listeners hear of it once.
import { existsSync } from "node:fs";
import { type MessagePort, MessageChannel, type Worker, receiveMessageOnPort } from "node:worker_threads";
import { log } from "../util/log.js";
import { siblingModule, startThread } from "../util/threads.js";
import { SlotTable } from "./compactCore.js";
import { u64 } from "../protocols/eventBatch.js";
import type { ShardBackend, ShardStats } from "./shardBackend.js";
import { IndexShardDownError } from "./types.js";
import {
  CTL_BELL,
  CTL_DOWN,
  CTL_ERROR,
  CTL_REQ,
  CTL_RES,
  INITIAL_REQ_BYTES,
  INITIAL_RES_BYTES,
  REQ_APPLY,
  REQ_DUMP_SLOT,
  REQ_EVICT,
  REQ_FIND,
  REQ_HEADER,
  REQ_NODES,
  REQ_SEQUENCE,
  REQ_OLDEST,
  REQ_STATS,
  REQ_STOP,
  REQ_SWAP_BUFFERS,
  CTL_SLEEPING,
  CTL_WORDS,
  ENTRY_HEADER,
  ENGINE_ENTRY,
  ENGINE_HEADER,
  ENGINE_PAIR_WORDS,
  RAW_ABORT,
  RAW_COMMIT,
  RAW_ENTRY,
  RAW_HEADER,
  RAW_PART,
  RAW_PART_HEADER,
  RAW_RECORDS,
  RAW_RECORDS_HEADER,
  RAW_SETTLE_HEADER,
  RAW_STREAMS,
  RING_WORDS,
  type ShardReady,
  type ShardThreadData,
} from "./shardProtocol.js";
import { SharedRing } from "./sharedRing.js";
import { SHARED_HEADER_WORDS, type NodeViews, sharedReadsByDefault } from "./sharedNodes.js";
import { SharedNodeReader } from "./sharedReader.js";

interface Shard {
  /** Its place in the list (named in errors). */
  index: number;
  worker: Worker;
  /** The thread's /proc/self/task entry (Linux): gone once the thread ended, whether or not this thread has run its exit event. */
  task: string | undefined;
  /** Its thread stopped serving: every call that needs it throws this. */
  down: IndexShardDownError | undefined;
  /** What the thread said as it died (an exception that escaped its loop), read once it is found down. */
  lastWords: MessagePort;
  port: MessagePort;
  /** Queued batches go out here... */
  queue: SharedRing;
  /** ...and their results come back here (a batch that throws ends the shard: its promise fails with IndexShardDownError). */
  results: SharedRing;
  /** An Atomics.waitAsync on the result ring is pending. */
  armed: boolean;
  ctl: Int32Array;
  req: Uint32Array;
  reqF64: Float64Array;
  res: Int32Array;
  resF64: Float64Array;
  seq: number;
  /** Reads the shard's node side in shared memory (queries need not wake it); absent where reads are not shared. */
  reader: SharedNodeReader | undefined;
  /** Queries answered from shared memory, and by asking the shard. */
  findsRead: number;
  findsAsked: number;
}


export interface ThreadBackendOptions {
  /** Words of each shard's queue and result ring (a test hook: small rings fill and wrap often). */
  ringWords?: number;
  /** Tokens per block: shards then take raw IngestKvEvents messages (submitRaw); 0 or absent: they do not. */
  blockSize?: number;
  /** Sized for a --max-blocks bound (CoreOptions.bounded). */
  bounded?: boolean;
  /** Tokens per block: shards then decode engine feeds' messages themselves (submitEngine); 0 or absent: they do not. */
  feedBlockSize?: number;
  /** Queries read the shards' memory instead of asking them (default: on x86-64; see sharedNodes.ts). */
  sharedReads?: boolean;
  /** Test hook: each shard's thread once it serves (a test ends one with terminate(), as a crash would end it). */
  onShardThread?: (shard: number, thread: Worker) => void;
  /**
   * Test hook: the shard threads throw when they apply this event (of any
   * dp_rank), as a bug in CompactCore would; no flag or request sets it.
   */
  testOnlyThrowOnEvent?: { workerId: bigint; eventId: bigint };
}

export class ThreadBackend implements ShardBackend {
  readonly slots: SlotTable;
  /** The store clock, shared with every shard (stamps order entries for eviction across shards). */
  readonly clock = new BigInt64Array(new SharedArrayBuffer(8));
  /** The raw streams' flags (see RAW_ENTRY) and the free ones. */
  private readonly rawFlags = new Int32Array(new SharedArrayBuffer(RAW_STREAMS * 4));
  private readonly freeRawFlags = Array.from({ length: RAW_STREAMS }, (_, i) => RAW_STREAMS - 1 - i);
  readonly takesRaw: boolean;
  /** Tokens per block of the raw messages shards decode (0: they take none). */
  readonly blockSize: number;
  private readonly list: Shard[] = [];
  private closed = false;
  private nextBatch = 0;
  /** Queued batches awaiting results: id -> its shard and how to settle it. */
  private readonly waiting = new Map<number, { shard: Shard; resolve(out: Int32Array): void; reject(err: Error): void }>();
  private readonly downListeners: ((err: IndexShardDownError) => void)[] = [];
  /**
   * A pending Atomics.waitAsync does not keep the process alive: this timer,
   * referenced only while results are awaited, does.
   */
  private readonly keepAlive = setInterval(() => {}, 1 << 30).unref();

  /** Tokens per block of the engine feeds' messages shards decode (0: they take none). */
  feedBlockSize = 0;

  private constructor(
    readonly shards: number,
    maxSlots: number,
    blockSize: number,
  ) {
    this.takesRaw = blockSize > 0;
    this.blockSize = blockSize;
    this.clock[0] = 1n;
    this.slots = new SlotTable(new SharedArrayBuffer(SlotTable.bytes(maxSlots)), maxSlots);
  }

  /** Starts `shards` threads and waits until each one serves requests. */
  static async start(shards: number, maxSlots: number, initialEntries: number, opts: ThreadBackendOptions = {}): Promise<ThreadBackend> {
    const { ringWords = RING_WORDS, blockSize = 0 } = opts;
    const backend = new ThreadBackend(shards, maxSlots, blockSize);
    backend.feedBlockSize = opts.feedBlockSize ?? 0;
    const sharedReads = opts.sharedReads ?? sharedReadsByDefault();
    const started: Promise<void>[] = [];
    for (let i = 0; i < shards; i++) {
      const { port1, port2 } = new MessageChannel();
      const views = sharedReads ? new MessageChannel() : undefined;
      const nodeHeader = sharedReads ? new SharedArrayBuffer(SHARED_HEADER_WORDS * 4) : undefined;
      const queue = SharedRing.create(ringWords);
      const results = SharedRing.create(ringWords);
      const lastWords = new MessageChannel();
      const ctl = new SharedArrayBuffer(CTL_WORDS * 4);
      const req = new SharedArrayBuffer(INITIAL_REQ_BYTES);
      const res = new SharedArrayBuffer(INITIAL_RES_BYTES);
      const data: ShardThreadData & { port: MessagePort; lastWords: MessagePort } = {
        ctl,
        req,
        res,
        slots: backend.slots.buffer as SharedArrayBuffer,
        maxSlots,
        initialEntries,
        port: port2,
        queue: queue.buffer,
        results: results.buffer,
        lastWords: lastWords.port1,
        bounded: opts.bounded ?? false,
        clock: backend.clock.buffer as SharedArrayBuffer,
        rawFlags: backend.rawFlags.buffer as SharedArrayBuffer,
        blockSize,
        feedBlockSize: opts.feedBlockSize ?? 0,
        nodeHeader,
        views: views?.port2,
        testOnlyThrowOnEvent: opts.testOnlyThrowOnEvent && [...words(opts.testOnlyThrowOnEvent.workerId), ...words(opts.testOnlyThrowOnEvent.eventId)],
      };
      const worker = startThread(siblingModule(import.meta.url, "shardThread"), {
        workerData: data,
        transferList: [port2, lastWords.port1, ...(views ? [views.port2] : [])],
        name: `kv-index-shard-${i}`,
      });
      started.push(
        new Promise((resolve, reject) => {
          const settle = (err?: Error) => {
            worker.off("message", ready).off("error", settle).off("exit", exited);
            if (err === undefined) resolve();
            else reject(err);
          };
          // The thread says so once its modules are loaded and it is about to serve.
          const ready = (m: ShardReady) => {
            backend.list[i].task = m.task;
            settle();
            // From now on its end is a shard down (an error event with no listener would also end this process).
            backend.watch(backend.list[i]);
          };
          const exited = (code: number) => settle(new Error(`index shard ${i}'s thread exited with code ${code} while starting`));
          worker.on("message", ready).on("error", settle).on("exit", exited);
        }),
      );
      let reader: SharedNodeReader | undefined;
      if (views && nodeHeader) {
        const r = (reader = new SharedNodeReader(new Int32Array(nodeHeader), views.port1));
        // New buffers are also taken between tasks, so replaced ones are not kept alive until the next query.
        views.port1.on("message", (m: NodeViews) => r.take(m));
        views.port1.unref();
      }
      lastWords.port2.unref();
      backend.list.push({
        index: i,
        worker,
        task: undefined,
        down: undefined,
        lastWords: lastWords.port2,
        port: port1,
        queue,
        results,
        armed: false,
        ctl: new Int32Array(ctl),
        req: new Uint32Array(req),
        reqF64: new Float64Array(req),
        res: new Int32Array(res),
        resF64: new Float64Array(res),
        seq: 0,
        reader,
        findsRead: 0,
        findsAsked: 0,
      });
    }
    await Promise.all(started);
    // Idle shards must not keep the process alive; close() stops them.
    for (const s of backend.list) s.worker.unref();
    backend.list.forEach((s, i) => opts.onShardThread?.(i, s.worker));
    // The first round trip also proves each shard's loop is running.
    backend.stats();
    return backend;
  }

  apply(batches: readonly ({ words: Uint32Array; length: number; count: number } | undefined)[]): Int32Array[] {
    const outs = batches.map(() => new Int32Array(0));
    this.fanOut(
      this.list.filter((_, i) => batches[i] !== undefined && batches[i].count > 0),
      (s) => {
        const b = batches[s.index]!;
        this.ensureRoom(s, REQ_HEADER + b.length, b.count);
        s.req[1] = b.count;
        s.req.set(b.words.subarray(0, b.length), REQ_HEADER);
        this.send(s, REQ_APPLY);
      },
      (s) => (outs[s.index] = s.res.slice(0, batches[s.index]!.count)),
    );
    return outs;
  }

  /**
   * Sends each shard its request and then collects every answer, so shards
   * work in parallel. Nothing is sent when one of them is known to be down;
   * a shard that fails meanwhile is waited out for the others (an answer
   * left uncollected would be overwritten by the next request), then the
   * first error is thrown.
   */
  private fanOut(shards: readonly Shard[], send: (s: Shard) => void, read: (s: Shard) => void): void {
    for (const s of shards) this.live(s);
    const sent: Shard[] = [];
    let failed: unknown;
    for (const s of shards) {
      try {
        send(s);
        sent.push(s);
      } catch (err) {
        failed = err;
        break;
      }
    }
    for (const s of sent) {
      try {
        this.wait(s);
        if (failed === undefined) read(s);
      } catch (err) {
        failed ??= err;
      }
    }
    if (failed !== undefined) throw failed;
  }

  /**
   * Queues each shard's records and resolves with their results once
   * applied, without waiting here (the ordering it keeps: see the header).
   */
  submit(batches: readonly ({ words: Uint32Array; length: number; count: number } | undefined)[]): Promise<Int32Array[]> {
    if (this.closed) return Promise.reject(new Error("sharded index is closed"));
    this.drainResults();
    // Nothing is queued when a shard it needs is down: the batch changes nothing.
    for (const s of this.list) {
      const b = batches[s.index];
      const down = b !== undefined && b.count > 0 ? this.downOf(s) : undefined;
      if (down !== undefined) return Promise.reject(down);
    }
    // A batch too big for a ring applies synchronously (after everything queued, as every synchronous call).
    if (batches.some((b, i) => b !== undefined && ENTRY_HEADER + b.length > this.list[i].queue.maxEntry)) {
      try {
        return Promise.resolve(this.apply(batches));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return Promise.all(
      this.list.map((s, i) => {
        const b = batches[i];
        if (b === undefined || b.count === 0) return new Int32Array(0);
        return this.enqueue(s, ENTRY_HEADER + b.length, (w, at) => {
          w[at + 2] = b.count;
          w.set(b.words.subarray(0, b.length), at + ENTRY_HEADER);
        });
      }),
    );
  }

  /**
   * Queues a raw IngestKvEvents message for `shard` (see RAW_ENTRY): `pairs`
   * holds (worker lo, worker hi, dp_rank, slot) per pair it names. Resolves
   * with the result entry's words; undefined when the message is too big
   * for the ring or the ring is full (the caller's stream then waits for
   * its outstanding messages, or decodes it): raw submissions never block
   * this thread waiting for a shard.
   */
  submitRaw(shard: number, flag: number, pairs: Uint32Array, bytes: Uint8Array): Promise<Int32Array> | undefined {
    if (!this.takesRaw) return undefined;
    return this.enqueueRaw(shard, RAW_HEADER + pairs.length + Math.ceil(bytes.length / 4), (w, at, q) => {
      w[at + 2] = RAW_ENTRY;
      w[at + ENTRY_HEADER] = flag;
      w[at + ENTRY_HEADER + 1] = bytes.length;
      w[at + ENTRY_HEADER + 2] = pairs.length / 4;
      w.set(pairs, at + RAW_HEADER);
      q.bytes(at + RAW_HEADER + pairs.length, bytes.length).set(bytes);
    });
  }

  /**
   * Queues a raw stream's message already decoded into `records` (the main
   * thread decodes while the shard is behind): refused or applied like a raw
   * entry. Undefined when too big for the ring or the ring is full.
   */
  submitRawRecords(shard: number, flag: number, records: { words: Uint32Array; length: number; count: number }): Promise<Int32Array> | undefined {
    return this.enqueueRaw(shard, RAW_RECORDS_HEADER + records.length, (w, at) => {
      w[at + 2] = RAW_RECORDS;
      w[at + ENTRY_HEADER] = flag;
      w[at + ENTRY_HEADER + 1] = records.count;
      w.set(records.words.subarray(0, records.length), at + RAW_RECORDS_HEADER);
    });
  }

  /**
   * Queues an engine feed's payload for `shard` (see ENGINE_ENTRY): `head`
   * is (engine code, worker lo, worker hi, default dp_rank), `pairs` holds
   * ENGINE_PAIR_WORDS per (worker, dp_rank) it may name. Resolves with the
   * result entry's words; undefined when the shards take no engine feeds,
   * the payload is too big for the ring or the ring is full.
   */
  submitEngine(shard: number, flag: number, head: readonly number[], pairs: Uint32Array, bytes: Uint8Array): Promise<Int32Array> | undefined {
    if (this.feedBlockSize === 0) return undefined;
    return this.enqueueRaw(shard, ENGINE_HEADER + pairs.length + Math.ceil(bytes.length / 4), (w, at, q) => {
      w[at + 2] = ENGINE_ENTRY;
      w[at + ENTRY_HEADER] = flag;
      w[at + ENTRY_HEADER + 1] = bytes.length;
      for (let i = 0; i < 4; i++) w[at + ENTRY_HEADER + 2 + i] = head[i];
      w[at + ENTRY_HEADER + 6] = pairs.length / ENGINE_PAIR_WORDS;
      w.set(pairs, at + ENGINE_HEADER);
      q.bytes(at + ENGINE_HEADER + pairs.length, bytes.length).set(bytes);
    });
  }

  /**
   * Queues each part of a message naming workers of several shards (see
   * RAW_PART) and resolves each with its shard's answer: RAW_PREPARED, its
   * event count and the stamps it will use, or RAW_REFUSED. A part holds its shard's `pairs` and the
   * bytes of `ranges` ((start, end) pairs into `bytes`, in order). All or
   * nothing: undefined when a part is too big for its ring or a ring is full
   * now; throws IndexShardDownError, with nothing queued, when a shard is down.
   */
  submitRawParts(
    flag: number,
    token: number,
    parts: readonly { shard: number; pairs: Uint32Array; ranges: Int32Array; byteLength: number }[],
    bytes: Uint8Array,
  ): Promise<Int32Array>[] | undefined {
    if (!this.takesRaw || this.closed) return undefined;
    for (const p of parts) this.live(this.list[p.shard]);
    this.drainResults();
    const sizes = parts.map((p) => RAW_PART_HEADER + p.pairs.length + Math.ceil(p.byteLength / 4));
    // Reserve in every ring before publishing any: a reservation not published is simply written over later.
    const at: number[] = [];
    for (let k = 0; k < parts.length; k++) {
      const q = this.list[parts[k].shard].queue;
      if (sizes[k] > q.maxEntry) return undefined;
      at.push(q.reserve(sizes[k]));
      if (at[k] < 0) return undefined;
    }
    return parts.map((p, k) =>
      this.publish(this.list[p.shard], at[k], sizes[k], (w, o) => {
        const q = this.list[p.shard].queue;
        w[o + 2] = RAW_PART;
        w[o + ENTRY_HEADER] = flag;
        w[o + ENTRY_HEADER + 1] = token;
        w[o + ENTRY_HEADER + 2] = p.byteLength;
        w[o + ENTRY_HEADER + 3] = p.pairs.length / 4;
        w.set(p.pairs, o + RAW_PART_HEADER);
        const into = q.bytes(o + RAW_PART_HEADER + p.pairs.length, p.byteLength);
        for (let r = 0, b = 0; r < p.ranges.length; r += 2) {
          into.set(bytes.subarray(p.ranges[r], p.ranges[r + 1]), b);
          b += p.ranges[r + 1] - p.ranges[r];
        }
      }),
    );
  }

  /**
   * Commits (applies, with store stamps from `stamp` on) or aborts (drops,
   * `stamp` undefined) the part of message `token` that `shard` prepared for
   * the stream `flag`; resolves with the raw result entry (RAW_APPLIED ...,
   * or RAW_REFUSED for an abort). Waits here for room in the ring, as
   * submit() does: a decision must be queued.
   */
  settleRawPart(shard: number, flag: number, token: number, stamp: number | undefined): Promise<Int32Array> {
    if (this.closed) return Promise.reject(new Error("sharded index is closed"));
    const s = this.list[shard];
    const down = this.downOf(s);
    if (down !== undefined) return Promise.reject(down);
    this.drainResults();
    return this.enqueue(s, RAW_SETTLE_HEADER, (w, at) => {
      w[at + 2] = stamp !== undefined ? RAW_COMMIT : RAW_ABORT;
      w[at + ENTRY_HEADER] = flag;
      w[at + ENTRY_HEADER + 1] = token;
      w[at + ENTRY_HEADER + 2] = (stamp ?? 0) >>> 0;
      w[at + ENTRY_HEADER + 3] = Math.floor((stamp ?? 0) / 4294967296);
    });
  }

  /** A raw stream's entry of `n` words for `shard`, if the ring takes it now (a raw submission never waits here). */
  private enqueueRaw(shard: number, n: number, fill: (w: Uint32Array, at: number, queue: SharedRing) => void): Promise<Int32Array> | undefined {
    const s = this.list[shard];
    if (this.closed || n > s.queue.maxEntry) return undefined;
    const down = this.downOf(s);
    if (down !== undefined) return Promise.reject(down);
    this.drainResults();
    return this.enqueue(s, n, (w, at) => fill(w, at, s.queue), false);
  }

  /** Words queued for a shard and not yet taken by it: how far behind it is. */
  queuedWords(shard: number): number {
    const q = this.list[shard].queue;
    return (q.tail - q.head + q.size) % q.size;
  }

  /** A flag for a client stream's raw messages, or undefined when RAW_STREAMS are in use. */
  takeRawFlag(): number | undefined {
    const f = this.freeRawFlags.pop();
    if (f !== undefined) Atomics.store(this.rawFlags, f, 0);
    return f;
  }

  /** The stream's shards refuse its raw messages from now on, as after a shard's refusal (a split message aborted here). */
  blockRawFlag(flag: number): void {
    Atomics.store(this.rawFlags, flag, 1);
  }

  /** The stream's refused messages are redone: shards take its raw messages again (call with none outstanding). */
  clearRawFlag(flag: number): void {
    Atomics.store(this.rawFlags, flag, 0);
  }

  /** The stream ended (with none outstanding). */
  releaseRawFlag(flag: number): void {
    this.freeRawFlags.push(flag);
  }

  /**
   * Writes an entry of `n` words into a shard's queue (`fill` writes words
   * 2 .. n-1) and resolves with its results. With no room, `wait` says
   * whether to wait here for the shard (blocking this thread) or to give up
   * (undefined).
   */
  private enqueue(s: Shard, n: number, fill: (w: Uint32Array, at: number) => void, wait: false): Promise<Int32Array> | undefined;
  private enqueue(s: Shard, n: number, fill: (w: Uint32Array, at: number) => void, wait?: true): Promise<Int32Array>;
  private enqueue(s: Shard, n: number, fill: (w: Uint32Array, at: number) => void, wait = true): Promise<Int32Array> | undefined {
    let at = s.queue.reserve(n);
    if (at < 0 && !wait) {
      this.drainResults();
      at = s.queue.reserve(n);
      if (at < 0) return undefined;
    }
    const look = new LookOut();
    while (at < 0) {
      // The shard is behind: read its results (it may be waiting for room to write them) and wait a little.
      this.drainResults();
      const down = this.downOf(s, look.due());
      if (down !== undefined) return Promise.reject(down);
      Atomics.wait(s.queue.control, SharedRing.HEAD, s.queue.head, 1);
      at = s.queue.reserve(n);
    }
    return this.publish(s, at, n, fill);
  }

  /** Fills the entry reserved at `at` (`n` words) in a shard's queue, publishes it and resolves with its results. */
  private publish(s: Shard, at: number, n: number, fill: (w: Uint32Array, at: number) => void): Promise<Int32Array> {
    const id = this.nextBatch;
    this.nextBatch = (this.nextBatch + 1) >>> 0;
    const w = s.queue.words;
    w[at + 1] = id;
    fill(w, at);
    if (this.waiting.size === 0) this.keepAlive.ref();
    const done = new Promise<Int32Array>((resolve, reject) => this.waiting.set(id, { shard: s, resolve, reject }));
    s.queue.publish(at, n, false); // the shard waits on its doorbell, not on the queue's tail
    this.ring(s);
    this.arm(s);
    return done;
  }

  /** The first shard found down, if any (the index cannot answer for every worker). */
  get down(): IndexShardDownError | undefined {
    for (const s of this.list) if (s.down !== undefined) return s.down;
    return undefined;
  }

  /** Shards found down so far. */
  get shardsDown(): number {
    return this.list.filter((s) => s.down !== undefined).length;
  }

  /** Calls `listener` once, soon after the first shard is found down (after the call that found it). */
  onDown(listener: (err: IndexShardDownError) => void): void {
    this.downListeners.push(listener);
  }

  /** A started shard's thread: an exception that ends it, and its end, mark it down (unless this index closed it). */
  private watch(s: Shard): void {
    let error: unknown;
    s.worker.on("error", (err) => {
      error = err;
    });
    s.worker.on("exit", (code) => {
      if (this.closed) return;
      const why = error === undefined ? `its thread exited with code ${code}` : `its thread stopped: ${describe(error)}`;
      // The whole story for the log: its last words (the stack, and what caused it), else the error's.
      const words = receiveMessageOnPort(s.lastWords)?.message as string | undefined;
      if (s.down === undefined) this.markDown(s, why, words ?? (error === undefined ? undefined : String((error as Error)?.stack ?? error)));
      // Found down earlier while waiting for it, before the exit said why: say it now.
      else if (error !== undefined) log.error("index shard thread's error", { shard: s.index, error: String((error as Error)?.stack ?? error) });
    });
  }

  /** Throws the shard's IndexShardDownError if it is down. */
  private live(s: Shard): void {
    const down = this.downOf(s);
    if (down !== undefined) throw down;
  }

  /**
   * The shard's IndexShardDownError once its thread stopped serving. Its
   * last words are one load away; with `look`, also looks for its thread
   * under /proc (a system call: only while waiting for the shard).
   */
  private downOf(s: Shard, look = false): IndexShardDownError | undefined {
    if (s.down !== undefined) return s.down;
    if (Atomics.load(s.ctl, CTL_DOWN) === 1) {
      const words = receiveMessageOnPort(s.lastWords)?.message as string | undefined;
      return this.markDown(s, `its thread threw: ${firstLine(words ?? "an unknown error")}`, words);
    }
    if (look && s.task !== undefined && !existsSync(s.task)) {
      return this.markDown(s, "its thread is gone: terminated, or killed (out of memory?)");
    }
    return undefined;
  }

  /**
   * Marks a shard down: its memory is no longer read, batches queued to it
   * and not applied fail with the error (results already in its ring still
   * count), the error is logged once, and onDown's listeners hear of it.
   */
  private markDown(s: Shard, reason: string, detail?: string): IndexShardDownError {
    if (s.down !== undefined) return s.down;
    const err = (s.down = new IndexShardDownError(s.index, reason));
    s.reader?.close();
    s.reader = undefined;
    this.drainResults();
    for (const [id, w] of this.waiting) {
      if (w.shard !== s) continue;
      this.waiting.delete(id);
      w.reject(err);
    }
    if (this.waiting.size === 0) this.keepAlive.unref();
    log.error("index shard thread stopped serving: queries and the events of its workers fail with UNAVAILABLE from now on", {
      shard: s.index,
      reason,
      ...(detail === undefined ? {} : { error: detail }),
    });
    for (const listener of this.downListeners) queueMicrotask(() => listener(err));
    return err;
  }

  /** Reads every result entry there is and settles its batch. */
  private drainResults(): void {
    if (this.waiting.size === 0) return;
    for (const s of this.list) {
      const r = s.results;
      for (let at = r.next(); at >= 0; at = r.next()) {
        const id = r.words[at + 1];
        const count = r.words[at + 2];
        const out = r.signed.slice(at + ENTRY_HEADER, at + ENTRY_HEADER + count);
        r.release(at);
        this.settle(id, out);
      }
    }
  }

  /** Reads a shard's results as soon as it writes some (while any batch awaits them). */
  private arm(s: Shard): void {
    if (s.armed || this.closed) return;
    s.armed = true;
    // The tail before reading: results written after it change it, so the wait below returns at once.
    const seen = s.results.tail;
    this.drainResults();
    const woken = () => {
      s.armed = false;
      this.drainResults();
      if (this.waiting.size > 0) this.arm(s);
    };
    const wait = waitAsync(s.results.control, SharedRing.TAIL, seen);
    if (wait.async) void wait.value.then(woken);
    else queueMicrotask(woken);
  }

  /** A queued batch's results came back. */
  private settle(id: number, result: Int32Array): void {
    const w = this.waiting.get(id);
    if (w === undefined) return;
    this.waiting.delete(id);
    if (this.waiting.size === 0) this.keepAlive.unref();
    w.resolve(result);
  }

  /**
   * Each shard's answer read from its shared memory; a shard whose memory
   * cannot be read whole now (see SharedNodeReader), or is not shared, is
   * asked, and answers while the others are read.
   */
  find(hashes: Uint32Array, n: number, hit: (slot: number, depth: number) => void): void {
    if (this.closed) throw new Error("sharded index is closed");
    // Every shard answers for its own workers: without one of them the answer would be silently short.
    for (const s of this.list) this.live(s);
    let asked: Shard[] | undefined;
    for (const s of this.list) {
      const r = s.reader;
      const found = r === undefined ? -1 : r.find(hashes, n);
      if (found < 0) {
        (asked ??= []).push(s);
        continue;
      }
      s.findsRead++;
      for (let i = 0; i < found; i++) hit(r!.foundSlot[i], r!.foundDepth[i]);
    }
    if (asked === undefined) return;
    this.fanOut(
      asked,
      (s) => this.askFind(s, hashes, n),
      (s) => {
        s.findsAsked++;
        const found = s.res[0];
        for (let i = 0; i < found; i++) hit(s.res[1 + 2 * i], s.res[2 + 2 * i]);
      },
    );
  }

  private askFind(s: Shard, hashes: Uint32Array, n: number): void {
    // The answer is a (slot, depth) pair per matching slot: room for every slot (past 131,071 ranks, more than the initial buffer).
    this.ensureRoom(s, REQ_HEADER + 2 * n, 2 * this.slots.slots);
    s.req[1] = n;
    s.req.set(hashes.subarray(0, 2 * n), REQ_HEADER);
    this.send(s, REQ_FIND);
  }

  oldestStamps(shard: number, max: number): Float64Array {
    const s = this.list[shard];
    s.req[1] = max;
    this.send(s, REQ_OLDEST);
    this.wait(s);
    return s.resF64.slice(1, 1 + s.resF64[0]);
  }

  evictThrough(stamp: number): number {
    let n = 0;
    this.fanOut(
      this.list,
      (s) => {
        s.reqF64[1] = stamp;
        this.send(s, REQ_EVICT);
      },
      (s) => (n += s.res[0]),
    );
    return n;
  }

  dumpSlot(shard: number, slot: number): Uint32Array {
    const s = this.list[shard];
    s.req[1] = slot;
    this.send(s, REQ_DUMP_SLOT);
    this.wait(s);
    return receiveMessageOnPort(s.port)!.message as Uint32Array;
  }

  sequenceOf(shard: number, slot: number, xLo: number, xHi: number): bigint | undefined {
    const s = this.list[shard];
    s.req[1] = slot;
    s.req[2] = xLo;
    s.req[3] = xHi;
    this.send(s, REQ_SEQUENCE);
    this.wait(s);
    return s.res[0] === 1 ? u64(s.res[1] >>> 0, s.res[2] >>> 0) : undefined;
  }

  distinctNodes(): number {
    if (this.list.length === 1) return this.stats()[0].nodes;
    const parts: Uint32Array[] = [];
    for (const s of this.list) {
      this.send(s, REQ_NODES);
      this.wait(s);
      parts.push(receiveMessageOnPort(s.port)!.message as Uint32Array);
    }
    // Shards own disjoint workers but may hold the same block: count the union.
    const all = new BigUint64Array(parts.reduce((n, p) => n + p.length / 2, 0));
    const words = new Uint32Array(all.buffer);
    let o = 0;
    for (const p of parts) {
      words.set(p, o);
      o += p.length;
    }
    all.sort();
    let distinct = 0;
    for (let i = 0; i < all.length; i++) if (i === 0 || all[i] !== all[i - 1]) distinct++;
    return distinct;
  }

  stats(): ShardStats[] {
    return this.list.map((s) => {
      this.send(s, REQ_STATS);
      this.wait(s);
      const f = s.resF64;
      return { entries: f[0], nodes: f[1], arrayBytes: f[2], evicted: f[3], heapUsed: f[4] };
    });
  }

  queryAnswers(): { read: number; asked: number } {
    let read = 0;
    let asked = 0;
    for (const s of this.list) {
      read += s.findsRead;
      asked += s.findsAsked;
    }
    return { read, asked };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.list) {
      if (this.downOf(s, true) === undefined) {
        try {
          this.send(s, REQ_STOP);
          this.wait(s);
        } catch {
          // It died while stopping: its queued batches were failed with the cause.
        }
      }
      s.port.close();
    }
    // The stop request applied everything queued first: every result is in the rings (unless it died applying one: markDown failed the rest).
    this.drainResults();
    await new Promise<void>((resolve) => setImmediate(resolve));
    for (const s of this.list) {
      s.lastWords.close();
      s.reader?.close();
    }
    for (const w of this.waiting.values()) w.reject(new Error("sharded index is closed"));
    this.waiting.clear();
    clearInterval(this.keepAlive);
    await Promise.all(this.list.map((s) => s.worker.terminate()));
  }

  private send(s: Shard, op: number): void {
    if (this.closed && op !== REQ_STOP) throw new Error("sharded index is closed");
    this.live(s);
    s.req[0] = op;
    s.seq = (s.seq + 1) | 0;
    Atomics.store(s.ctl, CTL_REQ, s.seq);
    this.ring(s);
  }

  /** Wakes a shard for new work (a request or a queued batch): the bell always moves, the shard is notified only if asleep. */
  private ring(s: Shard): void {
    Atomics.add(s.ctl, CTL_BELL, 1);
    // Sequentially consistent with the shard's "sleeping, then wait while the bell is unmoved": either it sees the bell moved or this sees it asleep.
    if (Atomics.load(s.ctl, CTL_SLEEPING) === 1) Atomics.notify(s.ctl, CTL_BELL);
  }

  private wait(s: Shard): void {
    const look = new LookOut();
    for (let spins = 0; ; spins++) {
      const got = Atomics.load(s.ctl, CTL_RES);
      if (got === s.seq) break;
      if (spins > 0) {
        // A shard applying queued batches first may be waiting for room in its result ring: read results meanwhile.
        this.drainResults();
        // This thread sees no exit event while it waits here: look for the thread itself.
        const down = this.downOf(s, look.due());
        if (down !== undefined) throw down;
      }
      Atomics.wait(s.ctl, CTL_RES, got, this.waiting.size > 0 ? 1 : LOOK_EVERY_MS);
    }
    if (Atomics.load(s.ctl, CTL_ERROR) === 1) {
      Atomics.store(s.ctl, CTL_ERROR, 0);
      const msg = receiveMessageOnPort(s.port)?.message as { error?: string } | undefined;
      throw new Error(`index shard failed: ${msg?.error ?? "unknown error"}`);
    }
  }

  /** Grows a shard's buffers (in a synchronous hand-over) when a request would not fit. */
  private ensureRoom(s: Shard, reqWords: number, resWords: number): void {
    if (reqWords <= s.req.length && resWords + 1 <= s.res.length) return;
    const req = new SharedArrayBuffer(Math.max(s.req.byteLength, nextPow2(reqWords * 4)));
    const res = new SharedArrayBuffer(Math.max(s.res.byteLength, nextPow2((resWords + 1) * 4)));
    s.port.postMessage({ req, res });
    this.send(s, REQ_SWAP_BUFFERS);
    this.wait(s);
    s.req = new Uint32Array(req);
    s.reqF64 = new Float64Array(req);
    s.res = new Int32Array(res);
    s.resF64 = new Float64Array(res);
  }
}

/** Atomics.waitAsync (Node 16+; its type is in TypeScript's es2024 lib, newer than ours). */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number): { async: false; value: string } | { async: true; value: Promise<string> };
}).waitAsync;

/** How often a wait for a shard looks for its thread under /proc (ms). */
const LOOK_EVERY_MS = 50;

/** Says when a wait is due to look for its shard's thread again (once per LOOK_EVERY_MS). */
class LookOut {
  private last = performance.now();
  due(): boolean {
    const now = performance.now();
    if (now - this.last < LOOK_EVERY_MS) return false;
    this.last = now;
    return true;
  }
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e?.code !== undefined ? `${e.code}: ${e.message}` : firstLine(String(e?.message ?? err));
}

function firstLine(text: string): string {
  const nl = text.indexOf("\n");
  return nl < 0 ? text : text.slice(0, nl);
}

/** A u64's low and high 32-bit words. */
function words(v: bigint): [number, number] {
  return [Number(v & 0xffffffffn), Number((v >> 32n) & 0xffffffffn)];
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}
