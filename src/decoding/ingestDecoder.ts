// The hot path of IngestKvEvents: reads an IngestKvEventsRequest's protobuf
// wire bytes straight into an EventBatch. Token ids are decoded from their
// packed varints into WebAssembly memory and each event's blocks are hashed
// there in one call; hashes stay (lo, hi) u32 pairs; no object per block.
//
// It takes every wire form encoders emit: fields in any order, repeated
// scalars last-wins, packed or unpacked lists, unknown fields skipped.
// Anything else — a wrong wire type, groups, truncation, over-long or
// overflowing varints, invalid UTF-8 or non-ASCII LoRA names, a repeated
// oneof/sub-message, multimodal hashes, a field of the schema this decoder
// does not read, or any event that fails validation — returns undefined, and
// the caller decodes the message with protobuf-es (convert.ts), whose result
// or error message is then exactly what it always was. protobuf-es is the
// oracle: test/ingestDecoder.property.test.ts demands identical outcomes.
import { doubledFor } from "../util/typedArrays.js";
import type { DescMessage } from "@bufbuild/protobuf";
import {
  AllBlocksClearedSchema,
  BlocksRemovedSchema,
  BlocksStoredSchema,
  IngestKvEventsRequestSchema,
  KvEventSchema,
  StoredBlockSchema,
} from "../../gen/kvrouter/v1/router_pb.js";
import { KV_HASH_SEED, localBlockHash, localHashSeed } from "../hashing/blockHash.js";
import { type WasmHasher, createWasmHasher } from "../hashing/wasmXxh3.js";
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
  KIND_REMOVED,
  KIND_STORED,
} from "../protocols/eventBatch.js";
import { WireReader } from "../protocols/wireReader.js";

export interface DecodedIngest {
  batch: EventBatch;
  restore: boolean;
}

/**
 * Every field number of each message's schema: a field the decoder reaches
 * its skip step with is either unknown (skipped, as protobuf-es does) or one
 * the schema has but the decoder does not read in that wire type (a field
 * added to the proto later, or a wrong wire type): those go to protobuf-es.
 */
const known = (schema: DescMessage) => new Set(schema.fields.map((f) => f.number));
const KNOWN_REQUEST = known(IngestKvEventsRequestSchema);
const KNOWN_EVENT = known(KvEventSchema);
const KNOWN_STORED = known(BlocksStoredSchema);
const KNOWN_BLOCK = known(StoredBlockSchema);
const KNOWN_REMOVED = known(BlocksRemovedSchema);
const KNOWN_CLEARED = known(AllBlocksClearedSchema);

/** Thrown inside the decoder to hand the message to protobuf-es. */
const SLOW = new Error("slow path");

export class IngestDecoder {
  private readonly hasher: WasmHasher | undefined;
  private readonly seeds = new Map<string, bigint>([["", KV_HASH_SEED]]);
  private readonly r = new WireReader();
  // Growable outputs.
  private events = new Uint32Array(64 * EVENT_WORDS);
  private items = new Uint32Array(1024 * ITEM_WORDS);
  /** Per stored block: its token block in the token space, or -1 (tokens_hash). */
  private tokenBlockOf = new Int32Array(1024);
  private tokens: Uint32Array = new Uint32Array(0);
  /** This message's bytes are in the hasher's memory (loadMessage): packed token ids decode from there. */
  private messageLoaded = false;

  constructor(private readonly blockSize: number) {
    // The WebAssembly hasher takes every block size; without WebAssembly, the native hasher per block.
    try {
      this.hasher = createWasmHasher();
    } catch {
      this.hasher = undefined;
    }
  }

  /** The message's events, or undefined when protobuf-es must decode it (see the header). */
  /**
   * `transient`: the batch's arrays are views of this decoder's own buffers,
   * valid until its next decode (for a caller that applies the batch at once:
   * no copy, and no garbage per message).
   */
  decode(bytes: Uint8Array, transient = false): DecodedIngest | undefined {
    try {
      return this.decodeOrThrow(bytes, transient);
    } catch (err) {
      if (err === SLOW) return undefined;
      throw err;
    } finally {
      this.r.release();
    }
  }

