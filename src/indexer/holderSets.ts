// Holder sets: for each index node, the (worker, dp_rank) slots that hold it,
// and the walk find_matches makes through them along a prompt.
//
// A set costs memory in proportion to its holders, not to the highest slot in
// use: a bitset as wide as the fleet cost 2.5 KB per block once 20,000 worker
// ranks were known. Each node has a kind byte and two inline u32 words:
//
//   LOW    every holder is below 64: the two words are its bitset. A fleet of
//          up to 64 ranks only ever uses this (the old layout's fast path).
//   ONE    a = the slot.
//   TWO    a < b: the two slots.
//   THREE  three slots of SLOT_BITS bits each, packed into a and b.
//   LIST   a = pool offset of the sorted slots, b = how many (four or more).
//          Used while the holders are sparse: fewer of them than the words a
//          bitset over their span would take.
//   RANGE  a = pool offset of [first word | words << 16, bitset words...],
//          b = how many holders. A bitset over only the words the holders
//          span, used while dense.
//
// Pool blocks come in power-of-two size classes (the class sits in the kind
// byte's high bits) with a free list per class. A list becomes a range once
// it needs as many words as the range would, and a range becomes a list again
// once it is less than half full, so a node near the boundary does not
// convert on every change. When more than half the pool is free, live blocks
// are packed together again.
//
// The walk keeps the holders still matching ("alive") as a bitset over a word
// range while it comes from LOW or RANGE nodes, and as a sorted slot list
// otherwise (or once few are left), so a step costs about what the smaller
// side holds; a fleet below 64 ranks walks two words per block as before.
import { emptyArray, grown, sameKind } from "../util/typedArrays.js";

const EMPTY = 0;
const LOW = 1;
const ONE = 2;
const TWO = 3;
const THREE = 4;
const LIST = 5;
const RANGE = 6;
const KIND_MASK = 7;
const CLASS_SHIFT = 3;
/** Smallest pool block: 4 words. */
const MIN_CLASS = 2;

/** Walk modes: alive as a bitset of slots 0-63 (the fast path), as a bitset over other words, as a sorted list. */
const W_LOW = 0;
const W_RANGE = 1;
const W_LIST = 2;

/** Bits of a slot: THREE packs three into 64 bits (so --max-worker-ranks is at most 2^20). */
export const SLOT_BITS = 20;
const SLOT_MASK = (1 << SLOT_BITS) - 1;

/** THREE's slots, ascending, from its two words. */
function first3(a: number): number {
  return a & SLOT_MASK;
}
function second3(a: number, b: number): number {
  return (a >>> SLOT_BITS) | ((b & 0xff) << (32 - SLOT_BITS));
}
function third3(b: number): number {
  return b >>> (2 * SLOT_BITS - 32);
}

function classFor(words: number): number {
  return Math.max(MIN_CLASS, 32 - Math.clz32(words - 1));
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 63;
}

/** Words a bitset from slot `lo`'s word to slot `hi`'s needs. */
function spanWords(lo: number, hi: number): number {
  return (hi >>> 5) - (lo >>> 5) + 1;
}

/** What a shared HolderSets calls around replacing its buffers (sharedNodes.ts: NodePublisher). */
export interface Relocations {
  relocating(): void;
  relocated(): void;
}

/** Most words a LIST or RANGE block can span (a copy that reads more was torn). */
const MOST_BLOCK_WORDS = 1 << SLOT_BITS;

export class HolderSets {
  /** Per node: kind | size class << CLASS_SHIFT. */
  private kind: Uint8Array;
  /** Per node the two inline words side by side: a = w[2v], b = w[2v + 1]. */
  private w: Uint32Array;
  private pool: Uint32Array;
  /**
   * Shared sets only (sharedNodes.ts): per node, a version bumped to odd
   * before and back to even after every change of its set except a LOW
   * node's bit flips, so a reader in another thread can tell a torn read.
   */
  private ver: Uint32Array;
  private readonly shared: boolean;
  private poolTop = 0;
  /** Words in live pool blocks. */
  private poolLive = 0;
  private readonly freeHead = new Int32Array(24).fill(-1);
  /** A set spelled out as sorted slots, while it changes container. */
  private scratch = new Uint32Array(64);

