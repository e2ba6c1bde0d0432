// Entry point of a shard thread: one CompactCore serving requests from the
// main thread through shared memory, and applying queued batches (see
// shardProtocol.ts). It blocks in Atomics.wait on the doorbell when it has
// nothing to do, so an idle shard costs no CPU.
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { readlinkSync } from "node:fs";
import { getHeapStatistics } from "node:v8";
import { CompactCore, SlotTable } from "./compactCore.js";
import { RecordWriter, recordWords, restampRecords, stampsOf, stampsOfRange } from "./records.js";
import { IngestDecoder } from "../decoding/ingestDecoder.js";
import { E_DP_RANK, E_KIND, E_WORKER_HI, E_WORKER_LO, EVENT_WORDS, type EventBatch, KIND_CLEARED, u64 } from "../protocols/eventBatch.js";
import { ENGINE_CODES, FEED_COUNT_WORDS, decodeForShard, numberEvents } from "../decoding/engine/shardFeed.js";
import {
  CTL_BELL,
  CTL_DOWN,
  CTL_ERROR,
  CTL_REQ,
  CTL_RES,
  CTL_SLEEPING,
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
  ENTRY_HEADER,
  ENGINE_ENTRY,
  ENGINE_HEADER,
  ENGINE_PAIR_WORDS,
  ENGINE_RESULT_TAIL,
  FEED_ID_GIVEN,
  RAW_ABORT,
  RAW_APPLIED,
  RAW_COMMIT,
  RAW_ENTRY,
  RAW_EVENT_WORDS,
  RAW_HEADER,
  RAW_PAIR_WORDS,
  RAW_PART,
  RAW_PART_HEADER,
  RAW_PREPARED,
  RAW_RECORDS,
  RAW_RECORDS_HEADER,
  RAW_REFUSED,
  RAW_RESULT_HEADER,
  type ShardReady,
  type ShardThreadData,
  pairIndex,
} from "./shardProtocol.js";
import { SharedRing } from "./sharedRing.js";

const data = workerData as ShardThreadData & { port: MessagePort; lastWords: MessagePort };
const queue = new SharedRing(data.queue);
const results = new SharedRing(data.results);
const ctl = new Int32Array(data.ctl);
let req = new Uint32Array(data.req);
let reqF64 = new Float64Array(data.req);
let res = new Int32Array(data.res);
let resF64 = new Float64Array(data.res);
const views = data.views;
const core = new CompactCore(new SlotTable(data.slots, data.maxSlots), data.initialEntries, {
  bounded: data.bounded,
  // Queries read the node side from the main thread (sharedReader.ts); new buffers go there on this port.
  share: data.nodeHeader && views && { header: new Int32Array(data.nodeHeader), post: (v) => views.postMessage(v) },
});
/** The store clock every shard and the main thread draw stamps from. */
const clock = new BigInt64Array(data.clock);
/** Per raw stream: 1 once the shard refused one of its messages, until the main thread has redone them. */
const rawBlocked = new Int32Array(data.rawFlags);
if (data.testOnlyThrowOnEvent !== undefined) throwOnEvent(data.testOnlyThrowOnEvent);
const decoder = data.blockSize > 0 ? new IngestDecoder(data.blockSize) : undefined;
const rawRecords = new RecordWriter();
/** Engine feeds' payloads decode here when the index was given their block size. */
const feedBlockSize = data.feedBlockSize ?? 0;
/** Per slot, the last event id an engine feed entry handed out (FEED_ID_CONTINUE picks up from it). */
const feedLastIds = new Map<number, bigint>();
/** An applied engine entry's tail: dp_rank, last id lo, hi, then the count matrix. */
const feedTail = new Int32Array(ENGINE_RESULT_TAIL + FEED_COUNT_WORDS);
/** Each decoded event's slot (reused: one raw message at a time). */
let rawSlots = new Uint32Array(64);

