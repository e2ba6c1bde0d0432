// The hot path of engine feeds: reads a vLLM/SGLang msgpack event batch
// straight from its bytes into an EventBatch (protocols/eventBatch.ts), with
// no object per event or block and no bigint. Token ids go into the
// WebAssembly hasher's memory and each stored event's blocks are hashed there
// in one call, as the gRPC ingest decoder does (decoding/ingestDecoder.ts).
//
// It takes the common case only: a batch (array or map encoding) of
// BlockStored / BlockRemoved events on the GPU with plain u32 token ids, no
// LoRA name, no multimodal extra keys, and the two skips that are counted
// but never logged (another KV cache group, a LoRA id without its name).
// Anything else — a clear, Eagle pairs, an offload tier or unknown medium, a
// LoRA name, extra keys that are not all scalars, a block size or token count
// that the converter would log, floats where ints go, 64-bit token ids, ext
// types, maps or deep values in fields it skips, non-ASCII strings where it
// reads strings, duplicate keys, truncation or trailing bytes, any event that
// would not decode — hands the payload back (undefined), and the caller runs
// decode.ts + convert.ts, which stay the reference for every answer, count,
// log line and bound. test/engineReader.property.test.ts demands that
// whenever this reader answers, it answers exactly what they would.
import { KV_HASH_SEED } from "../../hashing/blockHash.js";
import { type WasmHasher, createWasmHasher } from "../../hashing/wasmXxh3.js";
import {
  E_COUNT,
  E_DP_RANK,
  E_FIRST,
  E_HAS_PARENT,
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
import { MAIN_ATTENTION, OTHER_SPEC_KINDS, TIER_OF_MEDIUM } from "./convert.js";
import { type EngineKind, REMOVED_FIELDS, STORED_FIELDS } from "./decode.js";
import { FEED_COUNT_WORDS, FEED_OUTCOMES, FEED_TYPES } from "./feedCounts.js";

/** A payload read by the hot path: its batch (event ids 0: the caller numbers them) and dp_rank. */
export interface FlatEngineBatch {
  dpRank: number;
  batch: EventBatch;
}

// Event fields, by msgspec name (decode.ts's positional lists name them in order).
const EVENT_KEYS = [
  "type",
  "block_hashes",
  "parent_block_hash",
  "token_ids",
  "block_size",
  "lora_id",
  "medium",
  "lora_name",
  "extra_keys",
  "group_idx",
  "kv_cache_spec_kind",
] as const;
const F_TYPE = 0;
const F_BLOCK_HASHES = 1;
const F_PARENT = 2;
const F_TOKEN_IDS = 3;
const F_BLOCK_SIZE = 4;
const F_LORA_ID = 5;
const F_MEDIUM = 6;
const F_LORA_NAME = 7;
const F_EXTRA_KEYS = 8;
const F_GROUP_IDX = 9;
const F_SPEC_KIND = 10;
/** A field the reference does not read (SGLang's cache_salt, unknown keys, extra trailing items). */
const F_IGNORED = KEY_IGNORED;

const BATCH_KEYS = ["ts", "events", "data_parallel_rank", "attn_dp_rank", "dp_rank"] as const;
const B_TS = 0;
const B_EVENTS = 1;
/** decode.ts takes the first of data_parallel_rank, attn_dp_rank, dp_rank that is not nil. */
const B_FIRST_RANK = 2;

const EVENT_KEY_BYTES = EVENT_KEYS.map(ascii);
const BATCH_KEY_BYTES = BATCH_KEYS.map(ascii);
const TAG_STORED = ascii("BlockStored");
const TAG_REMOVED = ascii("BlockRemoved");
const MEDIUM_GPU = ascii("GPU");

/** Positional events: the field id of each item after the tag (decode.ts's order, per engine). */
const fieldIds = (names: readonly string[]) => names.map((n) => (EVENT_KEYS as readonly string[]).indexOf(n));
const STORED_POSITIONS: Record<EngineKind, number[]> = { vllm: fieldIds(STORED_FIELDS.vllm), sglang: fieldIds(STORED_FIELDS.sglang) };
const REMOVED_POSITIONS: Record<EngineKind, number[]> = { vllm: fieldIds(REMOVED_FIELDS.vllm), sglang: fieldIds(REMOVED_FIELDS.sglang) };

const SPEC_NONE = 0;
const SPEC_MAIN = 1;
const SPEC_OTHER = 2;


const TYPE_STORED = FEED_TYPES.indexOf("BlockStored");
const TYPE_REMOVED = FEED_TYPES.indexOf("BlockRemoved");
const OUT_CONVERTED = FEED_OUTCOMES.indexOf("converted");
const OUT_OTHER_GROUP = FEED_OUTCOMES.indexOf("other_group");
const OUT_LORA_ID = FEED_OUTCOMES.indexOf("lora_id_without_name");

export class EngineBatchReader extends MsgpackCursor {
  private readonly hasher: WasmHasher | undefined;
  private engine: EngineKind = "vllm";
  // Growable outputs.
  private events = new Uint32Array(16 * EVENT_WORDS);
  private items = new Uint32Array(256 * ITEM_WORDS);
  private count = 0;
  private itemCount = 0;
  /** The token space in the hasher's memory (one event's token ids at a time). */
  private tokens: Uint32Array = new Uint32Array(0);
  private readonly tally = new Int32Array(FEED_COUNT_WORDS);
  // The event being read.
  private seen = 0;
  private tag = -1;
  private blockHashes = -1;
  private hasParent = false;
  private parentLo = 0;
  private parentHi = 0;
  private tokenCount = -1;
  private eventBlockSize = -1;
  private loraId = 0;
  private groupIdx = 0;
  private spec = SPEC_NONE;
  // The batch's dp_rank candidates (-1: absent or nil).
  private readonly ranks = new Float64Array(BATCH_KEYS.length);

  constructor(private readonly blockSize: number) {
    super();
    try {
      this.hasher = createWasmHasher();
    } catch {
      this.hasher = undefined; // no WebAssembly: every payload takes the reference path
    }
  }

  /**
   * The payload's events as a flat batch for `workerId`, its counts added
   * to `counts` (FEED_COUNT_WORDS), or undefined (nothing added) when
   * decode.ts + convert.ts must take it. `transient`: the batch's arrays are
   * views of this reader's buffers, valid until its next read.
   */
  read(payload: Uint8Array, engine: EngineKind, workerId: bigint, defaultRank: number, counts: Int32Array, transient = false): FlatEngineBatch | undefined {
    if (this.hasher === undefined) return undefined;
    this.buf = payload;
    this.pos = 0;
    this.end = payload.length;
    this.engine = engine;
    this.count = 0;
    this.itemCount = 0;
    this.tally.fill(0);
    let dpRank: number;
    try {
      dpRank = this.batch(defaultRank);
    } catch (err) {
      if (err === HAND_BACK) return undefined;
      throw err;
    } finally {
      this.buf = new Uint8Array(0); // hold no payload between reads
    }
    const ev = this.events;
    const lo = Number(BigInt.asUintN(32, workerId));
    const hi = Number(BigInt.asUintN(32, workerId >> 32n));
    for (let o = 0; o < this.count * EVENT_WORDS; o += EVENT_WORDS) {
      ev[o + E_WORKER_LO] = lo;
      ev[o + E_WORKER_HI] = hi;
      ev[o + E_DP_RANK] = dpRank;
    }
    for (let i = 0; i < FEED_COUNT_WORDS; i++) counts[i] += this.tally[i];
    const events = ev.subarray(0, this.count * EVENT_WORDS);
    const items = this.items.subarray(0, this.itemCount * ITEM_WORDS);
    return {
      dpRank,
      batch: transient ? { count: this.count, events, items } : { count: this.count, events: events.slice(), items: items.slice() },
    };
  }

  /** The batch: [ts, events, dp_rank?, ...] or {ts, events, data_parallel_rank | attn_dp_rank | dp_rank}; returns the dp_rank. */
  private batch(defaultRank: number): number {
    this.ranks.fill(-1);
    const h = this.byte();
    if (isArrayHeader(h)) {
      const n = this.containerLength(h);
      if (n < 2) throw HAND_BACK;
      this.number();
      this.eventList();
      if (n >= 3 && !this.nil()) this.ranks[B_FIRST_RANK] = this.uint(0, 0xffff_ffff);
      for (let i = 3; i < n; i++) this.skip(SKIP_DEPTH);
    } else if (isMapHeader(h)) {
      const n = this.containerLength(h);
      let seen = 0;
      for (let i = 0; i < n; i++) {
        const key = this.mapKey(BATCH_KEY_BYTES, seen);
        if (key === KEY_IGNORED) continue;
        seen |= 1 << key;
        if (key === B_TS) this.number();
        else if (key === B_EVENTS) this.eventList();
        else if (!this.nil()) this.ranks[key] = this.uint(0, 0xffff_ffff);
      }
      if ((seen & 3) !== 3) throw HAND_BACK; // no ts or no events
    } else throw HAND_BACK;
    if (this.pos !== this.end) throw HAND_BACK; // trailing bytes: the reference refuses them
    for (let k = B_FIRST_RANK; k < BATCH_KEYS.length; k++) if (this.ranks[k] >= 0) return this.ranks[k];
    return defaultRank;
  }

  private eventList(): void {
    const n = this.arrayLength();
    for (let i = 0; i < n; i++) this.event();
  }

  /** One event: read, checked as decode.ts and convert.ts check it, and kept, counted as a quiet skip, or handed back. */
  private event(): void {
    this.seen = 0;
    this.tag = -1;
    this.blockHashes = -1;
    this.hasParent = false;
    this.tokenCount = -1;
    this.eventBlockSize = -1;
    this.loraId = 0;
    this.groupIdx = 0;
    this.spec = SPEC_NONE;
    const firstItem = this.itemCount;
    const h = this.byte();
    if (isArrayHeader(h)) {
      const n = this.containerLength(h);
      if (n === 0) throw HAND_BACK;
      this.tag = this.tagValue();
      const names = this.tag === KIND_STORED ? STORED_POSITIONS[this.engine] : REMOVED_POSITIONS[this.engine];
      for (let i = 1; i < n; i++) this.field(i - 1 < names.length ? names[i - 1] : F_IGNORED);
    } else if (isMapHeader(h)) {
      const n = this.containerLength(h);
      for (let i = 0; i < n; i++) {
        const key = this.mapKey(EVENT_KEY_BYTES, this.seen);
        if (key === KEY_IGNORED) continue;
        this.seen |= 1 << key;
        if (key === F_TYPE) this.tag = this.tagValue();
        else this.field(key);
      }
      if (this.tag < 0) throw HAND_BACK;
    } else throw HAND_BACK;
    // convert.ts's order: where the blocks live (medium: GPU only here, then the group), then size and count, then LoRA.
    if (this.blockHashes < 0) throw HAND_BACK;
    const type = this.tag === KIND_STORED ? TYPE_STORED : TYPE_REMOVED;
    const otherGroup = this.spec === SPEC_OTHER || this.spec === SPEC_NONE && this.groupIdx !== 0;
    if (this.tag === KIND_STORED) {
      if (this.blockHashes === 0 || this.eventBlockSize < 0 || this.tokenCount < 0) throw HAND_BACK;
      if (!otherGroup) {
        if (this.eventBlockSize !== this.blockSize || this.tokenCount !== this.blockHashes * this.blockSize) throw HAND_BACK;
        if (this.loraId !== 0) return this.quietSkip(type, OUT_LORA_ID, firstItem);
      }
    }
    if (otherGroup) return this.quietSkip(type, OUT_OTHER_GROUP, firstItem);
    if (this.tag === KIND_STORED) this.hashBlocks(firstItem);
    this.keep(this.tag, firstItem);
    this.tally[type * FEED_OUTCOMES.length + OUT_CONVERTED]++;
  }

  private quietSkip(type: number, outcome: number, firstItem: number): void {
    this.itemCount = firstItem;
    this.tally[type * FEED_OUTCOMES.length + outcome]++;
  }

  private keep(kind: number, firstItem: number): void {
    const need = (this.count + 1) * EVENT_WORDS;
    if (need > this.events.length) this.events = doubledFor(this.events, need);
    const ev = this.events;
    const o = this.count * EVENT_WORDS;
    ev.fill(0, o, o + EVENT_WORDS);
    ev[o + E_KIND] = kind;
    if (kind === KIND_STORED && this.hasParent) {
      ev[o + E_HAS_PARENT] = 1;
      ev[o + E_PARENT_LO] = this.parentLo;
      ev[o + E_PARENT_HI] = this.parentHi;
    }
    ev[o + E_FIRST] = firstItem;
    ev[o + E_COUNT] = this.itemCount - firstItem;
    this.count++;
  }

  /** Local hashes of the event's token blocks (in the token space from 0), one WebAssembly call. */
  private hashBlocks(firstItem: number): void {
    const n = this.blockHashes;
    const h = this.hasher!.hashLocals(0, n, this.blockSize, KV_HASH_SEED);
    const it = this.items;
    for (let j = 0, w = firstItem * ITEM_WORDS + 2; j < n; j++, w += ITEM_WORDS) {
      it[w] = h[2 * j];
      it[w + 1] = h[2 * j + 1];
    }
  }

  /** The event's tag: KIND_STORED or KIND_REMOVED; anything else (a clear, an unknown type) is handed back. */
  private tagValue(): number {
    const len = this.strLength();
    const at = this.pos;
    this.pos += len;
    if (this.equals(at, len, TAG_STORED)) return KIND_STORED;
    if (this.equals(at, len, TAG_REMOVED)) return KIND_REMOVED;
    throw HAND_BACK;
  }

  /** One field's value, read as decode.ts reads it (stricter: whatever it is unsure of is handed back). */
  private field(f: number): void {
    switch (f) {
      case F_BLOCK_HASHES:
        return this.hashList();
      case F_PARENT:
        if (this.nil()) return;
        this.hasParent = true;
        this.hash();
        this.parentLo = this.intLo;
        this.parentHi = this.intHi;
        return;
      case F_TOKEN_IDS:
        return this.tokenIds();
      case F_BLOCK_SIZE:
        if (!this.nil()) this.eventBlockSize = this.uint(1, 1 << 20);
        return;
      case F_LORA_ID:
        if (!this.nil()) this.loraId = this.uint(0, 0xffff_ffff);
        return;
      case F_MEDIUM: {
        if (this.nil()) return;
        const len = this.strLength();
        const at = this.pos;
        this.pos += len;
        if (!this.equals(at, len, MEDIUM_GPU) && TIER_OF_MEDIUM.get(this.asciiString(at, len)) !== "device") throw HAND_BACK;
        return;
      }
      case F_LORA_NAME:
        if (!this.nil()) throw HAND_BACK; // a LoRA seed: the reference hashes it
        return;
      case F_EXTRA_KEYS:
        return this.extraKeys();
      case F_GROUP_IDX:
        if (!this.nil()) this.groupIdx = this.uint(0, 0xffff_ffff);
        return;
      case F_SPEC_KIND: {
        if (this.nil()) return;
        const len = this.strLength();
        const at = this.pos;
        this.pos += len;
        const kind = this.asciiString(at, len);
        if (MAIN_ATTENTION.has(kind)) this.spec = SPEC_MAIN;
        else if (OTHER_SPEC_KINDS.has(kind)) this.spec = SPEC_OTHER;
        else throw HAND_BACK; // unknown_spec_kind is logged
        return;
      }
      case F_TYPE: // a positional "type" never comes here; a map's is read by event()
      default:
        return this.skip(SKIP_DEPTH);
    }
  }

  /** block_hashes into the items (external lo, hi; local 0, 0 until hashed). */
  private hashList(): void {
    const n = this.arrayLength();
    const need = (this.itemCount + n) * ITEM_WORDS;
    if (need > this.items.length) this.items = doubledFor(this.items, need);
    const it = this.items;
    // Written where this event's items begin: a map that names block_hashes later overwrites nothing kept (keys are unique).
    for (let i = 0, w = this.itemCount * ITEM_WORDS; i < n; i++, w += ITEM_WORDS) {
      this.hash();
      it[w] = this.intLo;
      it[w + 1] = this.intHi;
      it[w + 2] = 0;
      it[w + 3] = 0;
    }
    this.itemCount += n;
    this.blockHashes = n;
  }

  /** A u64 hash as decode.ts's toU64 reads it into intLo / intHi: any msgpack int (two's complement), or bytes (their last 8, big-endian). */
  private hash(): void {
    const h = this.byte();
    if (this.int64(h)) return;
    if (h === 0xc4 || h === 0xc5 || h === 0xc6) {
      const len = this.lengthOf(h === 0xc4 ? 1 : h === 0xc5 ? 2 : 4);
      if (len === 0) throw HAND_BACK; // empty bytes are a bad event
      this.need(len);
      const b = this.buf;
      const last = this.pos + len;
      let lo = 0;
      let hi = 0;
      for (let p = Math.max(this.pos, last - 8); p < last; p++) {
        hi = ((hi << 8) | (lo >>> 24)) >>> 0;
        lo = ((lo << 8) | b[p]) >>> 0;
      }
      this.intLo = lo;
      this.intHi = hi;
      this.pos = last;
    } else throw HAND_BACK; // floats, strings, nil, containers
  }

  /** token_ids into the token space from 0: u32 ints only (Eagle pairs, 64-bit ints, floats: handed back). */
  private tokenIds(): void {
    const n = this.arrayLength();
    if (n > this.tokens.length) this.tokens = this.hasher!.tokenSpace(Math.max(n, 2 * this.tokens.length, 1024), this.blockSize);
    const t = this.tokens;
    const b = this.buf;
    let p = this.pos;
    const end = this.end;
    for (let i = 0; i < n; i++) {
      const x = b[p++];
      if (x < 0x80) t[i] = x;
      else if (x === 0xcd) {
        if (p + 2 > end) throw HAND_BACK;
        t[i] = (b[p] << 8) | b[p + 1];
        p += 2;
      } else if (x === 0xce) {
        if (p + 4 > end) throw HAND_BACK;
        t[i] = ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
        p += 4;
      } else if (x === 0xcc) {
        if (p + 1 > end) throw HAND_BACK;
        t[i] = b[p++];
      } else if (x === 0xd0 || x === 0xd1 || x === 0xd2) {
        this.pos = p;
        const v = this.signedOf(x);
        if (v < 0) throw HAND_BACK; // not a token id
        t[i] = v;
        p = this.pos;
      } else throw HAND_BACK;
    }
    if (p > end) throw HAND_BACK;
    this.pos = p;
    this.tokenCount = n;
  }

  /** extra_keys: nil, or a list of scalars (nil per block in practice); lists that may hold multimodal digests are handed back. */
  private extraKeys(): void {
    if (this.nil()) return;
    const n = this.arrayLength();
    for (let i = 0; i < n; i++) this.skip(0);
  }
}