  private decodeOrThrow(bytes: Uint8Array, transient: boolean): DecodedIngest {
    const r = this.r;
    r.reset(bytes);
    this.eventSeed.clear(); // a message handed back half-way may have left seeds
    // Each token takes at least one byte, so the message length bounds the token space.
    try {
      this.tokens = this.hasher ? this.hasher.tokenSpace(bytes.length, this.blockSize) : new Uint32Array(bytes.length);
      this.messageLoaded = false;
    } catch {
      throw SLOW; // no memory for the token space: protobuf-es decodes it
    }
    let restore = false;
    let count = 0;
    let items = 0;
    let tokenBlocks = 0;
    const end = bytes.length;
    while (this.r.pos < end) {
      const tag = this.tag(end);
      const field = tag >>> 3;
      const wt = tag & 7;
      if (field === 1 && wt === 2) {
        const len = this.length(end);
        if ((count + 1) * EVENT_WORDS > this.events.length) this.events = doubledFor(this.events, (count + 1) * EVENT_WORDS);
        const out = this.event(this.r.pos + len, count * EVENT_WORDS, items, tokenBlocks);
        items = out.items;
        tokenBlocks = out.tokenBlocks;
        count++;
      } else if (field === 2 && wt === 0) {
        this.varint(end);
        restore = this.r.lo !== 0 || this.r.hi !== 0;
      } else this.skipUnknown(field, wt, end, KNOWN_REQUEST);
    }
    this.hashEvents(count);
    return {
      batch: transient
        ? { count, events: this.events.subarray(0, count * EVENT_WORDS), items: this.items.subarray(0, items * ITEM_WORDS) }
        : { count, events: this.events.slice(0, count * EVENT_WORDS), items: this.items.slice(0, items * ITEM_WORDS) },
      restore,
    };
  }

  /** One KvEvent ending at `end`; its words at events[o..]; returns the item and token-block cursors. */
  private event(end: number, o: number, items: number, tokenBlocks: number): { items: number; tokenBlocks: number } {
    const ev = this.events;
    ev.fill(0, o, o + EVENT_WORDS);
    ev[o + E_FIRST] = items;
    let data = 0;
    while (this.r.pos < end) {
      const tag = this.tag(end);
      const field = tag >>> 3;
      const wt = tag & 7;
      if (wt === 0 && field <= 3) {
        this.varint(end);
        if (field === 1) {
          ev[o + E_WORKER_LO] = this.r.lo;
          ev[o + E_WORKER_HI] = this.r.hi;
        } else if (field === 2) ev[o + E_DP_RANK] = this.r.lo;
        else {
          ev[o + E_ID_LO] = this.r.lo;
          ev[o + E_ID_HI] = this.r.hi;
        }
      } else if (wt === 2 && field >= 4 && field <= 6) {
        if (data++ > 0) throw SLOW; // a oneof set twice: protobuf-es merges or replaces
        const len = this.length(end);
        const subEnd = this.r.pos + len;
        if (field === 4) {
          ev[o + E_KIND] = KIND_STORED;
          const out = this.stored(subEnd, o, items, tokenBlocks);
          items = out.items;
          tokenBlocks = out.tokenBlocks;
        } else if (field === 5) {
          ev[o + E_KIND] = KIND_REMOVED;
          items = this.removed(subEnd, items);
        } else {
          ev[o + E_KIND] = KIND_CLEARED;
          while (this.r.pos < subEnd) {
            const t = this.tag(subEnd);
            this.skipUnknown(t >>> 3, t & 7, subEnd, KNOWN_CLEARED);
          }
        }
        if (this.r.pos !== subEnd) throw SLOW;
      } else this.skipUnknown(field, wt, end, KNOWN_EVENT);
    }
    if (this.r.pos !== end || data === 0) throw SLOW;
    ev[o + E_COUNT] = items - ev[o + E_FIRST];
    return { items, tokenBlocks };
  }