function serve(op: number): boolean {
  switch (op) {
    case REQ_APPLY: {
      const count = req[1];
      core.applyRecords(req.subarray(REQ_HEADER), count, res);
      return true;
    }
    case REQ_FIND: {
      const found = core.findMatches(req.subarray(REQ_HEADER), req[1]);
      const foundSlot = core.foundSlot;
      const foundDepth = core.foundDepth;
      res[0] = found;
      for (let i = 0; i < found; i++) {
        res[1 + 2 * i] = foundSlot[i];
        res[2 + 2 * i] = foundDepth[i];
      }
      return true;
    }
    case REQ_OLDEST: {
      const max = Math.min(req[1], resF64.length - 1);
      resF64[0] = core.oldestStamps(max, resF64.subarray(1));
      return true;
    }
    case REQ_EVICT:
      res[0] = core.evictThrough(reqF64[1]);
      return true;
    case REQ_DUMP_SLOT:
      {
        const packed = core.dumpSlot(req[1]);
        data.port.postMessage(packed, [packed.buffer]);
      }
      return true;
    case REQ_NODES: {
      const hashes = core.nodeHashes();
      data.port.postMessage(hashes, [hashes.buffer]);
      return true;
    }
    case REQ_SEQUENCE:
      res[0] = core.sequenceOf(req[1], req[2], req[3], res.subarray(1)) ? 1 : 0;
      return true;
    case REQ_STATS:
      resF64[0] = core.entries;
      resF64[1] = core.nodes;
      resF64[2] = core.arrayBytes();
      resF64[3] = core.evicted;
      resF64[4] = getHeapStatistics().used_heap_size;
      return true;
    case REQ_SWAP_BUFFERS: {
      const msg = receiveMessageOnPort(data.port)!.message as { req: SharedArrayBuffer; res: SharedArrayBuffer };
      req = new Uint32Array(msg.req);
      reqF64 = new Float64Array(msg.req);
      res = new Int32Array(msg.res);
      resF64 = new Float64Array(msg.res);
      return true;
    }
    case REQ_STOP:
      return false;
    default:
      throw new Error(`shard: unknown request ${op}`);
  }
}

/** Records applied between two looks for a waiting find. */
const FIND_CHECK_EVERY = 16;

let seen = 0;
let running = true;

/**
 * Answers the pending sync request (its seq is `seq`); false once told to
 * stop. A request that only reads and throws (out of memory for a dump, an
 * engine bug) fails alone: the index is as it was. One that writes (apply,
 * evict) and throws may have done part of its work: that poisons the shard.
 */
function answer(seq: number): boolean {
  seen = seq;
  let more = true;
  const op = req[0];
  try {
    more = serve(op);
  } catch (err) {
    if (op === REQ_APPLY || op === REQ_EVICT) throw poison(err);
    Atomics.store(ctl, CTL_ERROR, 1);
    data.port.postMessage({ error: String((err as Error)?.stack ?? err) });
  }
  Atomics.store(ctl, CTL_RES, seq);
  Atomics.notify(ctl, CTL_RES);
  return more;
}

/** Serves a find that arrived while a queued batch is applied (nothing else may overtake the queue). */
function findBetweenRecords(): void {
  const seq = Atomics.load(ctl, CTL_REQ);
  if (seq !== seen && req[0] === REQ_FIND) answer(seq);
}

/** Applies the queued batch at `at` in the queue ring, record by record, and writes its results. */
function applyQueued(at: number): void {
  const w = queue.words;
  const id = w[at + 1];
  const count = w[at + 2];
  try {
    if (count === RAW_ENTRY) applyRaw(at, id);
    else if (count === RAW_RECORDS) applyRawRecords(at, id);
    else if (count === ENGINE_ENTRY) applyEngine(at, id);
    else if (count === RAW_PART) prepareRawPart(at, id);
    else if (count === RAW_COMMIT || count === RAW_ABORT) settleRawPart(at, id, count === RAW_COMMIT);
    else applyRecords(at, id, count);
  } catch (err) {
    throw poison(err);
  }
  queue.release(at);
}

/**
 * The error that ends this shard when applying throws. The records before
 * the throwing one were applied and the rest were not, so the shard's index
 * would differ from what its results say (or, for a batch that failed, from
 * the nothing its caller was told). Serving on would answer queries from that
 * silently wrong index: the shard stops instead, and the main thread fails
 * everything that needs it (threadBackend.ts, IndexShardDownError).
 */
function poison(err: unknown): Error {
  const cause = String((err as Error)?.stack ?? err);
  const nl = cause.indexOf("\n");
  const e = new Error(`applying threw, so the shard may hold part of what it was applying: ${nl < 0 ? cause : cause.slice(0, nl)}`);
  e.stack = `Error: ${e.message}\ncaused by ${cause}`;
  return e;
}

