// The compact index engine: typed arrays and open-addressing tables, no JS
// object per block. One instance is the whole index in the main thread, or
// one shard's part of it inside a worker thread (shards own disjoint workers).
//
// Data:
// - entries: one per (worker slot, external hash) held, with its node, a meta
//   byte (parent mode, store stamp as a delta from the list predecessor's)
//   and links in its worker's list (insertion order: parents before children,
//   which dump relies on; also oldest-stored first, which eviction relies
//   on). The parent external hash is dump-only: when it is the external hash
//   of the list predecessor (a chain stored in one event) only a mode is
//   kept, else it sits in a cold store (coldPairs.ts: a Map, or dense arrays
//   once many entries need it). So is the local hash: it sits on the node,
//   and an entry whose local hash differs from its node's keeps its own in a
//   second cold store;
// - nodes: one per sequence hash held by at least one worker, with its local
//   hash and the set of slots holding it (holderSets.ts: memory in proportion
//   to the holders; find_matches intersects these along the prompt). A chain
//   stored into fresh nodes takes consecutive numbers: only its first node
//   (a head) goes into the node table, the others (links) are found from the
//   node before them (see nLink);
// - per-slot state (exists, block count, last event id) lives in SlotTable,
//   which may sit in a SharedArrayBuffer so the main thread reads it directly.
import { emptyArray, grown, sameKind } from "../util/typedArrays.js";
import {
  FLAG_EXPLICIT_SEQUENCE,
  FLAG_RESTORE,
  HEADER_WORDS,
  OP_REMOVED,
  OP_REMOVE_ROUTED,
  OP_REMOVE_WORKER,
  OP_STORED,
  OP_STORE_ROUTED,
  OUTCOME_PARENT_NOT_FOUND,
  OUTCOME_STALE,
  recordWords,
} from "./records.js";
import { createSequenceChainer } from "../hashing/sequenceChain.js";
import { seqHash32, seqOut } from "../hashing/sequence.js";
import { HolderSets, SLOT_BITS } from "./holderSets.js";
import { ColdPairs } from "./coldPairs.js";
import { NodePublisher, type NodeSharing } from "./sharedNodes.js";

/** Default (and historical) number of (worker, dp_rank) slots: --max-worker-ranks. */
export const MAX_SLOTS = 65_536;
/** Largest slot table --max-worker-ranks may ask for (holder sets pack slots in SLOT_BITS bits). */
export const SLOT_LIMIT = 1 << SLOT_BITS;
/** Multiplier of the (node, slot) keys of `extra`: above SLOT_LIMIT, and node * it stays below 2^53. */
const SLOT_KEY_SPACE = 1 << 21;
const TWO32 = 4294967296;
/** A chain's previous node, when there is none: the block is a root. */
const ROOT = -1;
/** A chain's previous node, when the parent's entry is not held here: it cannot be known. */
const UNKNOWN = -2;

/** Parent modes (the low bits of eMeta): no parent; the parent is the list predecessor's external hash; the parent hash is in the cold store. */
const P_NONE = 0;
const P_PREV = 1;
const P_COLD = 2;
const MODE_MASK = 3;
/** eMeta bit: the entry's local hash is not its node's (it is in coldLocals). */
const LOCAL_COLD = 4;
/** eMeta's bits below the stamp delta. */
const LOW_MASK = 7;
/** eMeta's high 5 bits: the stamp delta from the list predecessor, or STAMP_ESC (the delta is in a side store). */
const DELTA_SHIFT = 3;
const STAMP_ESC = 31;
/** Dense stamp deltas: this value sends the delta to the Map (it does not fit a u32). */
const DENSE_BIG = 0xffffffff;

/** Test hooks; the defaults are what the server runs. */
export interface CoreOptions {
  /** Largest stamp delta kept in the entry's meta byte (default and most 30); larger ones go to the side store. */
  inlineStampDelta?: number;
  /** Side-store stamp deltas kept in a Map before they move to a dense array (default an eighth of the entry capacity). */
  denseStampsAt?: number;
  /** Cold parents kept in a Map before they move to dense arrays (default an eighth of the entry capacity). */
  denseParentsAt?: number;
  /** Local hashes unlike their node's kept in a Map before they move to dense arrays (default an eighth of the entry capacity). */
  denseLocalsAt?: number;
  /**
   * Sized for a --max-blocks bound: past the initial entries only a batch's
   * overshoot before eviction runs is held, so the entry arrays and table
   * grow by an eighth there instead of by half (a full index stays near its
   * sized bytes per entry).
   */
  bounded?: boolean;
  /**
   * The node side (node table, sequence hashes, holder sets) in
   * SharedArrayBuffers that another thread reads while this core writes
   * (a shard thread's core; see sharedNodes.ts).
   */
  share?: NodeSharing;
}

/** Growth of a bounded core's entry arrays and table past its initial size (CoreOptions.bounded). */
const BOUNDED_GROWTH = 1.125;

/** Per-slot state shared between a shard and the main thread. */
export class SlotTable {
  static bytes(slots: number): number {
    return slots * (1 + 1 + 4 * 6);
  }
  readonly exists: Uint8Array;
  readonly hasLast: Uint8Array;
  readonly count: Int32Array;
  readonly lastLo: Uint32Array;
  readonly lastHi: Uint32Array;
  readonly widLo: Uint32Array;
  readonly widHi: Uint32Array;
  readonly rank: Uint32Array;

  constructor(
    readonly buffer: ArrayBufferLike,
    readonly slots: number,
  ) {
    let o = 0;
    const u32 = () => {
      const a = new Uint32Array(buffer, o, slots);
      o += slots * 4;
      return a;
    };
    this.count = new Int32Array(buffer, o, slots);
    o += slots * 4;
    this.lastLo = u32();
    this.lastHi = u32();
    this.widLo = u32();
    this.widHi = u32();
    this.rank = u32();
    this.exists = new Uint8Array(buffer, o, slots);
    o += slots;
    this.hasLast = new Uint8Array(buffer, o, slots);
  }
}

function mix(a: number, b: number, c: number): number {
  let h = Math.imul(a ^ Math.imul(b, 0x9e3779b1) ^ Math.imul(c, 0x85ebca77), 0xc2b2ae3d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x27d4eb2f);
  return (h ^ (h >>> 13)) >>> 0;
}

/**
 * The node of sequence hash (lo, hi) in node table `tab`, or -1: the probe
 * of CompactCore's node table, also run by SharedNodeReader on a shard's
 * table from another thread (so it stops after one lap even if concurrent
 * changes kept it from meeting an empty bucket).
 */
