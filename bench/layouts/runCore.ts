// Layout experiment (issue 21 §2), bench only: a "run" layout, the edge
// compression of Dynamo's concurrent radix tree without its splits.
//
// Blocks ("positions") live in one array in chain order: a chain stored by
// one event takes consecutive positions, so a block's child along that chain
// is the next position. Only the first position of a run (a "head": a root
// block, or a child that did not land right after its parent) goes into a
// hash table; every other position is found from its parent by comparing the
// next position's key. A stored chain costs one head-table probe (to place
// its first new block) instead of one node-table probe per block, and a
// query walks a run comparing consecutive words.
//
// Two key modes:
// - "seq": positions are keyed by the block's sequence hash (what CompactCore
//   keys nodes by): ingest chains sequence hashes as today, and find_matches
//   takes sequence hashes. A sequence hash names its whole prefix, so a next
//   position whose hash matches is the block, head or not.
// - "local": positions are keyed by the local hash, heads by (parent
//   position, local hash), as a radix tree is: ingest computes no sequence
//   hash (what Dynamo's trees and its positional indexer avoid), and
//   find_matches takes the prompt's local hashes. A next position matches
//   only when it is not a head (a head there belongs to another parent).
//
// Holders are a 64-bit bitset per position (slots 0-63: the bench fleet).
// A position whose last holder leaves stays in place with its key (it can be
// revived by a later store of the same block); nothing reclaims dead
// positions here (see docs/indexer.md for what the engine would need).
// Entries per (slot, external hash) are as in CompactCore: an open-addressing
// table, a per-slot list in insertion order (eviction and dump read it), a
// parent-mode byte; store stamps are not kept (the bench runs no eviction).
import { seqHash32, seqOut } from "../../src/hashing/sequence.js";
import {
  HEADER_WORDS,
  OP_CLEARED,
  OP_REMOVED,
  OP_REMOVE_WORKER,
  OP_STORED,
  OUTCOME_PARENT_NOT_FOUND,
  OUTCOME_STALE,
  recordWords,
} from "../../src/indexer/records.js";

const TWO32 = 4294967296;
const NO_PARENT = 0xffffffff;

function mix(a: number, b: number, c: number): number {
  let h = Math.imul(a ^ Math.imul(b, 0x9e3779b1) ^ Math.imul(c, 0x85ebca77), 0xc2b2ae3d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x27d4eb2f);
  return (h ^ (h >>> 13)) >>> 0;
}

function grown<T extends Uint32Array | Int32Array | Uint16Array | Uint8Array>(a: T, n: number): T {
  const b = new (a.constructor as new (n: number) => T)(n);
  b.set(a);
  return b;
}

/** An open-addressing table of u32 buckets: (hash tag << bits) | (value + 1), 0 empty; home = hash scaled to the size. */
class Table {
  tab = new Uint32Array(0);
  bits = 0;
  scale = 0;
  live = 0;
  /** Where the last miss stopped, and the key's hash. */
  missBucket = 0;
  missHash = 0;

  constructor(buckets: number) {
    this.resize(buckets);
  }

  /** `values`: how many distinct values the buckets must hold (the index bits; the rest are hash tag). */
  resize(buckets: number, values = buckets): void {
    this.tab = new Uint32Array(buckets);
    this.bits = 32 - Math.clz32(Math.max(buckets, values));
    this.scale = buckets / TWO32;
  }

  put(v: number, h: number): void {
    const tab = this.tab;
    let b = (h * this.scale) >>> 0;
    while (tab[b] !== 0) b = b + 1 === tab.length ? 0 : b + 1;
    tab[b] = (h << this.bits) | (v + 1);
  }

  /** Backward-shift removal of `v` whose hash is `h`; `hashOf` gives the hash of another value. */
  remove(v: number, h: number, hashOf: (v: number) => number): void {
    const tab = this.tab;
    const size = tab.length;
    const idx = (1 << this.bits) - 1;
    let i = (h * this.scale) >>> 0;
    while ((tab[i] & idx) !== v + 1) i = i + 1 === size ? 0 : i + 1;
    let j = i;
    for (;;) {
      j = j + 1 === size ? 0 : j + 1;
      const x = tab[j];
      if (x === 0) break;
      const home = (hashOf((x & idx) - 1) * this.scale) >>> 0;
      if (i <= j ? i < home && home <= j : i < home || home <= j) continue;
      tab[i] = x;
      i = j;
    }
    tab[i] = 0;
    this.live--;
  }
}