/** A queued batch of `count` records: one result word each. */
function applyRecords(at: number, id: number, count: number): void {
  const w = queue.words;
  const out = reserveResult(ENTRY_HEADER + count);
  const res = results.signed;
  for (let i = 0, o = at + ENTRY_HEADER; i < count; i++, o += recordWords(w, o)) {
    if (i % FIND_CHECK_EVERY === 0) findBetweenRecords();
    res[out + ENTRY_HEADER + i] = core.applyOne(w, o);
  }
  finishResult(out, id, count);
}

/**
 * The raw IngestKvEvents message at `at`: decoded, hashed and applied here,
 * or refused whole (nothing applied) when the main thread must decode it:
 * the hot-path decoder hands it back (protobuf-es words the error or the
 * odd form), a clear, an event naming a pair the entry gave no slot for, or
 * an earlier refusal of the same stream still being redone.
 */
function applyRaw(at: number, id: number): void {
  const w = queue.words;
  const flag = w[at + ENTRY_HEADER];
  const byteLength = w[at + ENTRY_HEADER + 1];
  const pairs = w[at + ENTRY_HEADER + 2];
  const p0 = at + RAW_HEADER;
  let batch: ReturnType<typeof decodeRaw>;
  try {
    batch = Atomics.load(rawBlocked, flag) === 0 ? decodeRaw(queue.bytes(p0 + pairs * RAW_PAIR_WORDS, byteLength), w, p0, pairs) : undefined;
  } catch {
    batch = undefined; // the main thread decodes it again and words any error
  }
  if (batch === undefined) return refuseRaw(id, flag);
  const { events, restore, slots } = batch;
  // Stamps come from the shared clock (one draw per message): eviction orders entries of every shard by them.
  let stamp = Number(Atomics.add(clock, 0, BigInt(stampsOfRange(events, 0, events.count))));
  rawRecords.reset();
  for (let i = 0; i < events.count; i++) {
    rawRecords.batchEvent(events, i, slots[i], stamp, restore);
    stamp += stampsOf(events, i);
  }
  applyRecordsWithRefs(rawRecords.words, 0, events.count, id);
}

/** A split message's part, decoded and hashed, waiting for the main thread's commit or abort (RAW_PART). */
interface PreparedPart {
  token: number;
  /** Its records, stamps not yet drawn. */
  records: Uint32Array;
  count: number;
}

/** Per raw stream (flag): its prepared parts, oldest first. */
const prepared = new Map<number, PreparedPart[]>();

/**
 * A part of a raw message naming workers of several shards (RAW_PART): its
 * events decoded, checked and hashed into records here, applied only when
 * the main thread commits, since another shard may refuse its own part.
 * Refused when the hot-path decoder hands it back, as a raw entry is; but a
 * part neither reads nor sets its stream's flag: the main thread settles
 * parts in stream order, so a refusal here need not stop the parts queued
 * after it, and must not refuse those of earlier messages still queued on
 * another shard.
 */
function prepareRawPart(at: number, id: number): void {
  const w = queue.words;
  const flag = w[at + ENTRY_HEADER];
  const token = w[at + ENTRY_HEADER + 1];
  const byteLength = w[at + ENTRY_HEADER + 2];
  const pairs = w[at + ENTRY_HEADER + 3];
  const p0 = at + RAW_PART_HEADER;
  let batch: ReturnType<typeof decodeRaw>;
  try {
    batch = decodeRaw(queue.bytes(p0 + pairs * RAW_PAIR_WORDS, byteLength), w, p0, pairs);
  } catch {
    batch = undefined; // the main thread decodes the whole message again and words any error
  }
  if (batch === undefined) {
    const out = reserveResult(ENTRY_HEADER + RAW_RESULT_HEADER);
    results.signed[out + ENTRY_HEADER] = RAW_REFUSED;
    return finishResult(out, id, RAW_RESULT_HEADER);
  }
  const { events, restore, slots } = batch;
  rawRecords.reset();
  for (let i = 0; i < events.count; i++) rawRecords.batchEvent(events, i, slots[i], 0, restore);
  const parts = prepared.get(flag);
  const part = { token, records: rawRecords.words.slice(0, rawRecords.length), count: events.count };
  if (parts === undefined) prepared.set(flag, [part]);
  else parts.push(part);
  const out = reserveResult(ENTRY_HEADER + RAW_RESULT_HEADER + 1);
  results.signed[out + ENTRY_HEADER] = RAW_PREPARED;
  results.signed[out + ENTRY_HEADER + 1] = events.count;
  results.signed[out + ENTRY_HEADER + 2] = stampsOfRange(events, 0, events.count);
  finishResult(out, id, RAW_RESULT_HEADER + 1);
  // The message waits for every shard's answer before anything of it applies: wake the main thread now.
  signalResults();
}

