// Entry point of a shard thread: one CompactCore serving requests from the
// main thread through shared memory, and applying queued batches (see
// shardProtocol.ts). It blocks in Atomics.wait on the doorbell when it has
// nothing to do, so an idle shard costs no CPU.
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { getHeapStatistics } from "node:v8";
import { CompactCore, SlotTable } from "./compactCore.js";
import { recordWords } from "./records.js";
import {
  CTL_BELL,
  CTL_ERROR,
  CTL_REQ,
  CTL_RES,
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
  type QueuedFailure,
  type ShardThreadData,
} from "./shardProtocol.js";
import { SharedRing } from "./sharedRing.js";

const data = workerData as ShardThreadData & { port: MessagePort; failures: MessagePort };
const queue = new SharedRing(data.queue);
const results = new SharedRing(data.results);
const ctl = new Int32Array(data.ctl);
let req = new Uint32Array(data.req);
let reqF64 = new Float64Array(data.req);
let res = new Int32Array(data.res);
let resF64 = new Float64Array(data.res);
const core = new CompactCore(new SlotTable(data.slots, data.maxSlots), data.initialEntries);

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

/** Answers the pending sync request (its seq is `seq`); false once told to stop. */
function answer(seq: number): boolean {
  seen = seq;
  let more = true;
  try {
    more = serve(req[0]);
  } catch (err) {
    // An engine bug must not leave the caller waiting forever: flag it and answer.
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
  let out = -1;
  try {
    out = reserveResult(ENTRY_HEADER + count);
    const res = results.signed;
    res[out + 1] = id;
    res[out + 2] = count;
    for (let i = 0, o = at + ENTRY_HEADER; i < count; i++, o += recordWords(w, o)) {
      if (i % FIND_CHECK_EVERY === 0) findBetweenRecords();
      res[out + ENTRY_HEADER + i] = core.applyOne(w, o);
    }
  } catch (err) {
    const failure: QueuedFailure = { id, error: String((err as Error)?.stack ?? err) };
    data.failures.postMessage(failure);
    // The reserved result entry is not published: the next one reuses its room.
    queue.release(at);
    return;
  }
  queue.release(at);
  results.publish(out, ENTRY_HEADER + count);
}

/** Room in the result ring; while the main thread has not read enough of it, finds are still served. */
function reserveResult(n: number): number {
  for (;;) {
    const at = results.reserve(n);
    if (at >= 0) return at;
    findBetweenRecords();
    Atomics.wait(results.control, SharedRing.HEAD, results.head, 1);
  }
}

/** Applies every batch queued so far. */
function drainQueue(): void {
  for (let at = queue.next(); at >= 0; at = queue.next()) applyQueued(at);
}

parentPort?.postMessage("ready");
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
  Atomics.wait(ctl, CTL_BELL, bell);
}
data.port.close();
data.failures.close();