export function findNodeIn(tab: Uint32Array, bits: number, nLo: Uint32Array, nHi: Uint32Array, lo: number, hi: number): number {
  return probeNodes(tab, bits, tab.length / TWO32, nLo, nHi, lo, hi);
}

/** findNodeIn() with the table's index bits and home scale given (the core keeps them). */
function probeNodes(tab: Uint32Array, bits: number, scale: number, nLo: Uint32Array, nHi: Uint32Array, lo: number, hi: number): number {
  const size = tab.length;
  const idx = (1 << bits) - 1;
  const h = mix(lo, hi, 0);
  const tag = h << bits;
  let b = (h * scale) >>> 0;
  for (let left = size; left > 0; left--) {
    const v = tab[b];
    if (v === 0) return -1;
    if (((v ^ tag) & ~idx) === 0) {
      const n = (v & idx) - 1;
      if (nLo[n] === lo && nHi[n] === hi) return n;
    }
    b = b + 1 === size ? 0 : b + 1;
  }
  return -1;
}

/**
 * The size a node array or the node table grows to from `size`: `factor`
 * times, but no more than `most`, what the entry capacity calls for (every
 * node has an entry, so an index sized by --max-blocks stops there), and at
 * least `need`.
 */
function grownTo(size: number, need: number, most: number, factor: number): number {
  return Math.max(need, Math.min(Math.ceil(size * factor), most));
}
/**
 * Node arrays (17 bytes a node at 64 ranks) grow by a quarter: a full index
 * over-allocates about 12% of them, not 23% as with 1.5 (2.4 bytes per entry
 * on the 1 M Mooncake index); the extra copies are a few ms per million
 * nodes. The node table keeps 1.5: a rehash re-inserts every node.
 */
const NODE_GROWTH = 1.25;
const TABLE_GROWTH = 1.5;
/**
 * The node table is first sized for this many heads per entry of the initial
 * capacity (--max-blocks), at 3/4 load. It holds only heads (see nLink): the
 * index bench's 1 M-entry fills make 0.70 nodes per entry, but only 5,057
 * (Mooncake) and 8,172 (random prefixes) heads, under 1% of the entries.
 * Starting at a thirty-second leaves room for four times that before the
 * table grows, for a sixth of a byte per entry. The node arrays start at half
 * the entries and grow by a quarter (docs/indexer.md, "Touch pass and node
 * presize").
 */
const NODE_TABLE_PER_ENTRY = 1 / 32;
/** Blocks of a stored event chained per call (the chainer's memory holds 24 bytes a block). */
const CHAIN_BLOCKS = 4096;


/**
 * A slot's entries as dumpSlot packs them: DUMP_WORDS u32 per entry, in the
 * slot's list order: external hash, local hash, parent external hash (lo, hi
 * each), has-parent, then the entry's sequence hash (lo, hi).
 */
export const DUMP_WORDS = 9;


export class CompactCore {
  // entries (struct of arrays)
  private eCap = 0;
  private eTop = 0;
  private eFree = -1;
  private eExtLo = new Uint32Array(0);
  private eExtHi = new Uint32Array(0);
  /**
   * Parent mode (P_*, low 2 bits) and store stamp (high 6 bits). A slot's
   * list is in stamp order and stamps are only read walking it from the head
   * (eviction, oldestStamps), so an entry keeps the delta from its list
   * predecessor's stamp: blocks of one event are 1 apart. Deltas over
   * inlineDelta (the first block of most events) are STAMP_ESC with the delta
   * in a Map, then in eDelta once more than denseStampsAt need it. The head's
   * and the tail's absolute stamps are per slot (headStamp, tailStamp).
   */
  private eMeta = new Uint8Array(0);
  private readonly inlineDelta: number;
  private readonly bigDelta = new Map<number, number>();
  /** Dense side-store deltas (empty until denseStampsAt); DENSE_BIG sends a delta to bigDelta. */
  private eDelta = new Uint32Array(0);
  private readonly denseStampsAt: number | undefined;
  /** u16 when every slot fits (up to 65,536 worker ranks), else u32. */
  private eSlot: Uint16Array | Uint32Array;
  private eNode = new Int32Array(0);
  private ePrev = new Int32Array(0);
  private eNext = new Int32Array(0);
  /** Parent hashes of P_COLD entries. */
  private readonly coldParents: ColdPairs;
  /**
   * Local hashes of LOCAL_COLD entries. The local hash is only read by dump,
   * and nearly always the same for every holder of a sequence hash, so it
   * sits on the node (8 bytes per node, not per entry); an entry whose local
   * hash differs (a routed store, whose local hash is its sequence hash,
   * beside an engine's; a restore) keeps its own here.
   */
  private readonly coldLocals: ColdPairs;
  /** Live entries: the (block, worker) pairs the index holds. */
  entries = 0;
  /**
   * Any number of buckets (sized to the entries, not to a power of two):
   * home = high bits of the hash scaled to the size; a bucket holds
   * (low hash bits << eBits) | (entry + 1), 0 = empty.
   */
  private eTab = new Uint32Array(0);
  private eBits = 0;
  private eScale = 0;

  // nodes
  private nCap = 0;
  private nTop = 0;
  private nFree = -1;
  private nLo: Uint32Array;
  private nHi: Uint32Array;
  /** The local hash of the entry that created the node. */
  private nLocLo = new Uint32Array(0);
  private nLocHi = new Uint32Array(0);
  /** Which slots hold each node. */
  private readonly holders: HolderSets;
  /** Shared node side only: says when buffers are replaced and table buckets move. */
  private readonly publisher: NodePublisher | undefined;
  /** Live nodes: distinct sequence hashes held by at least one worker. */
  nodes = 0;
  /**
   * 1 = a link: a node made as the chain child of node v - 1 (the next block
   * of a chain stored into fresh nodes), kept out of the node table and
   * found from v - 1 by successor(). Every lookup of a stored block starts
   * from its parent's node, so it meets the link there; a link whose parent
   * node is freed goes into the table (freeNode). Per block of a fresh chain
   * this saves the table insert (a cache miss), and the table holds only
   * heads: a few percent of the nodes (docs/indexer.md, "Links").
   */
  private nLink = new Uint8Array(0);
  /** Nodes in the node table (heads); the others are links. */
  heads = 0;
  private links = 0;
  /**
   * False once a store whose hashes the core cannot check (a restore's own
   * sequence hashes, a routed store) had to look a hash up with no parent
   * to start from: every link went into the table then, and no more are made.
   */
  private linking = true;
  /**
   * Laid out as the entry table: any number of buckets, home = high bits of
   * the hash scaled to the size, a bucket holds (low hash bits << nBits) |
   * (node + 1), 0 = empty. Sized by the nodes, at most the entry capacity
   * (every node has an entry).
   */
  private nTab: Uint32Array;
  private nBits = 0;
  private nScale = 0;

