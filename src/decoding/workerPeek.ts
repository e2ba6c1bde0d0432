// Which workers an IngestKvEvents message names, read without decoding its
// blocks: the fields of each KvEvent are walked and the stored/removed
// payloads skipped whole. With index shard threads, the main thread uses it
// to send a message's raw bytes to the one shard that owns every worker it
// names, or, for a message naming workers of several shards (a relay), each
// shard only its own events' bytes (the shards then decode, hash and apply
// them). It only chooses a path: a shard checks every event it decodes
// against these pairs and hands the message back when one is missing, so a
// peek that misreads a strange message costs a detour, never a wrong answer.
import { WireReader } from "../protocols/wireReader.js";

/**
 * Most distinct (worker, dp_rank) pairs a peeked message may name (an
 * engine's publisher names one; a relay of a 64-rank fleet, 64). A message
 * naming more takes the decoded path. Bounded because each pair costs a
 * directory lookup here and a slot word in the shard's queue entry.
 */
export const MAX_PEEKED_PAIRS = 256;

/** Open-addressing buckets for finding a pair again (a power of two, at least twice the pairs). */
const BUCKETS = 512;

/**
 * The pairs of the last peek, and where each top-level field of the message
 * lies: an event (and which pair it names) or another field (`restore`,
 * unknown ones), which every part of a split message repeats.
 */
export class WorkerPeek {
  /** (worker lo, worker hi, dp_rank) words per pair, in order of first mention. */
  readonly words = new Uint32Array(MAX_PEEKED_PAIRS * 3);
  count = 0;
  /** Top-level fields of the last peek. */
  fields = 0;
  /** Per field: its first byte (its tag), its end, and the pair its event names or -1 (not an event). */
  fieldStart: Int32Array = new Int32Array(64);
  fieldEnd: Int32Array = new Int32Array(64);
  fieldPair: Int32Array = new Int32Array(64);
  private readonly r = new WireReader();
  /** Pair index + 1 per bucket (0: empty); `used` lists the buckets to clear before the next peek. */
  private readonly buckets = new Int16Array(BUCKETS);
  private readonly used = new Int16Array(MAX_PEEKED_PAIRS);

  /**
   * Reads the pairs `bytes` names; false when the message must take the
   * decoded path anyway: a clear (it also empties the lower tiers), a
   * storage tier, more than MAX_PEEKED_PAIRS pairs, or any irregularity.
   */
  peek(bytes: Uint8Array): boolean {
    const r = this.r;
    r.reset(bytes);
    for (let i = 0; i < this.count; i++) this.buckets[this.used[i]] = 0;
    this.count = 0;
    this.fields = 0;
    try {
      const end = bytes.length;
      while (r.pos < end) {
        const start = r.pos;
        const tag = r.tag(end);
        if (tag < 0) return false;
        let pair = -1;
        if (tag === ((1 << 3) | 2)) {
          const len = r.length(end);
          if (len < 0) return false;
          pair = this.event(r.pos + len);
          if (pair < 0) return false;
        } else if (!r.skip(tag & 7, end)) return false;
        this.field(start, r.pos, pair);
      }
      return true;
    } finally {
      r.release();
    }
  }

  /** The event ending at `end`: the index of the pair it names, or -1 when the message must take the decoded path. */
  private event(end: number): number {
    const r = this.r;
    let lo = 0;
    let hi = 0;
    let rank = 0;
    while (r.pos < end) {
      const tag = r.tag(end);
      if (tag < 0) return -1;
      const field = tag >>> 3;
      const wt = tag & 7;
      if (wt === 0 && (field === 1 || field === 2)) {
        if (!r.varint(end)) return -1;
        if (field === 1) {
          lo = r.lo;
          hi = r.hi;
        } else rank = r.lo;
      } else if (field === 6 || field === 7) return -1; // a clear, a storage tier
      else if (!r.skip(wt, end)) return -1;
    }
    return r.pos === end ? this.add(lo, hi, rank) : -1;
  }

  private add(lo: number, hi: number, rank: number): number {
    const w = this.words;
    let b = (Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) ^ Math.imul(rank, 0xc2b2ae35)) >>> 23; // 9 bits: BUCKETS
    for (;; b = (b + 1) & (BUCKETS - 1)) {
      const at = this.buckets[b] - 1;
      if (at < 0) break;
      if (w[at * 3] === lo && w[at * 3 + 1] === hi && w[at * 3 + 2] === rank) return at;
    }
    if (this.count === MAX_PEEKED_PAIRS) return -1;
    const at = this.count++;
    w[at * 3] = lo;
    w[at * 3 + 1] = hi;
    w[at * 3 + 2] = rank;
    this.buckets[b] = at + 1;
    this.used[at] = b;
    return at;
  }

  private field(start: number, end: number, pair: number): void {
    const n = this.fields++;
    if (n === this.fieldStart.length) {
      this.fieldStart = grown(this.fieldStart);
      this.fieldEnd = grown(this.fieldEnd);
      this.fieldPair = grown(this.fieldPair);
    }
    this.fieldStart[n] = start;
    this.fieldEnd[n] = end;
    this.fieldPair[n] = pair;
  }
}

function grown(a: Int32Array): Int32Array {
  const b = new Int32Array(a.length * 2);
  b.set(a);
  return b;
}