  private stored(end: number, o: number, items: number, tokenBlocks: number): { items: number; tokenBlocks: number } {
    const ev = this.events;
    const first = items;
    let lora = "";
    while (this.r.pos < end) {
      const tag = this.tag(end);
      const field = tag >>> 3;
      const wt = tag & 7;
      if (field === 2 && wt === 2) {
        const len = this.length(end);
        tokenBlocks = this.block(this.r.pos + len, items++, tokenBlocks);
      } else if (field === 1 && wt === 0) {
        this.varint(end);
        ev[o + E_HAS_PARENT] = 1;
        ev[o + E_PARENT_LO] = this.r.lo;
        ev[o + E_PARENT_HI] = this.r.hi;
      } else if (field === 3 && wt === 2) {
        lora = this.ascii(this.length(end));
      } else this.skipUnknown(field, wt, end, KNOWN_STORED);
    }
    if (items === first) throw SLOW; // no blocks: protobuf-es + convert.ts say so
    if (lora !== "") {
      let seed = this.seeds.get(lora);
      if (seed === undefined) {
        if (this.seeds.size > 1024) this.seeds.clear();
        this.seeds.set(lora, (seed = localHashSeed(lora)));
      }
      this.eventSeed.set(o / EVENT_WORDS, seed);
    }
    return { items, tokenBlocks };
  }

  /** Seeds of events with a LoRA adapter (event index -> seed); others hash with the base seed. */
  private readonly eventSeed = new Map<number, bigint>();

  /** One StoredBlock ending at `end` into item `k`; returns the token-block cursor. */
  private block(end: number, k: number, tokenBlocks: number): number {
    this.roomForItem(k);
    const it = this.items;
    const w = k * ITEM_WORDS;
    it[w] = it[w + 1] = it[w + 2] = it[w + 3] = 0;
    const tokens = this.tokens;
    const start = tokenBlocks * this.blockSize;
    let t = start;
    let hasHash = false;
    const r = this.r;
    while (r.pos < end) {
      const tag = this.tag(end);
      const field = tag >>> 3;
      const wt = tag & 7;
      if (field === 2 && wt === 2) {
        // Packed token ids: the inner loop of ingest.
        const len = this.length(end);
        if (this.hasher !== undefined) {
          // Decoded in WebAssembly straight into the token space (WireReader's reading rules).
          if (!this.messageLoaded) this.messageLoaded = this.hasher.loadMessage(r.buf);
          t = this.messageLoaded ? this.hasher.packedTokensOfMessage(r.pos, r.pos + len, t) : this.hasher.packedTokens(r.buf, r.pos, r.pos + len, t);
          r.pos += len;
        } else t = r.packedU32(r.pos + len, tokens, t);
        if (t < 0) throw SLOW;
      } else if (field === 2 && wt === 0) {
        this.varint(end);
        if (t >= tokens.length) throw SLOW;
        tokens[t++] = this.r.lo;
      } else if (field === 1 && wt === 0) {
        this.varint(end);
        it[w] = this.r.lo;
        it[w + 1] = this.r.hi;
      } else if (field === 3 && wt === 0) {
        this.varint(end);
        hasHash = true;
        it[w + 2] = this.r.lo;
        it[w + 3] = this.r.hi;
      } else if (field === 4 && (wt === 0 || wt === 2)) {
        throw SLOW; // multimodal hashes: hashed natively by convert.ts
      } else this.skipUnknown(field, wt, end, KNOWN_BLOCK);
    }
    if (this.r.pos !== end) throw SLOW;
    const n = t - start;
    // Exactly one of token_ids (block_size of them) or tokens_hash, else convert.ts words the error.
    if (hasHash === n > 0 || (n > 0 && n !== this.blockSize)) throw SLOW;
    this.tokenBlockOf[k] = n > 0 ? tokenBlocks : -1;
    return n > 0 ? tokenBlocks + 1 : tokenBlocks;
  }