  /** (node * SLOT_KEY_SPACE + slot) -> extra holds of one sequence hash through several external hashes. */
  private readonly extra = new Map<number, number>();
  // Per-slot list ends and their absolute stamps, sized by the highest slot this core owned (not by the slot table).
  private head = new Int32Array(0);
  private tail = new Int32Array(0);
  private headStamp = new Float64Array(0);
  private tailStamp = new Float64Array(0);
  /** Slots this core owns, for ranks-of-worker scans and eviction. */
  private readonly owned = new Set<number>();
  /** Entries dropped by evictThrough. */
  evicted = 0;
  /** How much the entry arrays and the entry table grow when full (CoreOptions.bounded). */
  private readonly entryGrowth: number;

  constructor(
    readonly slots: SlotTable,
    initialEntries = 1024,
    opts: CoreOptions = {},
  ) {
    if (slots.slots > SLOT_LIMIT) throw new RangeError(`${slots.slots} worker ranks: the index holds at most ${SLOT_LIMIT}`);
    this.inlineDelta = Math.min(STAMP_ESC - 1, opts.inlineStampDelta ?? STAMP_ESC - 1);
    this.denseStampsAt = opts.denseStampsAt;
    this.entryGrowth = opts.bounded ? BOUNDED_GROWTH : 1.5;
    this.coldParents = new ColdPairs(opts.denseParentsAt);
    this.coldLocals = new ColdPairs(opts.denseLocalsAt);
    this.eSlot = slots.slots <= 65_536 ? new Uint16Array(0) : new Uint32Array(0);
    const shared = opts.share !== undefined;
    this.nLo = emptyArray(Uint32Array, shared);
    this.nHi = emptyArray(Uint32Array, shared);
    this.nTab = emptyArray(Uint32Array, shared);
    this.publisher =
      opts.share && new NodePublisher(opts.share, () => ({ nTab: this.nTab, nBits: this.nBits, nLo: this.nLo, nHi: this.nHi, ...this.holders.views() }));
    this.holders = new HolderSets(this.publisher);
    // Blocks are often shared by several workers: node arrays start at half the entries, the node table at
    // NODE_TABLE_PER_ENTRY of them, and both grow if needed (each growth during a fill copies the arrays or
    // re-inserts every node, and leaves garbage to collect).
    this.growEntries(Math.max(16, initialEntries));
    this.growNodes(Math.max(16, initialEntries >>> 1));
    this.rehashEntries(Math.max(32, Math.ceil((initialEntries * 4) / 3) + 2));
    this.rehashNodes(Math.max(32, Math.ceil((initialEntries * NODE_TABLE_PER_ENTRY * 4) / 3) + 2));
  }

  // ---- operations ------------------------------------------------------

  /** Applies `count` records from `w`; writes one result word per record into `out`. */
  applyRecords(w: Uint32Array, count: number, out: Int32Array): void {
    for (let i = 0, o = 0; i < count; i++, o += recordWords(w, o)) out[i] = this.applyOne(w, o);
  }

  /**
   * Applies the one record at word `o` (a shard thread applying a queued
   * batch answers queries between records). Result: outcome | gap << 2 |
   * unknownRemovals << 3; for OP_REMOVE_WORKER the blocks dropped.
   */
  applyOne(w: Uint32Array, o: number): number {
    const op = w[o];
    const slot = w[o + 1];
    const st = this.slots;
    if (op === OP_REMOVE_WORKER) return this.removeWorker(w[o + 2], w[o + 3]);
    const exists = st.exists[slot] === 1 && this.owned.has(slot);
    const stamp = w[o + 7] + w[o + 8] * TWO32;
    const b = o + HEADER_WORDS;
    if (op === OP_STORE_ROUTED) {
      if (!exists) this.create(slot, w[o + 2], w[o + 3], w[o + 4]);
      this.storeRouted(slot, w, b, stamp);
      return 0;
    }
    if (op === OP_REMOVE_ROUTED) {
      if (!exists) return 0;
      const n = w[b];
      for (let i = 0; i < n; i++) this.releaseExt(slot, w[b + 1 + 2 * i], w[b + 2 + 2 * i]);
      return 0;
    }
    const restore = (w[o + 9] & FLAG_RESTORE) !== 0;
    // A restored dump states each block's sequence hash: no parent to resolve.
    const explicit = (w[o + 9] & FLAG_EXPLICIT_SEQUENCE) !== 0;
    const eLo = w[o + 5];
    const eHi = w[o + 6];
    let gap = 0;
    const hasLast = exists && st.hasLast[slot] === 1;
    const lLo = hasLast ? st.lastLo[slot] : 0;
    const lHi = hasLast ? st.lastHi[slot] : 0;
    const newer = hasLast && (eHi > lHi || (eHi === lHi && eLo > lLo));
    if (!restore && hasLast) {
      if (!newer) return OUTCOME_STALE;
      const nLo = (lLo + 1) >>> 0;
      const nHi = nLo === 0 ? (lHi + 1) >>> 0 : lHi;
      gap = eLo === nLo && eHi === nHi ? 0 : 1;
    }
    let parentNode = -1;
    if (op === OP_STORED && w[b] === 1 && !explicit) {
      const pe = exists ? this.findEntry(slot, w[b + 1], w[b + 2]) : -1;
      if (pe < 0) return OUTCOME_PARENT_NOT_FOUND | (gap << 2);
      parentNode = this.eNode[pe];
    }
    if (!exists) this.create(slot, w[o + 2], w[o + 3], w[o + 4]);
    if (!restore || !hasLast || newer) {
      st.lastLo[slot] = eLo;
      st.lastHi[slot] = eHi;
      st.hasLast[slot] = 1;
    }
    if (op === OP_STORED) {
      if (explicit) this.storedExplicit(slot, w, b, stamp);
      else this.stored(slot, w, b, parentNode, stamp);
      return gap << 2;
    }
    if (op === OP_REMOVED) {
      const n = w[b];
      let unknown = 0;
      for (let i = 0; i < n; i++) if (!this.releaseExt(slot, w[b + 1 + 2 * i], w[b + 2 + 2 * i])) unknown++;
      return (gap << 2) | (unknown << 3);
    }
    // cleared: this (worker, dp_rank) only, as Dynamo scopes it; its other ranks keep their blocks
    this.clearSlot(slot);
    return gap << 2;
  }

