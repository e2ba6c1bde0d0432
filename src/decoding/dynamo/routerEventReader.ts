// The hot path of Dynamo's event plane (core NATS and Dynamo's ZMQ plane):
// reads one EventEnvelope {topic, publisher_id, sequence, published_at,
// payload: bin} whose payload is a Vec<RouterEvent> (or one RouterEvent, or a
// bare RouterEvent with no envelope) straight into an EventBatch
// (protocols/eventBatch.ts): no object per event or block, no bigint; u64s are
// written as u32 halves of their two's complement, as the codec's u64()
// reinterprets signed values.
//
// It takes the common case only: stored events (tokens_hash blocks, a parent
// or none, start_position, mm_extra_info nil) and removals, on the device tier
// (storage_tier absent, nil or "device"), residency_domain absent or "worker",
// state_source absent or nil. Anything else — a clear, another tier, a
// cache-owner or unknown domain, floats or strings where ints go, dp_rank
// outside u32, maps or deep values in fields it skips, ext types, non-ASCII
// text it compares, repeated keys, a data map with more or other keys than one
// variant, truncation or trailing bytes — hands the message back (undefined),
// and protocols/routerEventCodec.ts (eventPlaneEvents) decodes it: it stays
// the reference for every event, skip, error and nesting bound.
// test/routerEventReader.property.test.ts demands that whenever this reader
// answers, its batch is word for word toEventBatch() of the reference's events.
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
  KIND_REMOVED,
  KIND_STORED,
} from "../../protocols/eventBatch.js";
import { doubledFor } from "../../util/typedArrays.js";
import { HAND_BACK, KEY_IGNORED, MsgpackCursor, SKIP_DEPTH, ascii, isArrayHeader, isMapHeader } from "../msgpackCursor.js";

const keys = (...names: string[]) => names.map(ascii);

// Field names by struct (Dynamo's serde names, lib/kv-router/src/protocols.rs; the envelope's in
// lib/runtime/src/transports/event_plane/traits.rs), and each one's index in its list.
// A RouterEvent's own keys at the top: read it as a bare RouterEvent (which must name worker_id, as the codec's test is).
const ENVELOPE_KEYS = keys("payload", "worker_id", "event", "storage_tier", "residency_domain", "state_source");
const V_PAYLOAD = 0;
const ROUTER_EVENT_KEYS = keys("worker_id", "event", "storage_tier", "residency_domain", "state_source");
const R_WORKER_ID = 0;
const R_EVENT = 1;
const R_TIER = 2;
const R_DOMAIN = 3;
const R_STATE_SOURCE = 4;
const EVENT_KEYS = keys("event_id", "data", "dp_rank");
const K_EVENT_ID = 0;
const K_DATA = 1;
const K_DP_RANK = 2;
const DATA_KEYS = keys("stored", "removed");
const D_STORED = 0;
const D_REMOVED = 1;
const STORED_KEYS = keys("blocks", "parent_hash", "start_position");
const S_BLOCKS = 0;
const S_PARENT = 1;
const S_START = 2;
const BLOCK_KEYS = keys("block_hash", "tokens_hash", "mm_extra_info");
const B_TOKENS_HASH = 1;
const B_MM = 2;
const REMOVED_KEYS = keys("block_hashes");
const DEVICE = ascii("device");
const WORKER = ascii("worker");

export class RouterEventReader extends MsgpackCursor {
  private events = new Uint32Array(16 * EVENT_WORDS);
  private items = new Uint32Array(256 * ITEM_WORDS);
  private count = 0;
  private itemCount = 0;

  /**
   * The message's events as a flat batch, or undefined when the codec must
   * decode it (the reader then wrote nothing the caller sees). The batch's
   * arrays are the caller's own (index threads may hold them after the call).
   */
  read(message: Uint8Array): EventBatch | undefined {
    this.buf = message;
    this.pos = 0;
    this.end = message.length;
    this.count = 0;
    this.itemCount = 0;
    try {
      this.message();
    } catch (err) {
      if (err === HAND_BACK) return undefined;
      throw err;
    } finally {
      this.buf = new Uint8Array(0); // hold no message between reads
    }
    return {
      count: this.count,
      events: this.events.slice(0, this.count * EVENT_WORDS),
      items: this.items.slice(0, this.itemCount * ITEM_WORDS),
    };
  }

