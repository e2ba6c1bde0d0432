// The compact wire format of index operations: one Uint32Array of records,
// u64 values as (lo, hi) u32 halves. The same records feed the in-thread core
// and, batched into one buffer, the shard threads (no per-event cloning).
import { doubledFor } from "../util/typedArrays.js";
import {
  E_COUNT,
  E_DP_RANK,
  E_FIRST,
  E_HAS_PARENT,
  E_ID_HI,
  E_ID_LO,
  E_KIND,
  E_PARENT_HI,
  E_PARENT_LO,
  E_WORKER_HI,
  E_WORKER_LO,
  EVENT_WORDS,
  type EventBatch,
  ITEM_WORDS,
  KIND_CLEARED,
  KIND_STORED,
} from "../protocols/eventBatch.js";
import type { WorkerKey } from "../protocols/events.js";

export const OP_STORED = 0;
export const OP_REMOVED = 1;
export const OP_CLEARED = 2;
export const OP_STORE_ROUTED = 3;
export const OP_REMOVE_ROUTED = 4;
export const OP_REMOVE_WORKER = 5;

/** Header words: op, slot, workerId lo/hi, dpRank, eventId lo/hi, stamp lo/hi, flags. */
export const HEADER_WORDS = 10;
/** Flags word: restore (no event-id ordering checks). */
export const FLAG_RESTORE = 1;
/** Flags word: the stored blocks carry their sequence hashes (6 words per block instead of 4). */
export const FLAG_EXPLICIT_SEQUENCE = 2;

export const OUTCOME_APPLIED = 0;
export const OUTCOME_PARENT_NOT_FOUND = 1;
export const OUTCOME_STALE = 2;

const big = new BigUint64Array(1);
const halves = new Uint32Array(big.buffer);
const TWO32 = 4294967296;

/** Growable Uint32Array writer. */
export class RecordWriter {
  words = new Uint32Array(1024);
  length = 0;
  count = 0;

  reset(): void {
    this.length = 0;
    this.count = 0;
  }

  private room(n: number): void {
    if (this.length + n <= this.words.length) return;
    this.words = doubledFor(this.words, this.length + n);
  }

  private u64(v: bigint): void {
    big[0] = v;
    this.words[this.length++] = halves[0];
    this.words[this.length++] = halves[1];
  }

  private header(op: number, slot: number, w: WorkerKey, eventId: bigint, stamp: number, flags: number, extra: number): void {
    this.room(HEADER_WORDS + extra);
    const o = this.length;
    const ws = this.words;
    ws[o] = op;
    ws[o + 1] = slot;
    big[0] = w.workerId;
    ws[o + 2] = halves[0];
    ws[o + 3] = halves[1];
    ws[o + 4] = w.dpRank >>> 0;
    big[0] = eventId;
    ws[o + 5] = halves[0];
    ws[o + 6] = halves[1];
    ws[o + 7] = stamp >>> 0;
    ws[o + 8] = Math.floor(stamp / TWO32);
    ws[o + 9] = flags;
    this.length += HEADER_WORDS;
    this.count++;
  }