  /** What touchEntries and touchNodes read, kept so that the loads are not optimised away (read by nothing). */
  touched = 0;

  /**
   * Loads the entry-table home bucket of every block of a stored event before
   * they are stored. The loads do not depend on each other, so the CPU keeps
   * many cache misses in flight at once, where the store loop meets them one
   * at a time (each probe waits for the chain hash and the previous block's
   * inserts); the loop's probes then mostly hit the cache. A prefetch, in
   * plain JavaScript (issue 21 §2, measured in docs/indexer.md).
   */
  private touchEntries(slot: number, w: Uint32Array, b: number): void {
    const tab = this.eTab;
    const scale = this.eScale;
    let acc = 0;
    const n = w[b + 3];
    for (let i = 0, q = b + 4; i < n; i++, q += 4) acc |= tab[(mix(w[q], w[q + 1], slot) * scale) >>> 0];
    this.touched = acc;
  }

  /** Chains each stored event's sequence hashes in one call (WebAssembly where it loads). */
  private readonly chainer = createSequenceChainer();

  /**
   * Loads the node-table home bucket of each of `n` sequence hashes (pairs in
   * `seq`) before the blocks are stored: touchEntries' prefetch for the node
   * table, possible once an event's hashes are chained ahead of the store loop.
   */
  private touchNodes(seq: Uint32Array, n: number): void {
    const tab = this.nTab;
    const scale = this.nScale;
    let acc = 0;
    for (let k = 0; k < 2 * n; k += 2) acc |= tab[(mix(seq[k], seq[k + 1], 0) * scale) >>> 0];
    this.touched |= acc;
  }

  private stored(slot: number, w: Uint32Array, b: number, parentNode: number, stamp: number): void {
    this.touchEntries(slot, w, b);
    let hasParent = w[b] === 1;
    let pLo = w[b + 1];
    let pHi = w[b + 2];
    let sLo = parentNode >= 0 ? this.nLo[parentNode] : 0;
    let sHi = parentNode >= 0 ? this.nHi[parentNode] : 0;
    let chained = parentNode >= 0;
    let prevNode = parentNode;
    const n = w[b + 3];
    // In slices of CHAIN_BLOCKS, so a million-block event does not grow the chainer's memory for good.
    for (let from = 0; from < n; from += CHAIN_BLOCKS) {
      const m = Math.min(CHAIN_BLOCKS, n - from);
      const q0 = b + 4 + 4 * from;
      const seq = this.chainer.chain(w, q0, m, sLo, sHi, chained);
      this.touchNodes(seq, m);
      for (let i = 0, q = q0, k = 0; i < m; i++, q += 4, k += 2) {
        const xLo = w[q];
        const xHi = w[q + 1];
        prevNode = this.hold(slot, xLo, xHi, seq[k], seq[k + 1], w[q + 2], w[q + 3], hasParent, pLo, pHi, stamp + from + i, prevNode, true);
        hasParent = true;
        pLo = xLo;
        pHi = xHi;
      }
      sLo = seq[2 * m - 2];
      sHi = seq[2 * m - 1];
      chained = true;
    }
  }

  /** Stored blocks with their sequence hashes given (6 words each: external, local, sequence). */
  private storedExplicit(slot: number, w: Uint32Array, b: number, stamp: number): void {
    let hasParent = w[b] === 1;
    let pLo = w[b + 1];
    let pHi = w[b + 2];
    const n = w[b + 3];
    let prev = !hasParent ? ROOT : this.parentNodeOf(slot, pLo, pHi);
    for (let i = 0, q = b + 4; i < n; i++, q += 6) {
      prev = this.hold(slot, w[q], w[q + 1], w[q + 4], w[q + 5], w[q + 2], w[q + 3], hasParent, pLo, pHi, stamp + i, prev, false);
      hasParent = true;
      pLo = w[q];
      pHi = w[q + 1];
    }
  }

  private storeRouted(slot: number, w: Uint32Array, b: number, stamp: number): void {
    const n = w[b];
    let hasParent = false;
    let pLo = 0;
    let pHi = 0;
    let prev = ROOT;
    for (let i = 0; i < n; i++) {
      const lo = w[b + 1 + 2 * i];
      const hi = w[b + 2 + 2 * i];
      // Routed blocks have no engine id: the sequence hash stands in for it (and for the local hash).
      prev = this.hold(slot, lo, hi, lo, hi, lo, hi, hasParent, pLo, pHi, stamp + i, prev, false);
      hasParent = true;
      pLo = lo;
      pHi = hi;
    }
  }

  /**
   * Per slot, how many leading hashes of `h` (n (lo, hi) pairs) it holds:
   * writes (slot, depth) pairs to foundSlot/foundDepth, returns their count.
   */
  findMatches(h: Uint32Array, n: number): number {
    if (n === 0) return 0;
    let node = this.findNode(h[0], h[1]);
    if (node < 0) return 0;
    const holders = this.holders;
    holders.matchStart(node);
    let depth = 1;
    for (; depth < n; depth++) {
      const lo = h[2 * depth];
      const hi = h[2 * depth + 1];
      const next = this.successor(node, lo, hi);
      node = next >= 0 ? next : this.findNode(lo, hi);
      if (node < 0) break;
      if (!holders.matchStep(node, depth)) return holders.matched; // early exit: nobody can match further
    }
    return holders.matchEnd(depth);
  }

  /** findMatches' answer: slots, and the depth each matched (valid until the next call). */
  get foundSlot(): Int32Array {
    return this.holders.foundSlot;
  }
  get foundDepth(): Int32Array {
    return this.holders.foundDepth;
  }

  /** Drops every rank of a worker; returns the blocks dropped. */
  removeWorker(widLo: number, widHi: number): number {
    let removed = 0;
    for (const s of this.ranksOf(widLo, widHi)) {
      removed += this.clearSlot(s);
      this.slots.exists[s] = 0;
      this.slots.hasLast[s] = 0;
      this.owned.delete(s);
    }
    return removed;
  }