  /** The envelope (or a bare RouterEvent: a top-level map naming worker_id, as the codec takes it). */
  private message(): void {
    const start = this.pos;
    const n = this.mapLength();
    let payloadAt = -1;
    let payloadEnd = -1;
    for (let i = 0; i < n; i++) {
      const key = this.key(ENVELOPE_KEYS);
      if (key > V_PAYLOAD) {
        this.pos = start;
        this.routerEvent();
        if (this.pos !== this.end) throw HAND_BACK;
        return;
      }
      if (key === V_PAYLOAD) {
        if (payloadAt >= 0) throw HAND_BACK; // a repeated key: the reference keeps the last
        const h = this.byte();
        if (h !== 0xc4 && h !== 0xc5 && h !== 0xc6) throw HAND_BACK;
        const len = this.lengthOf(h === 0xc4 ? 1 : h === 0xc5 ? 2 : 4);
        this.need(len);
        payloadAt = this.pos;
        payloadEnd = this.pos + len;
        this.pos = payloadEnd;
      } else this.skip(SKIP_DEPTH); // topic, publisher_id, sequence, published_at(_ns)
    }
    if (payloadAt < 0 || this.pos !== this.end) throw HAND_BACK; // no payload, or trailing bytes
    // The payload: a list of RouterEvents, or one.
    this.pos = payloadAt;
    this.end = payloadEnd;
    const h = this.buf[this.pos];
    if (isArrayHeader(h)) {
      const count = this.arrayLength();
      for (let i = 0; i < count; i++) this.routerEvent();
    } else if (isMapHeader(h)) this.routerEvent();
    else throw HAND_BACK;
    if (this.pos !== this.end) throw HAND_BACK;
  }

  /** One RouterEvent map: its event's words, with the worker id written once the map is read (any key order). */
  private routerEvent(): void {
    const n = this.mapLength();
    let seen = 0;
    let workerLo = 0;
    let workerHi = 0;
    const at = this.count;
    for (let i = 0; i < n; i++) {
      const key = this.mapKey(ROUTER_EVENT_KEYS, seen);
      if (key === KEY_IGNORED) continue;
      seen |= 1 << key;
      switch (key) {
        case R_WORKER_ID:
          if (!this.int64(this.byte())) throw HAND_BACK;
          workerLo = this.intLo;
          workerHi = this.intHi;
          break;
        case R_EVENT:
          this.event();
          break;
        case R_TIER:
          // Absent or nil is serde's default, the device tier; the others go to the lower tiers.
          if (!this.nil() && !this.strIs(DEVICE)) throw HAND_BACK;
          break;
        case R_DOMAIN:
          // Absent (legacy) or worker; cache_owner, nil or unknown values are the codec's skips.
          if (!this.strIs(WORKER)) throw HAND_BACK;
          break;
        case R_STATE_SOURCE:
          if (!this.nil()) throw HAND_BACK; // a cache owner's stream
          break;
      }
    }
    if ((seen & ((1 << R_WORKER_ID) | (1 << R_EVENT))) !== ((1 << R_WORKER_ID) | (1 << R_EVENT))) throw HAND_BACK;
    const o = at * EVENT_WORDS;
    this.events[o + E_WORKER_LO] = workerLo;
    this.events[o + E_WORKER_HI] = workerHi;
  }

  /** KvCacheEvent {event_id, data, dp_rank}: one event's words (worker id left to routerEvent()). */
  private event(): void {
    const n = this.mapLength();
    let seen = 0;
    let idLo = 0;
    let idHi = 0;
    let dpRank = 0;
    let kind = -1;
    let hasParent = 0;
    let parentLo = 0;
    let parentHi = 0;
    const first = this.itemCount;
    for (let i = 0; i < n; i++) {
      const key = this.mapKey(EVENT_KEYS, seen);
      if (key === KEY_IGNORED) continue;
      seen |= 1 << key;
      if (key === K_EVENT_ID) {
        if (!this.int64(this.byte())) throw HAND_BACK;
        idLo = this.intLo;
        idHi = this.intHi;
      } else if (key === K_DP_RANK) {
        if (!this.nil()) dpRank = this.uint(0, 0xffff_ffff);
      } else {
        // data: {"stored": {...}} or {"removed": {...}}, nothing else ("cleared" and the rest are the codec's).
        if (this.mapLength() !== 1) throw HAND_BACK;
        kind = this.key(DATA_KEYS);
        if (kind === D_STORED) {
          const parent = this.stored();
          if (parent) {
            hasParent = 1;
            parentLo = this.intLo;
            parentHi = this.intHi;
          }
        } else if (kind === D_REMOVED) this.removed();
        else throw HAND_BACK;
      }
    }
    if ((seen & ((1 << K_EVENT_ID) | (1 << K_DATA))) !== ((1 << K_EVENT_ID) | (1 << K_DATA))) throw HAND_BACK;
    const need = (this.count + 1) * EVENT_WORDS;
    if (need > this.events.length) this.events = doubledFor(this.events, need);
    const ev = this.events;
    const o = this.count * EVENT_WORDS;
    ev[o + E_KIND] = kind === D_STORED ? KIND_STORED : KIND_REMOVED;
    ev[o + E_WORKER_LO] = 0;
    ev[o + E_WORKER_HI] = 0;
    ev[o + E_DP_RANK] = dpRank;
    ev[o + E_ID_LO] = idLo;
    ev[o + E_ID_HI] = idHi;
    ev[o + E_HAS_PARENT] = hasParent;
    ev[o + E_PARENT_LO] = parentLo;
    ev[o + E_PARENT_HI] = parentHi;
    ev[o + E_FIRST] = first;
    ev[o + E_COUNT] = this.itemCount - first;
    this.count++;
  }