  // The walk's state (see matchStart).
  /** Holders that stopped matching, and the depth each reached; `matched` of them. */
  foundSlot = new Int32Array(64);
  foundDepth = new Int32Array(64);
  matched = 0;
  /** How alive is kept: W_LOW, W_RANGE or W_LIST. */
  private mode = W_LOW;
  /** Alive as a bitset: words aLo .. aLo + aN - 1 (W_LOW: words 0 and 1). */
  private aw = new Uint32Array(64);
  private aLo = 0;
  private aN = 0;
  /** Alive as sorted slots (W_LIST), `m` of them. */
  private al = new Uint32Array(64);
  private m = 0;

  /** `relocations`: the sets live in SharedArrayBuffers and say when they replace them. */
  constructor(private readonly relocations?: Relocations) {
    this.shared = relocations !== undefined;
    this.kind = emptyArray(Uint8Array, this.shared);
    this.w = emptyArray(Uint32Array, this.shared);
    this.ver = emptyArray(Uint32Array, this.shared);
    this.pool = sameKind(this.w, 256);
  }

  /** Room for `cap` nodes (new ones are empty). A shared set's caller brackets this with its relocation. */
  grow(cap: number): void {
    this.kind = grown(this.kind, cap);
    this.w = grown(this.w, cap * 2);
    if (this.shared) this.ver = grown(this.ver, cap);
  }

  /** The buffers a reader in another thread reads (shared sets). */
  views(): { kind: Uint8Array; w: Uint32Array; pool: Uint32Array; ver: Uint32Array } {
    return { kind: this.kind, w: this.w, pool: this.pool, ver: this.ver };
  }

  /** Node `v`'s set is about to change (shared sets: its version turns odd). */
  private changing(v: number): void {
    if (this.shared) Atomics.add(this.ver, v, 1);
  }

  /** ...and has changed (its version is even again). */
  private changed(v: number): void {
    if (this.shared) Atomics.add(this.ver, v, 1);
  }

  isEmpty(v: number): boolean {
    return this.kind[v] === EMPTY;
  }

  /** Distinct slots holding node `v`. */
  count(v: number): number {
    const k = this.kind[v] & KIND_MASK;
    if (k === LOW) return popcount(this.w[2 * v]) + popcount(this.w[2 * v + 1]);
    if (k === ONE) return 1;
    if (k === TWO) return 2;
    if (k === THREE) return 3;
    return k === EMPTY ? 0 : this.w[2 * v + 1];
  }

  /** Adds `slot` to node `v`'s holders; false when it already held it. */
  add(v: number, slot: number): boolean {
    const kb = this.kind[v];
    const k = kb & KIND_MASK;
    if (k === LOW && slot < 64) {
      const at = 2 * v + (slot >>> 5);
      const bit = 1 << (slot & 31);
      if (this.w[at] & bit) return false;
      this.w[at] |= bit;
      return true;
    }
    if (k === EMPTY) {
      this.changing(v);
      if (slot < 64) {
        this.kind[v] = LOW;
        this.w[2 * v] = slot < 32 ? 1 << slot : 0;
        this.w[2 * v + 1] = slot < 32 ? 0 : 1 << (slot & 31);
      } else {
        this.kind[v] = ONE;
        this.w[2 * v] = slot;
      }
      this.changed(v);
      return true;
    }
    if (k === RANGE) {
      const off = this.w[2 * v];
      const head = this.pool[off];
      const i = (slot >>> 5) - (head & 0xffff);
      if (i >= 0 && i < head >>> 16) {
        const bit = 1 << (slot & 31);
        if (this.pool[off + 1 + i] & bit) return false;
        this.changing(v);
        this.pool[off + 1 + i] |= bit;
        this.w[2 * v + 1]++;
        this.changed(v);
        return true;
      }
    } else if (k === LIST) {
      const off = this.w[2 * v];
      const n = this.w[2 * v + 1];
      const at = this.lowerBound(off, n, slot);
      if (at < n && this.pool[off + at] === slot) return false;
      const lo = at === 0 ? slot : this.pool[off];
      const hi = at === n ? slot : this.pool[off + n - 1];
      // Still sparse and the block has room: insert in place.
      if (n + 1 <= 1 << (kb >>> CLASS_SHIFT) && n + 1 < spanWords(lo, hi)) {
        this.changing(v);
        this.pool.copyWithin(off + at + 1, off + at, off + n);
        this.pool[off + at] = slot;
        this.w[2 * v + 1] = n + 1;
        this.changed(v);
        return true;
      }
    } else if (k === ONE && this.w[2 * v] === slot) return false;
    else if ((k === TWO || k === THREE) && this.has(v, slot)) return false;
    // Everything else changes container: spell the set out, add, store again.
    const n = this.spell(v);
    const s = this.scratch;
    let at = n;
    while (at > 0 && s[at - 1] > slot) {
      s[at] = s[at - 1];
      at--;
    }
    s[at] = slot;
    this.store(v, n + 1);
    return true;
  }