  /** Stamps of up to `max` oldest entries, ascending, into out; returns how many. */
  oldestStamps(max: number, out: Float64Array): number {
    const cursors: number[] = [];
    const stamps: number[] = [];
    for (const s of this.owned) {
      if (this.head[s] < 0) continue;
      cursors.push(this.head[s]);
      stamps.push(this.headStamp[s]);
    }
    let k = 0;
    while (k < max && cursors.length > 0) {
      let best = 0;
      for (let i = 1; i < cursors.length; i++) if (stamps[i] < stamps[best]) best = i;
      out[k++] = stamps[best];
      const next = this.eNext[cursors[best]];
      if (next >= 0) {
        cursors[best] = next;
        stamps[best] += this.deltaOf(next);
      } else {
        cursors.splice(best, 1);
        stamps.splice(best, 1);
      }
    }
    return k;
  }

  /** Evicts every entry stored at or before `stamp`; returns how many. */
  evictThrough(stamp: number): number {
    let n = 0;
    for (const s of this.owned) {
      while (this.head[s] >= 0 && this.headStamp[s] <= stamp) {
        this.release(this.head[s]);
        n++;
      }
    }
    this.evicted += n;
    return n;
  }

  /** The sequence hash (lo, hi into out) of the slot's entry with this external hash; false when it holds none. */
  sequenceOf(slot: number, xLo: number, xHi: number, out: Uint32Array | Int32Array): boolean {
    if (!this.owned.has(slot)) return false;
    const e = this.findEntry(slot, xLo, xHi);
    if (e < 0) return false;
    const node = this.eNode[e];
    out[0] = this.nLo[node];
    out[1] = this.nHi[node];
    return true;
  }

  /** Entries of a slot in list order, packed (DUMP_WORDS per entry). */
  dumpSlot(slot: number): Uint32Array<ArrayBuffer> {
    if (!this.owned.has(slot)) return new Uint32Array(0);
    const out = new Uint32Array(this.slots.count[slot] * DUMP_WORDS);
    let o = 0;
    for (let e = this.head[slot]; e >= 0; e = this.eNext[e], o += DUMP_WORDS) {
      const node = this.eNode[e];
      out[o] = this.eExtLo[e];
      out[o + 1] = this.eExtHi[e];
      const meta = this.eMeta[e];
      if ((meta & LOCAL_COLD) !== 0) {
        this.coldLocals.get(e);
        out[o + 2] = this.coldLocals.outLo;
        out[o + 3] = this.coldLocals.outHi;
      } else {
        out[o + 2] = this.nLocLo[node];
        out[o + 3] = this.nLocHi[node];
      }
      const mode = meta & MODE_MASK;
      if (mode === P_PREV) {
        const p = this.ePrev[e];
        out[o + 4] = this.eExtLo[p];
        out[o + 5] = this.eExtHi[p];
      } else if (mode === P_COLD) {
        this.coldParents.get(e);
        out[o + 4] = this.coldParents.outLo;
        out[o + 5] = this.coldParents.outHi;
      }
      out[o + 6] = mode === P_NONE ? 0 : 1;
      out[o + 7] = this.nLo[node];
      out[o + 8] = this.nHi[node];
    }
    return out;
  }

  /** Sequence hashes of every live node as (lo, hi) pairs. */
  nodeHashes(): Uint32Array<ArrayBuffer> {
    const out = new Uint32Array(this.nodes * 2);
    let k = 0;
    for (let v = 0; v < this.nTop; v++) {
      if (this.holders.isEmpty(v)) continue;
      out[k++] = this.nLo[v];
      out[k++] = this.nHi[v];
    }
    return out;
  }

  /** Bytes held in typed arrays (capacity, not just use). */
  arrayBytes(): number {
    let bytes = 0;
    for (const [, b] of this.arrayBreakdown()) bytes += b;
    return bytes;
  }

  /** arrayBytes() by array, for the benchmarks and docs/indexer.md. */
  arrayBreakdown(): [string, number][] {
    const rows: [string, number][] = [
      ["entry: external hash", this.eExtLo.byteLength + this.eExtHi.byteLength],
      ["entry: parent mode + stamp delta", this.eMeta.byteLength],
      ["entry: slot", this.eSlot.byteLength],
      ["entry: node", this.eNode.byteLength],
      ["entry: list links", this.ePrev.byteLength + this.eNext.byteLength],
      ["entry: cold parents", this.coldParents.bytes()],
      ["entry: cold local hashes", this.coldLocals.bytes()],
      ["entry: dense stamp deltas", this.eDelta.byteLength],
      ["entry table", this.eTab.byteLength],
      ["node: sequence hash", this.nLo.byteLength + this.nHi.byteLength],
      ["node: local hash", this.nLocLo.byteLength + this.nLocHi.byteLength],
      ["node: holder sets", this.holders.bytes()],
      ["node: link flag", this.nLink.byteLength],
      ["node table", this.nTab.byteLength],
      ["per slot: list ends and stamps", this.perSlotBytes()],
    ];
    return rows;
  }

  /** Bytes of this core's per-slot arrays (sized by the highest slot it owned). */
  perSlotBytes(): number {
    return this.head.byteLength + this.tail.byteLength + this.headStamp.byteLength + this.tailStamp.byteLength;
  }

  // ---- slots -------------------------------------------------------------

  private create(slot: number, widLo: number, widHi: number, rank: number): void {
    const st = this.slots;
    st.exists[slot] = 1;
    st.hasLast[slot] = 0;
    st.count[slot] = 0;
    st.widLo[slot] = widLo;
    st.widHi[slot] = widHi;
    st.rank[slot] = rank;
    if (slot >= this.head.length) this.growSlots(slot + 1);
    this.head[slot] = -1;
    this.tail[slot] = -1;
    this.owned.add(slot);
  }

  private growSlots(need: number): void {
    const n = Math.min(this.slots.slots, Math.max(need, Math.ceil(this.head.length * 1.5), 64));
    const known = this.head.length;
    this.head = grown(this.head, n).fill(-1, known);
    this.tail = grown(this.tail, n).fill(-1, known);
    this.headStamp = grown(this.headStamp, n);
    this.tailStamp = grown(this.tailStamp, n);
  }

  private ranksOf(widLo: number, widHi: number): number[] {
    const out: number[] = [];
    for (const s of this.owned) if (this.slots.widLo[s] === widLo && this.slots.widHi[s] === widHi) out.push(s);
    return out;
  }