export type KeyMode = "seq" | "local";

export class RunCore {
  // positions
  private pTop = 0;
  private pKeyLo = new Uint32Array(0);
  private pKeyHi = new Uint32Array(0);
  /** seq mode: the local hash (dump reads it), as CompactCore keeps it on the node. */
  private pLocLo = new Uint32Array(0);
  private pLocHi = new Uint32Array(0);
  /** local mode: a head's parent position (NO_PARENT for a root); -2 for a non-head (its parent is the position before). */
  private pUp = new Int32Array(0);
  /** Holder bitset of slots 0-63, two words per position. */
  private hw = new Uint32Array(0);
  private heads!: Table;
  positions = 0;
  headCount = 0;

  // entries
  private eCap = 0;
  private eTop = 0;
  private eFree = -1;
  private eExtLo = new Uint32Array(0);
  private eExtHi = new Uint32Array(0);
  private ePos = new Int32Array(0);
  private eSlot = new Uint16Array(0);
  private ePrev = new Int32Array(0);
  private eNext = new Int32Array(0);
  /** Parent mode (none / list predecessor / cold), as CompactCore keeps it. */
  private eMeta = new Uint8Array(0);
  private readonly coldParents = new Map<number, bigint>();
  private readonly entriesTab: Table;
  entries = 0;
  /** (position * 64 + slot) -> extra holds of one block through several external hashes. */
  private readonly extra = new Map<number, number>();

  // per slot
  private readonly head = new Int32Array(64).fill(-1);
  private readonly tail = new Int32Array(64).fill(-1);
  private readonly exists = new Uint8Array(64);
  private readonly hasLast = new Uint8Array(64);
  private readonly lastLo = new Uint32Array(64);
  private readonly lastHi = new Uint32Array(64);
  readonly count = new Int32Array(64);

  /** find_matches answers: slot and depth, `matched` of them. */
  readonly foundSlot = new Int32Array(64);
  readonly foundDepth = new Int32Array(64);
  private readonly local: boolean;

  /** Reads an event's entry-table buckets in one pass before storing its blocks (see touchBuckets). */
  private readonly touch: boolean;
  /** Keeps touchBuckets' loads from being optimised away. */
  sink = 0;

  constructor(
    readonly mode: KeyMode,
    initialEntries: number,
    opts: { touch?: boolean } = {},
  ) {
    this.local = mode === "local";
    this.touch = opts.touch === true;
    this.growEntries(Math.max(16, initialEntries));
    this.growPositions(Math.max(16, initialEntries >>> 1));
    this.entriesTab = new Table(Math.max(32, Math.ceil((initialEntries * 4) / 3) + 2));
    this.heads = new Table(Math.max(32, Math.ceil(initialEntries / 8)));
    this.heads.resize(this.heads.tab.length, this.pKeyLo.length + 1);
  }

  // ---- records -----------------------------------------------------------

  applyRecords(w: Uint32Array, count: number, out: Int32Array): void {
    for (let i = 0, o = 0; i < count; i++, o += recordWords(w, o)) out[i] = this.applyOne(w, o);
  }