/** Applies (commit) or drops the stream's oldest prepared part, which must be the one named. */
function settleRawPart(at: number, id: number, commit: boolean): void {
  const w = queue.words;
  const flag = w[at + ENTRY_HEADER];
  const token = w[at + ENTRY_HEADER + 1];
  const parts = prepared.get(flag);
  const part = parts?.shift();
  // The main thread settles only parts this shard prepared, in order: anything else is a bug in the protocol.
  if (part === undefined || part.token !== token) throw new Error(`shard: raw stream ${flag} has no prepared part ${token} to ${commit ? "commit" : "abort"}`);
  if (parts!.length === 0) prepared.delete(flag);
  if (!commit) {
    const out = reserveResult(ENTRY_HEADER + RAW_RESULT_HEADER);
    results.signed[out + ENTRY_HEADER] = RAW_REFUSED;
    return finishResult(out, id, RAW_RESULT_HEADER);
  }
  // The main thread drew the whole message's stamps when it decided (in stream order, as the index in one thread would).
  const { records, count } = part;
  restampRecords(records, 0, count, w[at + ENTRY_HEADER + 2] + w[at + ENTRY_HEADER + 3] * 4294967296);
  applyRecordsWithRefs(records, 0, count, id);
}

/** A raw stream's message the main thread decoded (RAW_RECORDS): applied like a raw one, or refused while its stream is. */
function applyRawRecords(at: number, id: number): void {
  const w = queue.words;
  const flag = w[at + ENTRY_HEADER];
  if (Atomics.load(rawBlocked, flag) !== 0) return refuseRaw(id, flag);
  applyRecordsWithRefs(w, at + RAW_RECORDS_HEADER, w[at + ENTRY_HEADER + 1], id);
}

/** Refuses a raw stream's entry (nothing applied) and every later one of its stream until the main thread clears the flag. */
function refuseRaw(id: number, flag: number): void {
  Atomics.store(rawBlocked, flag, 1);
  const out = reserveResult(ENTRY_HEADER + RAW_RESULT_HEADER);
  results.signed[out + ENTRY_HEADER] = RAW_REFUSED;
  finishResult(out, id, RAW_RESULT_HEADER);
}

/**
 * Applies `count` records from word `o` of `w` and publishes a raw result
 * entry: per event its result code and the event's worker, rank and id
 * (from the record header), for rejections and warnings.
 */
function applyRecordsWithRefs(w: Uint32Array, o: number, count: number, id: number, tail?: Int32Array): void {
  const events = RAW_RESULT_HEADER + count * RAW_EVENT_WORDS;
  const size = events + (tail?.length ?? 0);
  const out = reserveResult(ENTRY_HEADER + size);
  const res = results.signed;
  res[out + ENTRY_HEADER] = RAW_APPLIED;
  res[out + ENTRY_HEADER + 1] = count;
  for (let i = 0, r = out + ENTRY_HEADER + RAW_RESULT_HEADER; i < count; i++, o += recordWords(w, o), r += RAW_EVENT_WORDS) {
    if (i % FIND_CHECK_EVERY === 0) findBetweenRecords();
    res[r] = core.applyOne(w, o);
    // Record header: op, slot, worker lo, hi, dp_rank, event id lo, hi.
    res[r + 1] = w[o + 2];
    res[r + 2] = w[o + 3];
    res[r + 3] = w[o + 4];
    res[r + 4] = w[o + 5];
    res[r + 5] = w[o + 6];
  }
  if (tail !== undefined) res.set(tail, out + ENTRY_HEADER + events);
  finishResult(out, id, size);
}

/**
 * An engine feed's payload at `at` (ENGINE_ENTRY): decoded, converted,
 * hashed and applied here, its events numbered on from the feed's last
 * event id for the pair; or refused whole (nothing applied) when the main
 * thread must take it (decodeForShard), its dp_rank has no pair, the pair's
 * last id is not known here, or its feed is refused already.
 */