  private clearSlot(slot: number): number {
    const count = this.slots.count[slot];
    let e = this.head[slot];
    while (e >= 0) {
      const next = this.eNext[e];
      const node = this.eNode[e];
      // A node visited again through an extra hold was already cleared (and maybe freed).
      if (this.holders.remove(node, slot)) {
        this.extra.delete(node * SLOT_KEY_SPACE + slot);
        if (this.holders.isEmpty(node)) this.freeNode(node);
      }
      const meta = this.eMeta[e];
      if ((meta & MODE_MASK) === P_COLD) this.coldParents.drop(e);
      if ((meta & LOCAL_COLD) !== 0) this.coldLocals.drop(e);
      this.takeDelta(e);
      this.unlinkEntryTable(e);
      this.freeEntry(e);
      e = next;
    }
    this.head[slot] = -1;
    this.tail[slot] = -1;
    this.slots.count[slot] = 0;
    this.entries -= count;
    return count;
  }

  // ---- entries -----------------------------------------------------------

  private hold(
    slot: number,
    xLo: number,
    xHi: number,
    sLo: number,
    sHi: number,
    lLo: number,
    lHi: number,
    hasParent: boolean,
    pLo: number,
    pHi: number,
    stamp: number,
    /** The chain's previous node (ROOT: none; UNKNOWN: not held here): its successor is tried before the node table. */
    prevNode: number,
    /** The sequence hash was chained here from prevNode's (else the caller's: see nodeFor). */
    chainedHere: boolean,
  ): number {
    const held = this.findEntry(slot, xLo, xHi);
    if (held >= 0) {
      // A duplicate store is idempotent. The chain goes on from the node of (sLo, sHi), which is not the
      // entry's when the block was first stored under another parent (none: the next block cannot be a link).
      const node = this.eNode[held];
      if (this.nLo[node] === sLo && this.nHi[node] === sHi) return node;
      const next = prevNode >= 0 ? this.successor(prevNode, sLo, sHi) : -1;
      const found = next >= 0 ? next : this.findNode(sLo, sHi);
      return found >= 0 ? found : chainedHere ? ROOT : UNKNOWN;
    }
    // Where that probe stopped: the new entry's bucket, unless the table changes first.
    const missTab = this.eTab;
    const missBucket = this.missBucket;
    const missHash = this.missHash;
    const e = this.allocEntry();
    this.eExtLo[e] = xLo;
    this.eExtHi[e] = xHi;
    const t = this.tail[slot];
    // A fresh meta byte (a reused entry's is stale): the mode, then the stamp delta.
    if (!hasParent) this.eMeta[e] = P_NONE;
    else if (t >= 0 && this.eExtLo[t] === pLo && this.eExtHi[t] === pHi) this.eMeta[e] = P_PREV;
    else {
      this.eMeta[e] = P_NONE;
      this.setCold(e, pLo, pHi);
    }
    if (t >= 0) this.setDelta(e, stamp - this.tailStamp[slot]);
    else this.headStamp[slot] = stamp;
    this.tailStamp[slot] = stamp;
    this.eSlot[e] = slot;
    // Before the list append: a rehash here puts every listed entry in the table.
    if ((this.entries + 1) * 4 <= this.eTab.length * 3 && this.eTab === missTab) {
      missTab[missBucket] = (missHash << this.eBits) | (e + 1); // no second probe
    } else this.insertEntryTable(e);
    // append to the worker's list
    this.ePrev[e] = t;
    this.eNext[e] = -1;
    if (t >= 0) this.eNext[t] = e;
    else this.head[slot] = e;
    this.tail[slot] = e;
    this.entries++;
    this.slots.count[slot]++;
    const next = prevNode >= 0 ? this.successor(prevNode, sLo, sHi) : -1;
    const node = next >= 0 ? next : this.nodeFor(sLo, sHi, lLo, lHi, prevNode, chainedHere);
    this.eNode[e] = node;
    if (this.nLocLo[node] !== lLo || this.nLocHi[node] !== lHi) {
      this.coldLocals.set(e, lLo, lHi, this.eCap);
      this.eMeta[e] |= LOCAL_COLD;
    }
    if (!this.holders.add(node, slot)) {
      const key = node * SLOT_KEY_SPACE + slot;
      this.extra.set(key, (this.extra.get(key) ?? 0) + 1);
    }
    return node;
  }

  private releaseExt(slot: number, xLo: number, xHi: number): boolean {
    const e = this.findEntry(slot, xLo, xHi);
    if (e < 0) return false;
    this.release(e);
    return true;
  }

  private release(e: number): void {
    const slot = this.eSlot[e];
    const p = this.ePrev[e];
    const nx = this.eNext[e];
    // The successor's predecessor changes: its parent hash (this entry's) moves to the cold store.
    if (nx >= 0 && (this.eMeta[nx] & MODE_MASK) === P_PREV) this.setCold(nx, this.eExtLo[e], this.eExtHi[e]);
    if ((this.eMeta[e] & MODE_MASK) === P_COLD) this.coldParents.drop(e);
    if ((this.eMeta[e] & LOCAL_COLD) !== 0) this.coldLocals.drop(e);
    // Stamps: the successor's delta grows by this entry's; a new head takes its stamp into headStamp.
    if (p < 0) {
      if (nx >= 0) this.headStamp[slot] += this.takeDelta(nx);
    } else {
      const d = this.takeDelta(e);
      if (nx >= 0) this.setDelta(nx, d + this.takeDelta(nx));
      else this.tailStamp[slot] -= d;
    }
    if (p >= 0) this.eNext[p] = nx;
    else this.head[slot] = nx;
    if (nx >= 0) this.ePrev[nx] = p;
    else this.tail[slot] = p;
    this.unlinkEntryTable(e);
    this.entries--;
    this.slots.count[slot]--;
    const node = this.eNode[e];
    this.freeEntry(e);
    const key = node * SLOT_KEY_SPACE + slot;
    const extra = this.extra.get(key);
    if (extra !== undefined) {
      if (extra === 1) this.extra.delete(key);
      else this.extra.set(key, extra - 1);
      return;
    }
    this.holders.remove(node, slot);
    if (this.holders.isEmpty(node)) this.freeNode(node);
  }

  private allocEntry(): number {
    if (this.eFree >= 0) {
      const e = this.eFree;
      this.eFree = this.eNext[e];
      return e;
    }
    if (this.eTop === this.eCap) this.growEntries(Math.ceil(this.eCap * this.entryGrowth) + 16);
    return this.eTop++;
  }

  private freeEntry(e: number): void {
    this.eNext[e] = this.eFree;
    this.eFree = e;
  }