  /** Event `i` of `batch`, copied word for word (no bigint, no object). */
  batchEvent(batch: EventBatch, i: number, slot: number, stamp: number, restore: boolean): void {
    const ev = batch.events;
    const o = i * EVENT_WORDS;
    const kind = ev[o + E_KIND];
    const n = ev[o + E_COUNT];
    const op = kind === KIND_STORED ? OP_STORED : kind === KIND_CLEARED ? OP_CLEARED : OP_REMOVED;
    // A restored dump may state each block's sequence hash (6 words per block instead of 4).
    const explicit = restore && op === OP_STORED && batch.explicit !== undefined && batch.explicit[i] === 1;
    const extra = op === OP_STORED ? 4 + n * (explicit ? 6 : 4) : op === OP_REMOVED ? 1 + n * 2 : 0;
    this.room(HEADER_WORDS + extra);
    const ws = this.words;
    let at = this.length;
    ws[at] = op;
    ws[at + 1] = slot;
    ws[at + 2] = ev[o + E_WORKER_LO];
    ws[at + 3] = ev[o + E_WORKER_HI];
    ws[at + 4] = ev[o + E_DP_RANK];
    ws[at + 5] = ev[o + E_ID_LO];
    ws[at + 6] = ev[o + E_ID_HI];
    ws[at + 7] = stamp >>> 0;
    ws[at + 8] = Math.floor(stamp / TWO32);
    ws[at + 9] = (restore ? FLAG_RESTORE : 0) | (explicit ? FLAG_EXPLICIT_SEQUENCE : 0);
    at += HEADER_WORDS;
    this.count++;
    const it = batch.items;
    const first = ev[o + E_FIRST] * ITEM_WORDS;
    if (op === OP_STORED) {
      ws[at++] = ev[o + E_HAS_PARENT];
      ws[at++] = ev[o + E_PARENT_LO];
      ws[at++] = ev[o + E_PARENT_HI];
      ws[at++] = n;
      if (explicit) {
        const seq = batch.sequences!;
        const s0 = ev[o + E_FIRST] * 2;
        for (let k = 0; k < n; k++) {
          ws.set(it.subarray(first + k * ITEM_WORDS, first + (k + 1) * ITEM_WORDS), at);
          ws[at + 4] = seq[s0 + k * 2];
          ws[at + 5] = seq[s0 + k * 2 + 1];
          at += 6;
        }
      } else {
        // Items are (external lo, hi, local lo, hi): the record's block layout already.
        ws.set(it.subarray(first, first + n * ITEM_WORDS), at);
        at += n * ITEM_WORDS;
      }
    } else if (op === OP_REMOVED) {
      ws[at++] = n;
      for (let k = 0; k < n; k++) {
        ws[at++] = it[first + k * ITEM_WORDS];
        ws[at++] = it[first + k * ITEM_WORDS + 1];
      }
    }
    this.length = at;
  }

  hashes(op: number, slot: number, w: WorkerKey, hashes: readonly bigint[], stamp: number): void {
    this.header(op, slot, w, 0n, stamp, 0, 1 + hashes.length * 2);
    this.words[this.length++] = hashes.length;
    for (const h of hashes) this.u64(h);
  }

  removeWorker(slot: number, workerId: bigint): void {
    this.header(OP_REMOVE_WORKER, slot, { workerId, dpRank: 0 }, 0n, 0, 0, 0);
  }
}

/** Length in words of the record at `o`. */
export function recordWords(w: Uint32Array, o: number): number {
  const op = w[o];
  if (op === OP_STORED) return HEADER_WORDS + 4 + w[o + HEADER_WORDS + 3] * ((w[o + 9] & FLAG_EXPLICIT_SEQUENCE) !== 0 ? 6 : 4);
  if (op === OP_CLEARED || op === OP_REMOVE_WORKER) return HEADER_WORDS;
  return HEADER_WORDS + 1 + w[o + HEADER_WORDS] * 2;
}

/** Stamps event `i` of a batch consumes: one per block it may store, plus one. */
/** Stamps events [from, to) of a batch consume together (one draw from a shared clock). */
export function stampsOfRange(batch: EventBatch, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) n += stampsOf(batch, i);
  return n;
}

export function stampsOf(batch: EventBatch, i: number): number {
  const o = i * EVENT_WORDS;
  return batch.events[o + E_KIND] === KIND_STORED ? batch.events[o + E_COUNT] + 1 : 1;
}

/** Stamps the record at `o` consumes: one per block it may store, plus one (stampsOf() of the event it was written from). */
export function recordStamps(w: Uint32Array, o: number): number {
  return w[o] === OP_STORED ? w[o + HEADER_WORDS + 3] + 1 : 1;
}

/**
 * Writes consecutive store stamps from `first` into the headers of `count`
 * records from word `o` (records written before their stamps were drawn: a
 * shard's prepared part of a split message gets them with its commit).
 */
export function restampRecords(w: Uint32Array, o: number, count: number, first: number): void {
  let stamp = first;
  for (let i = 0; i < count; i++, o += recordWords(w, o)) {
    w[o + 7] = stamp >>> 0;
    w[o + 8] = Math.floor(stamp / TWO32);
    stamp += recordStamps(w, o);
  }
}