  /** KvCacheStoreData: blocks into the items; true (the parent in intLo / intHi) when it names a parent. */
  private stored(): boolean {
    const n = this.mapLength();
    let seen = 0;
    let parent = false;
    let parentLo = 0;
    let parentHi = 0;
    for (let i = 0; i < n; i++) {
      const key = this.mapKey(STORED_KEYS, seen);
      if (key === KEY_IGNORED) continue;
      seen |= 1 << key;
      if (key === S_BLOCKS) this.blocks();
      else if (key === S_PARENT) {
        if (this.nil()) continue;
        if (!this.int64(this.byte())) throw HAND_BACK;
        parent = true;
        parentLo = this.intLo;
        parentHi = this.intHi;
      } else if (key === S_START && !this.nil()) this.uint(0, 0xffff_ffff); // checked as the codec checks it, not used
    }
    if (!(seen & (1 << S_BLOCKS))) throw HAND_BACK;
    this.intLo = parentLo;
    this.intHi = parentHi;
    return parent;
  }

  /** The blocks list: (block_hash, tokens_hash) per block into the items. */
  private blocks(): void {
    const n = this.arrayLength();
    const need = (this.itemCount + n) * ITEM_WORDS;
    if (need > this.items.length) this.items = doubledFor(this.items, need);
    for (let j = 0; j < n; j++) {
      const m = this.mapLength();
      let seen = 0;
      const w = this.itemCount * ITEM_WORDS;
      for (let i = 0; i < m; i++) {
        const key = this.mapKey(BLOCK_KEYS, seen);
        if (key === KEY_IGNORED) continue;
        seen |= 1 << key;
        if (key === B_MM) {
          if (!this.nil()) throw HAND_BACK; // multimodal metadata: maps the reader does not walk
          continue;
        }
        if (!this.int64(this.byte())) throw HAND_BACK;
        const at = key === B_TOKENS_HASH ? w + 2 : w;
        this.items[at] = this.intLo;
        this.items[at + 1] = this.intHi;
      }
      if ((seen & 3) !== 3) throw HAND_BACK; // block_hash (0) and tokens_hash (1) are required
      this.itemCount++;
    }
  }

  /** KvCacheRemoveData: block_hashes into the items (lo, hi, 0, 0). */
  private removed(): void {
    const n = this.mapLength();
    let seen = 0;
    for (let i = 0; i < n; i++) {
      if (this.mapKey(REMOVED_KEYS, seen) === KEY_IGNORED) continue; // block_hashes (0) otherwise
      seen = 1;
      const count = this.arrayLength();
      const need = (this.itemCount + count) * ITEM_WORDS;
      if (need > this.items.length) this.items = doubledFor(this.items, need);
      const it = this.items;
      for (let j = 0, w = this.itemCount * ITEM_WORDS; j < count; j++, w += ITEM_WORDS) {
        if (!this.int64(this.byte())) throw HAND_BACK;
        it[w] = this.intLo;
        it[w + 1] = this.intHi;
        it[w + 2] = 0;
        it[w + 3] = 0;
      }
      this.itemCount += count;
    }
    if (!seen) throw HAND_BACK;
  }
}

let shared: RouterEventReader | undefined;

/** The process's (or thread's) reader: one is enough, a read holds nothing after it returns. */
export function routerEventReader(): RouterEventReader {
  return (shared ??= new RouterEventReader());
}