  /** Removes `slot` from node `v`'s holders; false when it did not hold it. */
  remove(v: number, slot: number): boolean {
    const kb = this.kind[v];
    const k = kb & KIND_MASK;
    if (k === LOW) {
      if (slot >= 64) return false;
      const at = 2 * v + (slot >>> 5);
      const bit = 1 << (slot & 31);
      if ((this.w[at] & bit) === 0) return false;
      this.w[at] &= ~bit;
      if (this.w[2 * v] === 0 && this.w[2 * v + 1] === 0) this.kind[v] = EMPTY;
      return true;
    }
    if (k === EMPTY) return false;
    if (k === ONE) {
      if (this.w[2 * v] !== slot) return false;
      this.changing(v);
      this.kind[v] = EMPTY;
      this.changed(v);
      return true;
    }
    if (k === RANGE) {
      const off = this.w[2 * v];
      const head = this.pool[off];
      const words = head >>> 16;
      const i = (slot >>> 5) - (head & 0xffff);
      const bit = 1 << (slot & 31);
      if (i < 0 || i >= words || (this.pool[off + 1 + i] & bit) === 0) return false;
      this.changing(v);
      this.pool[off + 1 + i] &= ~bit;
      const n = --this.w[2 * v + 1];
      this.changed(v); // (not around store(): a version bumped twice would read even mid-change)
      // Less than half full: a list (or an inline form) is smaller.
      if (n * 2 < words) this.store(v, this.spell(v));
      return true;
    }
    if (k === LIST) {
      const off = this.w[2 * v];
      const n = this.w[2 * v + 1];
      const at = this.lowerBound(off, n, slot);
      if (at === n || this.pool[off + at] !== slot) return false;
      const hi = at === n - 1 ? this.pool[off + n - 2] : this.pool[off + n - 1];
      const cls = kb >>> CLASS_SHIFT;
      // Stays a list in the same block unless it fits inline or the block is four times too big.
      if (n - 1 > 3 && hi >= 64 && (cls === MIN_CLASS || (n - 1) * 4 > 1 << cls)) {
        this.changing(v);
        this.pool.copyWithin(off + at, off + at + 1, off + n);
        this.w[2 * v + 1] = n - 1;
        this.changed(v);
        return true;
      }
    } else if (!this.has(v, slot)) return false; // TWO, THREE
    const n = this.spell(v);
    const s = this.scratch;
    let at = 0;
    while (s[at] !== slot) at++;
    s.copyWithin(at, at + 1, n);
    this.store(v, n - 1);
    return true;
  }

  has(v: number, slot: number): boolean {
    const k = this.kind[v] & KIND_MASK;
    if (k === LOW) return slot < 64 && ((slot < 32 ? this.w[2 * v] : this.w[2 * v + 1]) & (1 << (slot & 31))) !== 0;
    if (k === ONE) return this.w[2 * v] === slot;
    if (k === TWO) return this.w[2 * v] === slot || this.w[2 * v + 1] === slot;
    if (k === THREE) {
      const a = this.w[2 * v];
      const b = this.w[2 * v + 1];
      return first3(a) === slot || second3(a, b) === slot || third3(b) === slot;
    }
    if (k === LIST) {
      const at = this.lowerBound(this.w[2 * v], this.w[2 * v + 1], slot);
      return at < this.w[2 * v + 1] && this.pool[this.w[2 * v] + at] === slot;
    }
    if (k === RANGE) {
      const off = this.w[2 * v];
      const i = (slot >>> 5) - (this.pool[off] & 0xffff);
      return i >= 0 && i < this.pool[off] >>> 16 && (this.pool[off + 1 + i] & (1 << (slot & 31))) !== 0;
    }
    return false;
  }