  private applyOne(w: Uint32Array, o: number): number {
    const op = w[o];
    const slot = w[o + 1];
    if (slot >= 64) throw new RangeError("the prototype keeps a 64-bit holder bitset: slots 0-63");
    if (op === OP_REMOVE_WORKER) {
      const n = this.clearSlot(slot);
      this.exists[slot] = 0;
      this.hasLast[slot] = 0;
      return n;
    }
    if (op !== OP_STORED && op !== OP_REMOVED && op !== OP_CLEARED) throw new Error(`op ${op} is not in the bench workload`);
    const exists = this.exists[slot] === 1;
    const b = o + HEADER_WORDS;
    const eLo = w[o + 5];
    const eHi = w[o + 6];
    let gap = 0;
    const hasLast = exists && this.hasLast[slot] === 1;
    if (hasLast) {
      const lLo = this.lastLo[slot];
      const lHi = this.lastHi[slot];
      if (!(eHi > lHi || (eHi === lHi && eLo > lLo))) return OUTCOME_STALE;
      const nLo = (lLo + 1) >>> 0;
      const nHi = nLo === 0 ? (lHi + 1) >>> 0 : lHi;
      gap = eLo === nLo && eHi === nHi ? 0 : 1;
    }
    let parentPos = -1;
    if (op === OP_STORED && w[b] === 1) {
      const pe = exists ? this.findEntry(slot, w[b + 1], w[b + 2]) : -1;
      if (pe < 0) return OUTCOME_PARENT_NOT_FOUND | (gap << 2);
      parentPos = this.ePos[pe];
    }
    if (!exists) {
      this.exists[slot] = 1;
      this.head[slot] = -1;
      this.tail[slot] = -1;
      this.count[slot] = 0;
    }
    this.lastLo[slot] = eLo;
    this.lastHi[slot] = eHi;
    this.hasLast[slot] = 1;
    if (op === OP_STORED) {
      if (this.local) this.storedLocal(slot, w, b, parentPos);
      else this.storedSeq(slot, w, b, parentPos);
      return gap << 2;
    }
    if (op === OP_REMOVED) {
      const n = w[b];
      let unknown = 0;
      for (let i = 0; i < n; i++) {
        const e = this.findEntry(slot, w[b + 1 + 2 * i], w[b + 2 + 2 * i]);
        if (e < 0) unknown++;
        else this.release(e);
      }
      return (gap << 2) | (unknown << 3);
    }
    this.clearSlot(slot);
    return gap << 2;
  }

  /**
   * Loads the home bucket of every block's entry before the store loop: the
   * loads are independent, so the CPU keeps many cache misses in flight, and
   * the probes in the loop then hit the cache (a prefetch, in plain JavaScript).
   */
  private touchBuckets(slot: number, w: Uint32Array, b: number): void {
    const t = this.entriesTab;
    const tab = t.tab;
    const scale = t.scale;
    let acc = 0;
    const n = w[b + 3];
    for (let i = 0, q = b + 4; i < n; i++, q += 4) acc |= tab[(mix(w[q], w[q + 1], slot) * scale) >>> 0];
    this.sink = acc;
  }

  private storedSeq(slot: number, w: Uint32Array, b: number, parentPos: number): void {
    if (this.touch) this.touchBuckets(slot, w, b);
    let hasParent = w[b] === 1;
    let pLo = w[b + 1];
    let pHi = w[b + 2];
    let chained = parentPos >= 0;
    let sLo = chained ? this.pKeyLo[parentPos] : 0;
    let sHi = chained ? this.pKeyHi[parentPos] : 0;
    let prev = parentPos;
    const n = w[b + 3];
    for (let i = 0, q = b + 4; i < n; i++, q += 4) {
      const xLo = w[q];
      const xHi = w[q + 1];
      const lo = w[q + 2];
      const hi = w[q + 3];
      if (chained) {
        seqHash32(sLo, sHi, lo, hi);
        sLo = seqOut.lo;
        sHi = seqOut.hi;
      } else {
        sLo = lo;
        sHi = hi;
        chained = true;
      }
      const held = this.findEntry(slot, xLo, xHi);
      if (held >= 0) prev = this.ePos[held]; // duplicate store: idempotent
      else {
        const e = this.newEntry(slot, xLo, xHi, hasParent, pLo, pHi);
        // The block: the next position along the run, else a head, else a new position.
        const next = prev + 1;
        let p: number;
        if (prev >= 0 && next < this.pTop && this.pKeyLo[next] === sLo && this.pKeyHi[next] === sHi) p = next;
        else {
          p = this.findHeadSeq(sLo, sHi);
          if (p < 0) {
            p = this.newPosition(sLo, sHi);
            this.pLocLo[p] = lo;
            this.pLocHi[p] = hi;
            // Right after its parent: found from it; anywhere else: a head.
            if (prev < 0 || p !== next) this.addHead(p, mix(sLo, sHi, 0));
          }
        }
        this.hold(e, p, slot);
        prev = p;
      }
      hasParent = true;
      pLo = xLo;
      pHi = xHi;
    }
  }