function applyEngine(at: number, id: number): void {
  const w = queue.words;
  const flag = w[at + ENTRY_HEADER];
  const byteLength = w[at + ENTRY_HEADER + 1];
  const engine = ENGINE_CODES[w[at + ENTRY_HEADER + 2]];
  const workerLo = w[at + ENTRY_HEADER + 3];
  const workerHi = w[at + ENTRY_HEADER + 4];
  const pairs = w[at + ENTRY_HEADER + 6];
  const p0 = at + ENGINE_HEADER;
  if (feedBlockSize === 0 || engine === undefined || Atomics.load(rawBlocked, flag) !== 0) return refuseRaw(id, flag);
  feedTail.fill(0);
  const counts = feedTail.subarray(ENGINE_RESULT_TAIL);
  const worker = { workerId: u64(workerLo, workerHi), defaultRank: w[at + ENTRY_HEADER + 5] };
  let decoded: ReturnType<typeof decodeForShard>;
  try {
    decoded = decodeForShard(queue.bytes(p0 + pairs * ENGINE_PAIR_WORDS, byteLength), engine, worker, feedBlockSize, counts);
  } catch {
    decoded = undefined; // the main thread decodes it again and says what went wrong
  }
  let p = -1;
  for (let q = p0; decoded !== undefined && q < p0 + pairs * ENGINE_PAIR_WORDS; q += ENGINE_PAIR_WORDS) if (w[q] === decoded.dpRank) p = q;
  if (decoded === undefined || p < 0) return refuseRaw(id, flag);
  const slot = w[p + 1];
  if (w[p + 2] !== FEED_ID_GIVEN && !feedLastIds.has(slot)) return refuseRaw(id, flag);
  // Every pair's given id holds from here on, also for the pairs this payload does not name.
  for (let q = p0; q < p0 + pairs * ENGINE_PAIR_WORDS; q += ENGINE_PAIR_WORDS) if (w[q + 2] === FEED_ID_GIVEN) feedLastIds.set(w[q + 1], u64(w[q + 3], w[q + 4]));
  const { batch } = decoded;
  const last = numberEvents(batch, feedLastIds.get(slot)!);
  feedLastIds.set(slot, last);
  feedTail[0] = decoded.dpRank;
  feedTail[1] = Number(last & 0xffffffffn);
  feedTail[2] = Number(last >> 32n);
  let stamp = Number(Atomics.add(clock, 0, BigInt(stampsOfRange(batch, 0, batch.count))));
  rawRecords.reset();
  for (let i = 0; i < batch.count; i++) {
    rawRecords.batchEvent(batch, i, slot, stamp, false);
    stamp += stampsOf(batch, i);
  }
  applyRecordsWithRefs(rawRecords.words, 0, batch.count, id, feedTail);
}

/** A raw message's events and each one's slot, or undefined when it must be refused (see applyRaw). */
function decodeRaw(bytes: Uint8Array, w: Uint32Array, p0: number, pairs: number): { events: EventBatch; restore: boolean; slots: Uint32Array } | undefined {
  if (decoder === undefined || pairs === 0) return undefined;
  // Applied before the next decode: views of the decoder's buffers, no copy.
  const decoded = decoder.decode(bytes, true);
  if (decoded === undefined) return undefined;
  const { batch } = decoded;
  const ev = batch.events;
  if (rawSlots.length < batch.count) rawSlots = new Uint32Array(Math.max(batch.count, 2 * rawSlots.length));
  const slots = rawSlots;
  const pairsEnd = p0 + pairs * RAW_PAIR_WORDS;
  for (let i = 0, p = p0; i < batch.count; i++) {
    const e = i * EVENT_WORDS;
    if (ev[e + E_KIND] === KIND_CLEARED) return undefined; // a clear also empties the lower tiers, on the main thread
    const lo = ev[e + E_WORKER_LO];
    const hi = ev[e + E_WORKER_HI];
    const rank = ev[e + E_DP_RANK];
    // Pairs are listed in order of first mention: an event names the last event's pair (an engine) or the next one (a relay), else search.
    if (!(w[p] === lo && w[p + 1] === hi && w[p + 2] === rank)) {
      const next = p + RAW_PAIR_WORDS < pairsEnd ? p + RAW_PAIR_WORDS : p0;
      p = w[next] === lo && w[next + 1] === hi && w[next + 2] === rank ? next : pairIndex(w, p0, pairs, lo, hi, rank);
      if (p < 0) return undefined;
    }
    slots[i] = w[p + 3];
  }
  return { events: batch, restore: decoded.restore, slots };
}