  private growEntries(cap: number): void {
    this.eExtLo = grown(this.eExtLo, cap);
    this.eExtHi = grown(this.eExtHi, cap);
    this.eMeta = grown(this.eMeta, cap);
    if (this.eDelta.length > 0) this.eDelta = grown(this.eDelta, cap);
    this.eSlot = grown(this.eSlot, cap);
    this.eNode = grown(this.eNode, cap);
    this.ePrev = grown(this.ePrev, cap);
    this.eNext = grown(this.eNext, cap);
    this.coldParents.grow(cap);
    this.coldLocals.grow(cap);
    this.eCap = cap;
  }

  // ---- cold parents and stamps -------------------------------------------

  private setCold(e: number, lo: number, hi: number): void {
    this.eMeta[e] = (this.eMeta[e] & ~MODE_MASK) | P_COLD;
    this.coldParents.set(e, lo, hi, this.eCap);
  }

  /** The stamp delta of `e` from its list predecessor (not the head's: headStamp has it). */
  private deltaOf(e: number): number {
    const c = this.eMeta[e] >>> DELTA_SHIFT;
    if (c !== STAMP_ESC) return c;
    if (this.eDelta.length > 0 && this.eDelta[e] !== DENSE_BIG) return this.eDelta[e];
    return this.bigDelta.get(e)!;
  }

  /** deltaOf(e), dropping it from the side store (e is leaving, or its delta is about to change). */
  private takeDelta(e: number): number {
    const c = this.eMeta[e] >>> DELTA_SHIFT;
    this.eMeta[e] &= LOW_MASK;
    if (c !== STAMP_ESC) return c;
    if (this.eDelta.length > 0 && this.eDelta[e] !== DENSE_BIG) return this.eDelta[e];
    const d = this.bigDelta.get(e)!;
    this.bigDelta.delete(e);
    return d;
  }

  /** Sets e's stamp delta; its side-store delta, if any, must have been taken. */
  private setDelta(e: number, d: number): void {
    const low = this.eMeta[e] & LOW_MASK;
    if (d >= 0 && d <= this.inlineDelta) {
      this.eMeta[e] = low | (d << DELTA_SHIFT);
      return;
    }
    this.eMeta[e] = low | (STAMP_ESC << DELTA_SHIFT);
    if (this.eDelta.length > 0 && d >= 0 && d < DENSE_BIG) {
      this.eDelta[e] = d;
      return;
    }
    if (this.eDelta.length > 0) this.eDelta[e] = DENSE_BIG;
    this.bigDelta.set(e, d);
    // A Map entry costs several times the 4 bytes per entry of a dense array.
    if (this.eDelta.length === 0 && this.bigDelta.size > (this.denseStampsAt ?? this.eCap >>> 3)) this.densifyStamps();
  }

  private densifyStamps(): void {
    this.eDelta = new Uint32Array(this.eCap);
    for (const [e, d] of this.bigDelta) {
      if (d < 0 || d >= DENSE_BIG) {
        this.eDelta[e] = DENSE_BIG;
        continue;
      }
      this.eDelta[e] = d;
      this.bigDelta.delete(e);
    }
  }

  // Open-addressing tables with one u32 per bucket: hash bits beside the
  // index filter probes without touching the entry or node arrays, and the
  // index + 1 fits its bits because a table grows before its live count
  // (hence any index handed out) reaches 3/4 of its buckets.

  /** Where the last findEntry() that missed stopped (the first empty bucket) and the key's hash. */
  private missBucket = 0;
  private missHash = 0;

  private findEntry(slot: number, xLo: number, xHi: number): number {
    const tab = this.eTab;
    const size = tab.length;
    const bits = this.eBits;
    const idx = (1 << bits) - 1;
    const h = mix(xLo, xHi, slot);
    const tag = h << bits;
    for (let b = (h * this.eScale) >>> 0; ; b = b + 1 === size ? 0 : b + 1) {
      const v = tab[b];
      if (v === 0) {
        this.missBucket = b;
        this.missHash = h;
        return -1;
      }
      if (((v ^ tag) & ~idx) === 0) {
        const e = (v & idx) - 1;
        if (this.eExtLo[e] === xLo && this.eExtHi[e] === xHi && this.eSlot[e] === slot) return e;
      }
    }
  }

  private entryHash(e: number): number {
    return mix(this.eExtLo[e], this.eExtHi[e], this.eSlot[e]);
  }

  private insertEntryTable(e: number): void {
    if ((this.entries + 1) * 4 > this.eTab.length * 3) this.rehashEntries(Math.ceil(this.eTab.length * this.entryGrowth) + 16);
    this.putEntry(e, this.entryHash(e));
  }

  private putEntry(e: number, h: number): void {
    const tab = this.eTab;
    let b = (h * this.eScale) >>> 0;
    while (tab[b] !== 0) b = b + 1 === tab.length ? 0 : b + 1;
    tab[b] = (h << this.eBits) | (e + 1);
  }

  private unlinkEntryTable(e: number): void {
    const h = this.entryHash(e);
    this.removeBucket(this.eTab, (h * this.eScale) >>> 0, (1 << this.eBits) - 1, e, false);
  }

  private rehashEntries(buckets: number): void {
    this.eTab = new Uint32Array(buckets);
    this.eBits = 32 - Math.clz32(buckets);
    this.eScale = buckets / TWO32;
    for (const slot of this.owned) {
      for (let e = this.head[slot]; e >= 0; e = this.eNext[e]) this.putEntry(e, this.entryHash(e));
    }
  }

  /** Removes `value` (index bits `idx`, home bucket `i`) by backward-shift deletion: probe chains stay whole without tombstones. */
  private removeBucket(tab: Uint32Array, i: number, idx: number, value: number, nodes: boolean): void {
    const size = tab.length;
    while ((tab[i] & idx) !== value + 1) i = i + 1 === size ? 0 : i + 1;
    let j = i;
    for (;;) {
      j = j + 1 === size ? 0 : j + 1;
      const v = tab[j];
      if (v === 0) break;
      const k = (v & idx) - 1;
      const home = nodes ? (this.nodeHash(k) * this.nScale) >>> 0 : (this.entryHash(k) * this.eScale) >>> 0;
      if (i <= j ? i < home && home <= j : i < home || home <= j) continue;
      tab[i] = v;
      i = j;
    }
    tab[i] = 0;
  }

  // ---- nodes -------------------------------------------------------------

  /** Node v's table hash (its sequence hash mixed), as entryHash is an entry's. */
  private nodeHash(v: number): number {
    return mix(this.nLo[v], this.nHi[v], 0);
  }