  private storedLocal(slot: number, w: Uint32Array, b: number, parentPos: number): void {
    if (this.touch) this.touchBuckets(slot, w, b);
    let hasParent = w[b] === 1;
    let pLo = w[b + 1];
    let pHi = w[b + 2];
    let prev = parentPos;
    const n = w[b + 3];
    for (let i = 0, q = b + 4; i < n; i++, q += 4) {
      const xLo = w[q];
      const xHi = w[q + 1];
      const lo = w[q + 2];
      const hi = w[q + 3];
      const held = this.findEntry(slot, xLo, xHi);
      if (held >= 0) prev = this.ePos[held];
      else {
        const e = this.newEntry(slot, xLo, xHi, hasParent, pLo, pHi);
        const next = prev + 1;
        let p: number;
        if (prev >= 0 && next < this.pTop && this.pUp[next] === -2 && this.pKeyLo[next] === lo && this.pKeyHi[next] === hi) p = next;
        else {
          const up = prev < 0 ? NO_PARENT : prev;
          p = this.findHeadLocal(up, lo, hi);
          if (p < 0) {
            p = this.newPosition(lo, hi);
            if (prev < 0 || p !== next) {
              this.pUp[p] = prev;
              this.addHead(p, mix(lo, hi, up));
            } else this.pUp[p] = -2;
          }
        }
        this.hold(e, p, slot);
        prev = p;
      }
      hasParent = true;
      pLo = xLo;
      pHi = xHi;
    }
  }

  // ---- find_matches --------------------------------------------------------

  /**
   * Per slot, how many leading blocks of `h` (n (lo, hi) pairs: sequence
   * hashes in seq mode, local hashes in local mode) it holds; answers in
   * foundSlot/foundDepth, returns their count.
   */
  findMatches(h: Uint32Array, n: number): number {
    if (n === 0) return 0;
    const local = this.local;
    let p = local ? this.findHeadLocal(NO_PARENT, h[0], h[1]) : this.findHeadSeq(h[0], h[1]);
    if (p < 0) return 0;
    const hw = this.hw;
    const kLo = this.pKeyLo;
    const kHi = this.pKeyHi;
    const up = this.pUp;
    let a0 = hw[2 * p];
    let a1 = hw[2 * p + 1];
    let matched = 0;
    let depth = 1;
    for (; depth < n && (a0 | a1) !== 0; depth++) {
      const lo = h[2 * depth];
      const hi = h[2 * depth + 1];
      const next = p + 1;
      if (next < this.pTop && kLo[next] === lo && kHi[next] === hi && (!local || up[next] === -2)) p = next;
      else {
        p = local ? this.findHeadLocal(p, lo, hi) : this.findHeadSeq(lo, hi);
        if (p < 0) break;
      }
      const k0 = a0 & hw[2 * p];
      const k1 = a1 & hw[2 * p + 1];
      if ((a0 ^ k0) !== 0) matched = this.lose((a0 ^ k0) >>> 0, 0, depth, matched);
      if ((a1 ^ k1) !== 0) matched = this.lose((a1 ^ k1) >>> 0, 32, depth, matched);
      a0 = k0;
      a1 = k1;
    }
    matched = this.lose(a0 >>> 0, 0, depth, matched);
    return this.lose(a1 >>> 0, 32, depth, matched);
  }

  private lose(x: number, base: number, depth: number, matched: number): number {
    while (x !== 0) {
      const low = x & -x;
      this.foundSlot[matched] = base + 31 - Math.clz32(low);
      this.foundDepth[matched++] = depth;
      x = (x ^ low) >>> 0;
    }
    return matched;
  }

  // ---- positions and heads ---------------------------------------------------

  private newPosition(lo: number, hi: number): number {
    if (this.pTop === this.pKeyLo.length) this.growPositions(Math.ceil(this.pTop * 1.25) + 16);
    const p = this.pTop++;
    this.pKeyLo[p] = lo;
    this.pKeyHi[p] = hi;
    this.positions++;
    return p;
  }

  private growPositions(cap: number): void {
    this.pKeyLo = grown(this.pKeyLo, cap);
    this.pKeyHi = grown(this.pKeyHi, cap);
    if (this.local) this.pUp = grown(this.pUp, cap);
    else {
      this.pLocLo = grown(this.pLocLo, cap);
      this.pLocHi = grown(this.pLocHi, cap);
    }
    this.hw = grown(this.hw, cap * 2);
    const t = this.heads;
    if (t !== undefined && cap + 1 > 1 << t.bits) this.rehashHeads(t.tab.length);
  }

  private addHead(p: number, h: number): void {
    const t = this.heads;
    if ((t.live + 1) * 4 > t.tab.length * 3) this.rehashHeads(Math.ceil(t.tab.length * 1.5) + 16);
    t.put(p, h);
    t.live++;
    this.headCount++;
  }