  private removed(end: number, items: number): number {
    while (this.r.pos < end) {
      const tag = this.tag(end);
      const field = tag >>> 3;
      const wt = tag & 7;
      if (field === 1 && (wt === 0 || wt === 2)) {
        let stop = end;
        if (wt === 2) {
          const len = this.length(end);
          stop = this.r.pos + len;
        }
        do {
          this.varint(stop);
          this.roomForItem(items);
          const w = items * ITEM_WORDS;
          this.items[w] = this.r.lo;
          this.items[w + 1] = this.r.hi;
          this.items[w + 2] = this.items[w + 3] = 0;
          this.tokenBlockOf[items++] = -1;
        } while (wt === 2 && this.r.pos < stop);
        if (wt === 2 && this.r.pos !== stop) throw SLOW;
      } else this.skipUnknown(field, wt, end, KNOWN_REMOVED);
    }
    return items;
  }

  private roomForItem(k: number): void {
    if ((k + 1) * ITEM_WORDS > this.items.length) this.items = doubledFor(this.items, (k + 1) * ITEM_WORDS);
    if (k + 1 > this.tokenBlockOf.length) this.tokenBlockOf = doubledFor(this.tokenBlockOf, k + 1);
  }

  /** Local hashes of every token block, one WebAssembly call per event. */
  private hashEvents(count: number): void {
    const ev = this.events;
    const it = this.items;
    const bs = this.blockSize;
    for (let e = 0; e < count; e++) {
      const o = e * EVENT_WORDS;
      if (ev[o + E_KIND] !== KIND_STORED) continue;
      const first = ev[o + E_FIRST];
      const n = ev[o + E_COUNT];
      let firstToken = -1;
      let blocks = 0;
      for (let k = first; k < first + n; k++) {
        if (this.tokenBlockOf[k] < 0) continue;
        if (firstToken < 0) firstToken = this.tokenBlockOf[k];
        blocks++;
      }
      if (blocks === 0) continue;
      const seed = this.eventSeed.get(e) ?? KV_HASH_SEED;
      if (this.hasher) {
        const h = this.hasher.hashLocals(firstToken * bs, blocks, bs, seed);
        for (let k = first, j = 0; k < first + n; k++) {
          if (this.tokenBlockOf[k] < 0) continue;
          it[k * ITEM_WORDS + 2] = h[2 * j];
          it[k * ITEM_WORDS + 3] = h[2 * j + 1];
          j++;
        }
      } else {
        for (let k = first; k < first + n; k++) {
          const tb = this.tokenBlockOf[k];
          if (tb < 0) continue;
          const v = localBlockHash(this.tokens.subarray(tb * bs, (tb + 1) * bs), seed);
          it[k * ITEM_WORDS + 2] = Number(v & 0xffffffffn);
          it[k * ITEM_WORDS + 3] = Number(v >> 32n);
        }
      }
    }
  }

  // ---- wire primitives (protocols/wireReader.ts; any irregularity: SLOW) -----

  private tag(end: number): number {
    const tag = this.r.tag(end);
    if (tag < 0) throw SLOW;
    return tag;
  }

  private length(end: number): number {
    const len = this.r.length(end);
    if (len < 0) throw SLOW;
    return len;
  }

  private varint(end: number): void {
    if (!this.r.varint(end)) throw SLOW;
  }

  /** A length-delimited ASCII string of `len` bytes (non-ASCII goes to protobuf-es's UTF-8 checks). */
  private ascii(len: number): string {
    const { buf, pos } = this.r;
    let s = "";
    for (let i = pos; i < pos + len; i++) {
      if (buf[i] > 0x7f) throw SLOW;
      s += String.fromCharCode(buf[i]);
    }
    this.r.pos += len;
    return s;
  }

  /** Skips a field the schema does not have; any field it has goes to protobuf-es. */
  private skipUnknown(field: number, wt: number, end: number, known: Set<number>): void {
    if (known.has(field) || !this.r.skip(wt, end)) throw SLOW;
  }
}