  /** Node `v`'s container (tests, debugging). */
  kindOf(v: number): "empty" | "low" | "one" | "two" | "three" | "list" | "range" {
    return (["empty", "low", "one", "two", "three", "list", "range"] as const)[this.kind[v] & KIND_MASK];
  }

  /** Node `v`'s holders in ascending order (tests, debugging). */
  slotsOf(v: number): number[] {
    return Array.from(this.scratch.subarray(0, this.spell(v)));
  }

  /** Bytes held in typed arrays (capacity). */
  bytes(): number {
    return this.kind.byteLength + this.w.byteLength + this.pool.byteLength + this.ver.byteLength;
  }

  /**
   * Makes node 0 of this set a copy of node `v` of another set's arrays
   * (SharedNodeReader: the walk then reads only the copy). False when what
   * was read cannot be a node, which only a read torn by a concurrent
   * change gives; the caller's version check catches the other torn reads.
   */
  copyNode(kind: Uint8Array, w: Uint32Array, pool: Uint32Array, v: number): boolean {
    const kb = kind[v];
    const k = kb & KIND_MASK;
    const a = w[2 * v];
    const b = w[2 * v + 1];
    this.kind[0] = kb;
    this.w[0] = a;
    this.w[1] = b;
    if (k < LIST) return true;
    if (k > RANGE) return false;
    // LIST: b sorted slots at a; RANGE: a head word (first word, word count) at a, then the words.
    const words = k === LIST ? b : a < pool.length ? 1 + (pool[a] >>> 16) : 0;
    if (words === 0 || words > MOST_BLOCK_WORDS || a + words > pool.length || b > MOST_BLOCK_WORDS) return false;
    if (this.pool.length < words) this.pool = new Uint32Array(1 << (32 - Math.clz32(words - 1)));
    this.pool.set(pool.subarray(a, a + words));
    this.w[0] = 0;
    return true;
  }

  // ---- containers --------------------------------------------------------

