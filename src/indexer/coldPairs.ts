// Per-entry (lo, hi) hash pairs that only a few entries need (CompactCore's
// cold parent hashes and the local hashes that differ from their node's):
// a Map from entry to a slot of a pair array while few entries have one,
// then two dense per-entry arrays once more than `denseAt` do, since a Map
// entry costs several times the 8 bytes per entry of the dense arrays. The
// caller keeps which entries have a pair (a bit of its own per entry).

import { grown } from "../util/typedArrays.js";

export class ColdPairs {
  private readonly index = new Map<number, number>();
  private pairs = new Uint32Array(16);
  private free: number[] = [];
  private top = 0;
  /** Dense per-entry arrays (empty until more than denseAt entries have a pair). */
  private lo = new Uint32Array(0);
  private hi = new Uint32Array(0);
  /** get()'s answer. */
  outLo = 0;
  outHi = 0;

  /** `denseAt`: entries kept in the Map before the dense arrays (default an eighth of the entry capacity). */
  constructor(private readonly denseAt: number | undefined) {}

  /** Sets entry e's pair; `cap` is the entry capacity (the dense arrays' length). */
  set(e: number, lo: number, hi: number, cap: number): void {
    if (this.lo.length > 0) {
      this.lo[e] = lo;
      this.hi[e] = hi;
      return;
    }
    let i = this.index.get(e);
    if (i === undefined) {
      i = this.free.pop() ?? this.top++;
      if (2 * i + 2 > this.pairs.length) {
        this.pairs = grown(this.pairs, this.pairs.length * 2);
      }
      this.index.set(e, i);
    }
    this.pairs[2 * i] = lo;
    this.pairs[2 * i + 1] = hi;
    if (this.index.size > (this.denseAt ?? cap >>> 3)) this.densify(cap);
  }

  /** Forgets entry e's pair (it must have one). */
  drop(e: number): void {
    if (this.lo.length > 0) return;
    this.free.push(this.index.get(e)!);
    this.index.delete(e);
  }

  /** Entry e's pair into outLo, outHi (it must have one). */
  get(e: number): void {
    if (this.lo.length > 0) {
      this.outLo = this.lo[e];
      this.outHi = this.hi[e];
      return;
    }
    const i = this.index.get(e)!;
    this.outLo = this.pairs[2 * i];
    this.outHi = this.pairs[2 * i + 1];
  }

  /** The entry capacity grew to `cap`. */
  grow(cap: number): void {
    if (this.lo.length === 0) return;
    this.lo = grown(this.lo, cap);
    this.hi = grown(this.hi, cap);
  }

  /** Typed-array bytes (the Map is V8 heap). */
  bytes(): number {
    return this.pairs.byteLength + this.lo.byteLength + this.hi.byteLength;
  }

  private densify(cap: number): void {
    this.lo = new Uint32Array(cap);
    this.hi = new Uint32Array(cap);
    for (const [e, i] of this.index) {
      this.lo[e] = this.pairs[2 * i];
      this.hi[e] = this.pairs[2 * i + 1];
    }
    this.index.clear();
    this.pairs = new Uint32Array(0);
    this.free = [];
    this.top = 0;
  }
}