  /** Heads hold positions, not table indices: the index bits follow the position capacity. */
  private rehashHeads(buckets: number): void {
    const t = this.heads;
    const old = t.tab;
    const idx = (1 << t.bits) - 1;
    t.resize(buckets, this.pKeyLo.length + 1);
    for (const x of old) if (x !== 0) t.put((x & idx) - 1, this.headHash((x & idx) - 1));
  }

  private headHash(p: number): number {
    return this.local ? mix(this.pKeyLo[p], this.pKeyHi[p], this.pUp[p] < 0 ? NO_PARENT : this.pUp[p]) : mix(this.pKeyLo[p], this.pKeyHi[p], 0);
  }

  private findHeadSeq(lo: number, hi: number): number {
    const t = this.heads;
    const tab = t.tab;
    const size = tab.length;
    const bits = t.bits;
    const idx = (1 << bits) - 1;
    const h = mix(lo, hi, 0);
    const tag = h << bits;
    for (let b = (h * t.scale) >>> 0; ; b = b + 1 === size ? 0 : b + 1) {
      const v = tab[b];
      if (v === 0) return -1;
      if (((v ^ tag) & ~idx) === 0) {
        const p = (v & idx) - 1;
        if (this.pKeyLo[p] === lo && this.pKeyHi[p] === hi) return p;
      }
    }
  }

  private findHeadLocal(up: number, lo: number, hi: number): number {
    const t = this.heads;
    const tab = t.tab;
    const size = tab.length;
    const bits = t.bits;
    const idx = (1 << bits) - 1;
    const h = mix(lo, hi, up);
    const tag = h << bits;
    const want = up === NO_PARENT ? -1 : up;
    for (let b = (h * t.scale) >>> 0; ; b = b + 1 === size ? 0 : b + 1) {
      const v = tab[b];
      if (v === 0) return -1;
      if (((v ^ tag) & ~idx) === 0) {
        const p = (v & idx) - 1;
        if (this.pKeyLo[p] === lo && this.pKeyHi[p] === hi && this.pUp[p] === want) return p;
      }
    }
  }

  // ---- entries ---------------------------------------------------------------

  private findEntry(slot: number, xLo: number, xHi: number): number {
    const t = this.entriesTab;
    const tab = t.tab;
    const size = tab.length;
    const bits = t.bits;
    const idx = (1 << bits) - 1;
    const h = mix(xLo, xHi, slot);
    const tag = h << bits;
    for (let b = (h * t.scale) >>> 0; ; b = b + 1 === size ? 0 : b + 1) {
      const v = tab[b];
      if (v === 0) {
        t.missBucket = b;
        t.missHash = h;
        return -1;
      }
      if (((v ^ tag) & ~idx) === 0) {
        const e = (v & idx) - 1;
        if (this.eExtLo[e] === xLo && this.eExtHi[e] === xHi && this.eSlot[e] === slot) return e;
      }
    }
  }

  /** A new entry for (slot, external hash) right after its findEntry() missed: appended to the slot's list. */
  private newEntry(slot: number, xLo: number, xHi: number, hasParent: boolean, pLo: number, pHi: number): number {
    const t = this.entriesTab;
    const missTab = t.tab;
    const missBucket = t.missBucket;
    const missHash = t.missHash;
    let e: number;
    if (this.eFree >= 0) {
      e = this.eFree;
      this.eFree = this.eNext[e];
    } else {
      if (this.eTop === this.eCap) this.growEntries(Math.ceil(this.eCap * 1.5) + 16);
      e = this.eTop++;
    }
    this.eExtLo[e] = xLo;
    this.eExtHi[e] = xHi;
    this.eSlot[e] = slot;
    const tl = this.tail[slot];
    if (!hasParent) this.eMeta[e] = 0;
    else if (tl >= 0 && this.eExtLo[tl] === pLo && this.eExtHi[tl] === pHi) this.eMeta[e] = 1;
    else {
      this.eMeta[e] = 2;
      this.coldParents.set(e, (BigInt(pHi) << 32n) | BigInt(pLo));
    }
    if ((t.live + 1) * 4 <= missTab.length * 3) missTab[missBucket] = (missHash << t.bits) | (e + 1);
    else {
      this.rehashEntries(Math.ceil(missTab.length * 1.5) + 16);
      t.put(e, missHash);
    }
    t.live++;
    this.ePrev[e] = tl;
    this.eNext[e] = -1;
    if (tl >= 0) this.eNext[tl] = e;
    else this.head[slot] = e;
    this.tail[slot] = e;
    this.entries++;
    this.count[slot]++;
    return e;
  }