  private findNode(lo: number, hi: number): number {
    return probeNodes(this.nTab, this.nBits, this.nScale, this.nLo, this.nHi, lo, hi);
  }

  /**
   * The node after `node` when it is the live node of (lo, hi), else -1. A
   * chain stored into fresh nodes gets consecutive node numbers, so the next
   * block's node is usually the one after: comparing it saves a table probe.
   * A freed node keeps a stale hash word but no holders, so it never passes.
   */
  private successor(node: number, lo: number, hi: number): number {
    const next = node + 1;
    return next < this.nTop && this.nLo[next] === lo && this.nHi[next] === hi && !this.holders.isEmpty(next) ? next : -1;
  }

  /**
   * The node of sequence hash (lo, hi), made (with local hash (locLo, locHi))
   * if there is none; `prev`'s successor was tried already. A link of (lo,
   * hi) would be prev's successor when (lo, hi) is prev's hash chained with
   * the local hash: always so when the caller chained it (`chainedHere`). A
   * restore's own hashes and routed ones are checked here; where they do not
   * chain from prev, a link elsewhere could hold (lo, hi), and every link goes
   * into the table for good (tableEveryLink). Only hashes chained here make
   * links.
   */
  private nodeFor(lo: number, hi: number, locLo: number, locHi: number, prev: number, chainedHere: boolean): number {
    let found = this.findNode(lo, hi);
    if (found >= 0) return found;
    if (!chainedHere && this.links > 0 && !this.chainsFrom(prev, lo, hi, locLo, locHi)) {
      this.tableEveryLink();
      found = this.findNode(lo, hi);
      if (found >= 0) return found;
    }
    let v: number;
    if (this.nFree >= 0) {
      v = this.nFree;
      this.nFree = this.nLo[v] | 0;
      if (this.nFree === 0x7fffffff) this.nFree = -1;
    } else {
      if (this.nTop === this.nCap) this.growNodes(grownTo(this.nCap, this.nCap + 1, this.eCap, NODE_GROWTH));
      v = this.nTop++;
    }
    this.nLo[v] = lo;
    this.nHi[v] = hi;
    this.nLocLo[v] = locLo;
    this.nLocHi[v] = locHi;
    if (chainedHere && this.linking && prev >= 0 && v === prev + 1) {
      this.nLink[v] = 1;
      this.links++;
    } else this.putHead(v);
    this.nodes++;
    return v;
  }

  /** Whether (lo, hi) is the sequence hash of local hash (locLo, locHi) under node `prev` (ROOT: none; UNKNOWN: cannot tell). */
  private chainsFrom(prev: number, lo: number, hi: number, locLo: number, locHi: number): boolean {
    if (prev === UNKNOWN) return false;
    if (prev === ROOT) return lo === locLo && hi === locHi;
    seqHash32(this.nLo[prev], this.nHi[prev], locLo, locHi);
    return seqOut.lo === lo && seqOut.hi === hi;
  }

  /** The node of the slot's entry for external hash (lo, hi), or UNKNOWN. */
  private parentNodeOf(slot: number, lo: number, hi: number): number {
    const e = this.slots.exists[slot] === 1 && this.owned.has(slot) ? this.findEntry(slot, lo, hi) : -1;
    return e >= 0 ? this.eNode[e] : UNKNOWN;
  }

  /** Puts node v into the node table (growing it first if full). */
  private putHead(v: number): void {
    if ((this.heads + 1) * 4 > this.nTab.length * 3) {
      this.rehashNodes(grownTo(this.nTab.length, Math.ceil(((this.heads + 1) * 4) / 3) + 1, Math.ceil((this.eCap * 4) / 3) + 2, TABLE_GROWTH));
    }
    this.putNode(v, this.nodeHash(v));
    this.heads++;
  }

  /** Every link into the node table, and no more links: lookups with no parent to start from find every node. */
  private tableEveryLink(): void {
    this.linking = false;
    for (let v = 0; v < this.nTop && this.links > 0; v++) {
      if (this.nLink[v] === 0) continue;
      this.nLink[v] = 0;
      this.links--;
      this.putHead(v);
    }
  }

  private putNode(v: number, h: number): void {
    const tab = this.nTab;
    let b = (h * this.nScale) >>> 0;
    while (tab[b] !== 0) b = b + 1 === tab.length ? 0 : b + 1;
    tab[b] = (h << this.nBits) | (v + 1);
  }

  private freeNode(v: number): void {
    if (this.nLink[v] === 1) {
      this.nLink[v] = 0;
      this.links--;
    } else {
      this.publisher?.tableChanging();
      this.removeBucket(this.nTab, (this.nodeHash(v) * this.nScale) >>> 0, (1 << this.nBits) - 1, v, true);
      this.publisher?.tableChanged();
      this.heads--;
    }
    // A link of v is found from v: with v gone, it goes into the table.
    const child = v + 1;
    if (child < this.nTop && this.nLink[child] === 1) {
      this.nLink[child] = 0;
      this.links--;
      this.putHead(child);
    }
    this.nodes--;
    this.nLo[v] = this.nFree < 0 ? 0x7fffffff : this.nFree;
    this.nFree = v;
  }

  private growNodes(cap: number): void {
    this.publisher?.relocating();
    this.nLo = grown(this.nLo, cap);
    this.nHi = grown(this.nHi, cap);
    this.nLocLo = grown(this.nLocLo, cap);
    this.nLocHi = grown(this.nLocHi, cap);
    this.nLink = grown(this.nLink, cap);
    this.holders.grow(cap);
    this.nCap = cap;
    // A bucket holds node + 1 in its index bits: more nodes than those bits hold re-pack the table.
    if (this.nTab.length > 0 && 32 - Math.clz32(cap) > this.nBits) this.rehashNodes(this.nTab.length);
    this.publisher?.relocated();
  }

  private rehashNodes(buckets: number): void {
    this.publisher?.relocating();
    const old = this.nTab;
    const oldIdx = (1 << this.nBits) - 1;
    this.nTab = sameKind(old, buckets);
    // The index bits hold any node + 1 (the table holds only heads: it may have fewer buckets than nodes).
    this.nBits = 32 - Math.clz32(Math.max(buckets, this.nCap));
    this.nScale = buckets / TWO32;
    for (let b = 0; b < old.length; b++) {
      if (old[b] === 0) continue;
      const v = (old[b] & oldIdx) - 1;
      this.putNode(v, this.nodeHash(v));
    }
    this.publisher?.relocated();
  }
}