  /** Index in node list `off` (n sorted slots) of the first slot >= `slot`. */
  private lowerBound(off: number, n: number, slot: number): number {
    const p = this.pool;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (p[off + mid] < slot) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Writes node `v`'s holders, ascending, into scratch (with room for one more); returns how many. */
  private spell(v: number): number {
    const n = this.count(v);
    if (this.scratch.length < n + 1) this.scratch = new Uint32Array(Math.max(n + 1, this.scratch.length * 2));
    const s = this.scratch;
    const k = this.kind[v] & KIND_MASK;
    if (k === LOW) {
      let i = 0;
      for (let w = 0; w < 2; w++) {
        let x = w === 0 ? this.w[2 * v] : this.w[2 * v + 1];
        while (x !== 0) {
          const low = x & -x;
          s[i++] = w * 32 + 31 - Math.clz32(low);
          x = (x ^ low) >>> 0;
        }
      }
    } else if (k === ONE) s[0] = this.w[2 * v];
    else if (k === TWO) {
      s[0] = this.w[2 * v];
      s[1] = this.w[2 * v + 1];
    } else if (k === THREE) this.unpack3(v, s);
    else if (k === LIST) s.set(this.pool.subarray(this.w[2 * v], this.w[2 * v] + n));
    else if (k === RANGE) {
      const off = this.w[2 * v];
      const first = this.pool[off] & 0xffff;
      const words = this.pool[off] >>> 16;
      let i = 0;
      for (let w = 0; w < words; w++) {
        let x = this.pool[off + 1 + w];
        while (x !== 0) {
          const low = x & -x;
          s[i++] = (first + w) * 32 + 31 - Math.clz32(low);
          x = (x ^ low) >>> 0;
        }
      }
    }
    return n;
  }

  /** Makes scratch[0 .. n) (ascending) node `v`'s holders, in the container that fits them. */
  private store(v: number, n: number): void {
    this.changing(v);
    const k = this.kind[v] & KIND_MASK;
    if (k === LIST || k === RANGE) this.free(this.w[2 * v], this.kind[v] >>> CLASS_SHIFT);
    const s = this.scratch;
    if (n === 0) this.kind[v] = EMPTY;
    else if (s[n - 1] < 64) {
      let lo = 0;
      let hi = 0;
      for (let i = 0; i < n; i++) {
        if (s[i] < 32) lo |= 1 << s[i];
        else hi |= 1 << (s[i] - 32);
      }
      this.kind[v] = LOW;
      this.w[2 * v] = lo;
      this.w[2 * v + 1] = hi;
    } else if (n === 1) {
      this.kind[v] = ONE;
      this.w[2 * v] = s[0];
    } else if (n === 2) {
      this.kind[v] = TWO;
      this.w[2 * v] = s[0];
      this.w[2 * v + 1] = s[1];
    } else if (n === 3) {
      this.kind[v] = THREE;
      this.w[2 * v] = (s[0] | (s[1] << SLOT_BITS)) >>> 0;
      this.w[2 * v + 1] = ((s[1] >>> (32 - SLOT_BITS)) | (s[2] << (2 * SLOT_BITS - 32))) >>> 0;
    } else {
      const words = spanWords(s[0], s[n - 1]);
      if (n < words) {
        // The smallest class that fits: a full list moves up a class (doubling), an emptied one down.
        const cls = classFor(n);
        const off = this.alloc(cls);
        this.pool.set(s.subarray(0, n), off);
        this.kind[v] = LIST | (cls << CLASS_SHIFT);
        this.w[2 * v] = off;
      } else {
        const cls = classFor(words + 1);
        const off = this.alloc(cls);
        const first = s[0] >>> 5;
        const p = this.pool;
        p.fill(0, off + 1, off + 1 + words);
        p[off] = (first | (words << 16)) >>> 0;
        for (let i = 0; i < n; i++) p[off + 1 + (s[i] >>> 5) - first] |= 1 << (s[i] & 31);
        this.kind[v] = RANGE | (cls << CLASS_SHIFT);
        this.w[2 * v] = off;
      }
      this.w[2 * v + 1] = n;
    }
    this.changed(v);
    this.compactIfSparse();
  }

  /** A THREE node's slots, ascending, into out[0..2]. */
  private unpack3(v: number, out: Uint32Array): void {
    const a = this.w[2 * v];
    const b = this.w[2 * v + 1];
    out[0] = first3(a);
    out[1] = second3(a, b);
    out[2] = third3(b);
  }

  private alloc(cls: number): number {
    const size = 1 << cls;
    this.poolLive += size;
    const head = this.freeHead[cls];
    if (head >= 0) {
      this.freeHead[cls] = this.pool[head] | 0;
      return head;
    }
    if (this.poolTop + size > this.pool.length) {
      this.relocations?.relocating();
      const next = sameKind(this.pool, Math.max(this.pool.length * 2, this.poolTop + size));
      next.set(this.pool.subarray(0, this.poolTop));
      this.pool = next;
      this.relocations?.relocated();
    }
    const off = this.poolTop;
    this.poolTop += size;
    return off;
  }

  private free(off: number, cls: number): void {
    this.pool[off] = this.freeHead[cls];
    this.freeHead[cls] = off;
    this.poolLive -= 1 << cls;
  }

  /**
   * Free lists are per size class, so a pool whose sets changed size can end
   * up mostly free. Past half free (and past a quarter word per node, which
   * bounds how often this runs), live blocks are copied into a pool of their
   * own size.
   */
  private compactIfSparse(): void {
    const idle = this.poolTop - this.poolLive;
    if (idle <= this.poolLive + (this.kind.length >>> 2) + 1024) return;
    // The offsets in w change in place: a reader in another thread drops what it read across this (a new generation).
    this.relocations?.relocating();
    const pool = sameKind(this.pool, Math.max(256, Math.ceil(this.poolLive * 1.25)));
    let top = 0;
    for (let v = 0; v < this.kind.length; v++) {
      const k = this.kind[v] & KIND_MASK;
      if (k !== LIST && k !== RANGE) continue;
      const size = 1 << (this.kind[v] >>> CLASS_SHIFT);
      pool.set(this.pool.subarray(this.w[2 * v], this.w[2 * v] + size), top);
      this.w[2 * v] = top;
      top += size;
    }
    this.pool = pool;
    this.poolTop = top;
    this.freeHead.fill(-1);
    this.relocations?.relocated();
  }

  // ---- the walk ----------------------------------------------------------
  //
  // matchStart(first node), then matchStep(node, depth) for each next prompt
  // block while it returns true, then matchEnd(depth): foundSlot/foundDepth
  // [0, matched) hold each holder of the first node and how many leading
  // blocks it holds.

  matchStart(v: number): void {
    const n = this.count(v);
    if (this.foundSlot.length < n) {
      const cap = 1 << (32 - Math.clz32(n - 1));
      this.foundSlot = new Int32Array(cap);
      this.foundDepth = new Int32Array(cap);
      this.al = new Uint32Array(cap);
    }
    this.matched = 0;
    const k = this.kind[v] & KIND_MASK;
    if (k === LOW) {
      this.mode = W_LOW;
      this.aw[0] = this.w[2 * v];
      this.aw[1] = this.w[2 * v + 1];
      this.aLo = 0;
      this.aN = 2;
    } else if (k === RANGE) {
      const off = this.w[2 * v];
      const words = this.pool[off] >>> 16;
      if (this.aw.length < words) this.aw = new Uint32Array(1 << (32 - Math.clz32(words - 1)));
      this.aw.set(this.pool.subarray(off + 1, off + 1 + words));
      this.aLo = this.pool[off] & 0xffff;
      this.aN = words;
      this.mode = W_RANGE;
    } else {
      this.mode = W_LIST;
      this.m = n;
      const al = this.al;
      if (k === ONE) al[0] = this.w[2 * v];
      else if (k === TWO) {
        al[0] = this.w[2 * v];
        al[1] = this.w[2 * v + 1];
      } else if (k === THREE) this.unpack3(v, al);
      else al.set(this.pool.subarray(this.w[2 * v], this.w[2 * v] + n));
    }
  }

  /** Keeps alive only the holders of `v`; those that drop out matched `depth` blocks. False when none is left. */
  matchStep(v: number, depth: number): boolean {
    const k = this.kind[v];
    if (this.mode === W_LOW && k === LOW) {
      // The usual fleet (every rank below 64): two ANDs, as the old layout did.
      const aw = this.aw;
      const x0 = aw[0];
      const x1 = aw[1];
      const k0 = x0 & this.w[2 * v];
      const k1 = x1 & this.w[2 * v + 1];
      if (((x0 ^ k0) | (x1 ^ k1)) !== 0) {
        this.lose((x0 ^ k0) >>> 0, 0, depth);
        this.lose((x1 ^ k1) >>> 0, 32, depth);
      }
      aw[0] = k0;
      aw[1] = k1;
      return (k0 | k1) !== 0;
    }
    if (this.mode === W_LIST && this.m === 1 && k === ONE) {
      // One holder left, one on the node (a block only one worker holds): one compare.
      if (this.al[0] === this.w[2 * v]) return true;
      this.record(this.al[0], depth);
      this.m = 0;
      return false;
    }
    return this.stepOther(v, depth);
  }

  /** Records every holder still alive as matching `depth` blocks; returns how many holders were recorded in all. */
  matchEnd(depth: number): number {
    if (this.mode === W_LIST) {
      for (let i = 0; i < this.m; i++) this.record(this.al[i], depth);
    } else {
      for (let i = 0; i < this.aN; i++) this.lose(this.aw[i], (this.aLo + i) * 32, depth);
    }
    return this.matched;
  }

  /** Every step but the fast one (kept apart so that one stays small enough to inline). */
  private stepOther(v: number, depth: number): boolean {
    if (this.mode !== W_LIST) {
      const k = this.kind[v] & KIND_MASK;
      if (k === LOW) return this.andWords(this.w, 2 * v, 0, 2, depth);
      if (k === RANGE) {
        const off = this.w[2 * v];
        const head = this.pool[off];
        return this.andWords(this.pool, off + 1, head & 0xffff, head >>> 16, depth);
      }
      this.toList();
    }
    const k = this.kind[v];
    if (k === ONE || k === TWO || k === THREE) {
      // Sparse sharing: the node's inline slots against the few alive (repeating ONE's and TWO's last slot).
      const a = this.w[2 * v];
      const b = this.w[2 * v + 1];
      const A = k === THREE ? first3(a) : a;
      const B = k === THREE ? second3(a, b) : k === TWO ? b : a;
      const C = k === THREE ? third3(b) : B;
      const al = this.al;
      let kept = 0;
      for (let i = 0; i < this.m; i++) {
        const s = al[i];
        if (s === A || s === B || s === C) al[kept++] = s;
        else this.record(s, depth);
      }
      this.m = kept;
      return kept > 0;
    }
    if (this.m === 1) {
      // One holder left: a membership test.
      if (this.has(v, this.al[0])) return true;
      this.record(this.al[0], depth);
      this.m = 0;
      return false;
    }
    return this.filter(v, depth);
  }

  private record(slot: number, depth: number): void {
    this.foundSlot[this.matched] = slot;
    this.foundDepth[this.matched++] = depth;
  }

  /** Records the set bits of `x` (slots base + bit) as matching `depth`. */
  private lose(x: number, base: number, depth: number): void {
    while (x !== 0) {
      const low = x & -x;
      this.record(base + 31 - Math.clz32(low), depth);
      x = (x ^ low) >>> 0;
    }
  }

  /** Bitset mode: ANDs alive with the bitset words[off ..] covering words first .. first + n - 1. */
  private andWords(words: Uint32Array, off: number, first: number, n: number, depth: number): boolean {
    const aw = this.aw;
    const aLo = this.aLo;
    const aEnd = aLo + this.aN;
    const lo = Math.max(aLo, first);
    const end = Math.min(aEnd, first + n);
    // Alive words outside the node's range all drop out.
    for (let w = aLo; w < Math.min(lo, aEnd); w++) this.lose(aw[w - aLo], w * 32, depth);
    for (let w = Math.max(end, lo); w < aEnd; w++) this.lose(aw[w - aLo], w * 32, depth);
    let alive = 0;
    for (let w = lo; w < end; w++) {
      const a = aw[w - aLo];
      const keep = a & words[off + w - first];
      if ((a ^ keep) !== 0) this.lose((a ^ keep) >>> 0, w * 32, depth);
      aw[w - lo] = keep; // shifted down to the new first word (w - lo <= w - aLo)
      alive += popcount(keep);
    }
    this.aLo = lo;
    this.aN = Math.max(0, end - lo);
    this.mode = lo === 0 && this.aN === 2 ? W_LOW : W_RANGE;
    if (alive === 0) return false;
    // Few left in many words: walk them as a list from here on.
    if (alive * 4 < this.aN) this.toList();
    return true;
  }

  private toList(): void {
    const al = this.al;
    let i = 0;
    for (let w = 0; w < this.aN; w++) {
      let x = this.aw[w];
      while (x !== 0) {
        const low = x & -x;
        al[i++] = (this.aLo + w) * 32 + 31 - Math.clz32(low);
        x = (x ^ low) >>> 0;
      }
    }
    this.m = i;
    this.mode = W_LIST;
  }

  /** List mode: keeps the alive slots node `v` holds, in order. */
  private filter(v: number, depth: number): boolean {
    const al = this.al;
    const m = this.m;
    const k = this.kind[v] & KIND_MASK;
    const A = this.w[2 * v];
    const B = this.w[2 * v + 1];
    const p = this.pool;
    let kept = 0;
    if (k === LIST && m * 8 >= B) {
      // Comparable sizes: one merge pass.
      for (let i = 0, j = 0; i < m; i++) {
        const s = al[i];
        while (j < B && p[A + j] < s) j++;
        if (j < B && p[A + j] === s) al[kept++] = s;
        else this.record(s, depth);
      }
    } else if (k === LIST) {
      // Few alive against a long list: binary search past the last one found.
      let from = 0;
      for (let i = 0; i < m; i++) {
        const s = al[i];
        let lo = from;
        let hi = B;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (p[A + mid] < s) lo = mid + 1;
          else hi = mid;
        }
        from = lo;
        if (lo < B && p[A + lo] === s) al[kept++] = s;
        else this.record(s, depth);
      }
    } else if (k === RANGE) {
      const first = p[A] & 0xffff;
      const words = p[A] >>> 16;
      for (let i = 0; i < m; i++) {
        const s = al[i];
        const w = (s >>> 5) - first;
        if (w >= 0 && w < words && (p[A + 1 + w] & (1 << (s & 31))) !== 0) al[kept++] = s;
        else this.record(s, depth);
      }
    } else {
      // LOW (the inline kinds were handled by stepOther).
      for (let i = 0; i < m; i++) {
        const s = al[i];
        if (this.has(v, s)) al[kept++] = s;
        else this.record(s, depth);
      }
    }
    this.m = kept;
    return kept > 0;
  }
}
