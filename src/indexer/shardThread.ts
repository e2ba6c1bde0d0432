// Entry point of a shard thread: one CompactCore serving requests from the
// main thread through shared memory (see shardProtocol.ts). It blocks in
// Atomics.wait between requests, so an idle shard costs no CPU.
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { getHeapStatistics } from "node:v8";
import { CompactCore, SlotTable } from "./compactCore.js";
import {
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
  type ShardThreadData,
} from "./shardProtocol.js";

const data = workerData as ShardThreadData & { port: MessagePort };
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

let seen = 0;
parentPort?.postMessage("ready");
for (;;) {
  Atomics.wait(ctl, CTL_REQ, seen);
  const seq = Atomics.load(ctl, CTL_REQ);
  if (seq === seen) continue;
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
  if (!more) break;
}
data.port.close();