/** Publishes a result entry of `size` words after its header. */
function finishResult(out: number, id: number, size: number): void {
  results.signed[out + 1] = id;
  results.signed[out + 2] = size;
  // The main thread is woken for every RESULTS_PER_WAKE results, and before this thread waits for anything (signalResults).
  results.publish(out, ENTRY_HEADER + size, false);
  if (++unsignaled >= RESULTS_PER_WAKE) signalResults();
}

/**
 * Results published before the main thread is woken to read them: waking its
 * Atomics.waitAsync costs this thread microseconds a time (profiled: 6% of a
 * shard's time when it woke it per batch). The main thread also reads results
 * whenever it queues work or waits for an answer, so while it sends work they
 * reach it anyway.
 */
const RESULTS_PER_WAKE = 8;
let unsignaled = 0;

/** Wakes the main thread for the results published since the last wake. */
function signalResults(): void {
  if (unsignaled === 0) return;
  unsignaled = 0;
  results.wakeConsumer();
}

/** Room in the result ring; while the main thread has not read enough of it, finds are still served. */
function reserveResult(n: number): number {
  for (;;) {
    const at = results.reserve(n);
    if (at >= 0) return at;
    findBetweenRecords();
    signalResults(); // the main thread makes room by reading them
    Atomics.wait(results.control, SharedRing.HEAD, results.head, 1);
  }
}

/** Applies every batch queued so far. */
function drainQueue(): void {
  for (let at = queue.next(); at >= 0; at = queue.next()) applyQueued(at);
}

/**
 * Test hook (ThreadBackendOptions.testOnlyThrowOnEvent): this core's applyOne
 * throws on the records of one event (by worker id and event id), after the
 * batch's earlier records were applied, as a bug in CompactCore would.
 */
function throwOnEvent([wLo, wHi, eLo, eHi]: [number, number, number, number]): void {
  const applyOne = core.applyOne.bind(core);
  // Record header: op, slot, worker lo, hi, dp_rank, event id lo, hi (records.ts).
  core.applyOne = (w, o) => {
    if (w[o + 2] === wLo && w[o + 3] === wHi && w[o + 5] === eLo && w[o + 6] === eHi) {
      throw new Error(`test-only throw on worker ${u64(wLo, wHi)} event ${u64(eLo, eHi)}`);
    }
    return applyOne(w, o);
  };
}

/** This thread's entry under /proc/self/task (Linux): the main thread sees it vanish when this thread ends, however it ends. */
function taskEntry(): string | undefined {
  try {
    const [, tid] = /\/task\/(\d+)$/.exec(readlinkSync("/proc/thread-self")) ?? [];
    return tid === undefined ? undefined : `/proc/self/task/${tid}`;
  } catch {
    return undefined; // not Linux: the main thread learns of a silent end from the thread's exit event only
  }
}

parentPort?.postMessage({ task: taskEntry() } satisfies ShardReady);
try {
  while (running) {
    const bell = Atomics.load(ctl, CTL_BELL);
    const seq = Atomics.load(ctl, CTL_REQ);
    if (seq !== seen) {
      // Every request but a find comes after the batches queued before it.
      if (req[0] !== REQ_FIND) drainQueue();
      running = answer(seq);
      continue;
    }
    const at = queue.next();
    if (at >= 0) {
      applyQueued(at);
      continue;
    }
    signalResults();
    // Asleep from here (the main thread then notifies the bell); a bell rung since `bell` was read returns at once.
    Atomics.store(ctl, CTL_SLEEPING, 1);
    Atomics.wait(ctl, CTL_BELL, bell);
    Atomics.store(ctl, CTL_SLEEPING, 0);
  }
} catch (err) {
  // An apply that threw (poison), or something that escaped the per-request guards: this thread ends. Say why first, so a waiting caller fails at once with the cause.
  data.lastWords.postMessage(String((err as Error)?.stack ?? err));
  Atomics.store(ctl, CTL_DOWN, 1);
  Atomics.notify(ctl, CTL_RES);
  throw err;
}
data.port.close();
