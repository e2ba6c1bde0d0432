// Which workers an IngestKvEvents message names, read without decoding its
// blocks: the fields of each KvEvent are walked and the stored/removed
// payloads skipped whole. With index shard threads, the main thread uses it
// to send a message's raw bytes to the one shard that owns every worker it
// names (the shard then decodes, hashes and applies it). It only chooses a
// path: the shard checks every event it decodes against these pairs and
// hands the message back when one is missing, so a peek that misreads a
// strange message costs a detour, never a wrong answer.
import { WireReader } from "../protocols/wireReader.js";

/** Most distinct (worker, dp_rank) pairs a peeked message may name (an engine's publisher names one; a relay of a 64-rank fleet, 64). */
export const MAX_PEEKED_PAIRS = 64;

/** The pairs of the last peek: (worker lo, worker hi, dp_rank) words per pair. */
export class WorkerPeek {
  readonly words = new Uint32Array(MAX_PEEKED_PAIRS * 3);
  count = 0;
  private readonly r = new WireReader();

  /**
   * Reads the pairs `bytes` names; false when the message must take the
   * decoded path anyway: a clear (it also empties the lower tiers), a
   * storage tier, more than MAX_PEEKED_PAIRS pairs, or any irregularity.
   */
  peek(bytes: Uint8Array): boolean {
    const r = this.r;
    r.reset(bytes);
    this.count = 0;
    try {
      const end = bytes.length;
      while (r.pos < end) {
        const tag = r.tag(end);
        if (tag < 0) return false;
        if (tag === ((1 << 3) | 2)) {
          const len = r.length(end);
          if (len < 0 || !this.event(r.pos + len)) return false;
        } else if (!r.skip(tag & 7, end)) return false;
      }
      return true;
    } finally {
      r.release();
    }
  }

  private event(end: number): boolean {
    const r = this.r;
    let lo = 0;
    let hi = 0;
    let rank = 0;
    while (r.pos < end) {
      const tag = r.tag(end);
      if (tag < 0) return false;
      const field = tag >>> 3;
      const wt = tag & 7;
      if (wt === 0 && (field === 1 || field === 2)) {
        if (!r.varint(end)) return false;
        if (field === 1) {
          lo = r.lo;
          hi = r.hi;
        } else rank = r.lo;
      } else if (field === 6 || field === 7) return false; // a clear, a storage tier
      else if (!r.skip(wt, end)) return false;
    }
    return r.pos === end && this.add(lo, hi, rank);
  }

  private add(lo: number, hi: number, rank: number): boolean {
    const w = this.words;
    for (let i = 0; i < this.count * 3; i += 3) if (w[i] === lo && w[i + 1] === hi && w[i + 2] === rank) return true;
    if (this.count === MAX_PEEKED_PAIRS) return false;
    w[this.count * 3] = lo;
    w[this.count * 3 + 1] = hi;
    w[this.count * 3 + 2] = rank;
    this.count++;
    return true;
  }
}