  private hold(e: number, p: number, slot: number): void {
    this.ePos[e] = p;
    const at = 2 * p + (slot >>> 5);
    const bit = 1 << (slot & 31);
    if ((this.hw[at] & bit) === 0) this.hw[at] |= bit;
    else {
      const key = p * 64 + slot;
      this.extra.set(key, (this.extra.get(key) ?? 0) + 1);
    }
  }

  private release(e: number): void {
    const slot = this.eSlot[e];
    const pr = this.ePrev[e];
    const nx = this.eNext[e];
    if (nx >= 0 && this.eMeta[nx] === 1) {
      this.eMeta[nx] = 2;
      this.coldParents.set(nx, (BigInt(this.eExtHi[e]) << 32n) | BigInt(this.eExtLo[e]));
    }
    if (this.eMeta[e] === 2) this.coldParents.delete(e);
    if (pr >= 0) this.eNext[pr] = nx;
    else this.head[slot] = nx;
    if (nx >= 0) this.ePrev[nx] = pr;
    else this.tail[slot] = pr;
    this.entriesTab.remove(e, mix(this.eExtLo[e], this.eExtHi[e], slot), this.entryHash);
    this.entries--;
    this.count[slot]--;
    this.unhold(this.ePos[e], slot);
    this.eNext[e] = this.eFree;
    this.eFree = e;
  }

  private unhold(p: number, slot: number): void {
    const key = p * 64 + slot;
    const extra = this.extra.get(key);
    if (extra !== undefined) {
      if (extra === 1) this.extra.delete(key);
      else this.extra.set(key, extra - 1);
      return;
    }
    this.hw[2 * p + (slot >>> 5)] &= ~(1 << (slot & 31));
  }

  private readonly entryHash = (e: number): number => mix(this.eExtLo[e], this.eExtHi[e], this.eSlot[e]);

  private clearSlot(slot: number): number {
    const n = this.count[slot];
    for (let e = this.head[slot]; e >= 0; ) {
      const nx = this.eNext[e];
      this.release(e);
      e = nx;
    }
    return n;
  }

  private growEntries(cap: number): void {
    this.eExtLo = grown(this.eExtLo, cap);
    this.eExtHi = grown(this.eExtHi, cap);
    this.ePos = grown(this.ePos, cap);
    this.eSlot = grown(this.eSlot, cap);
    this.ePrev = grown(this.ePrev, cap);
    this.eNext = grown(this.eNext, cap);
    this.eMeta = grown(this.eMeta, cap);
    this.eCap = cap;
  }

  private rehashEntries(buckets: number): void {
    const t = this.entriesTab;
    t.resize(buckets);
    for (let s = 0; s < 64; s++) for (let e = this.head[s]; e >= 0; e = this.eNext[e]) t.put(e, this.entryHash(e));
  }

  // ---- figures -----------------------------------------------------------------

  /** Bytes in typed arrays (capacity), by part; the cold-parent Map is left out (CompactCore's is tiny here too). */
  arrayBreakdown(): [string, number][] {
    return [
      ["entry: external hash", this.eExtLo.byteLength + this.eExtHi.byteLength],
      ["entry: position, slot, parent mode", this.ePos.byteLength + this.eSlot.byteLength + this.eMeta.byteLength],
      ["entry: list links", this.ePrev.byteLength + this.eNext.byteLength],
      ["entry table", this.entriesTab.tab.byteLength],
      [this.local ? "position: local hash" : "position: sequence hash", this.pKeyLo.byteLength + this.pKeyHi.byteLength],
      [this.local ? "position: head's parent" : "position: local hash", this.local ? this.pUp.byteLength : this.pLocLo.byteLength + this.pLocHi.byteLength],
      ["position: holder bitset", this.hw.byteLength],
      ["head table", this.heads.tab.byteLength],
      ["per slot", 64 * 4 * 7],
    ];
  }

  arrayBytes(): number {
    return this.arrayBreakdown().reduce((s, [, b]) => s + b, 0);
  }
}
