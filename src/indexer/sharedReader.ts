// The main thread's read of a shard's node side in shared memory
// (sharedNodes.ts): find_matches without waking the shard or waiting for it.
//
// Every node's holder set is copied under its version (odd, or changed
// after the copy: read again) and its sequence hash checked again (freed
// and reused since the probe: start over), so the walk only ever sees
// whole sets; a table miss counts only if no bucket moved meanwhile; an
// answer counts only if no buffer was replaced meanwhile. Whatever cannot
// be read whole after a few tries answers -1 and the caller asks the shard.
//
// The consistency rule holds: an event is acknowledged only after its
// shard's writes and an Atomics store the main thread has since loaded, so
// a query made afterwards reads those writes; events still being applied
// may or may not show, as with the shard's own answer.
import { type MessagePort, receiveMessageOnPort } from "node:worker_threads";
import { findNodeIn } from "./compactCore.js";
import { HolderSets } from "./holderSets.js";
import { GEN, type NodeViews, TABLE_VERSION } from "./sharedNodes.js";

/** Whole reads of one node or probe before giving up (a writer holds a node for well under a microsecond). */
const SPINS = 256;
/** Walks tried before the shard is asked (a walk is dropped when buffers were replaced during it). */
const WALKS = 3;
const ABSENT = -1;
const TORN = -2;

export class SharedNodeReader {
  private views: NodeViews | undefined;
  /** Node 0 is the copy of the node the walk is at; the walk's answer is here too. */
  private readonly sets = new HolderSets();

  constructor(
    private readonly header: Int32Array,
    private readonly port: MessagePort,
  ) {
    this.sets.grow(1);
  }

  /** New buffers from the shard (also taken here when the port's messages are dispatched). */
  take(views: NodeViews): void {
    if (this.views === undefined || views.gen > this.views.gen) this.views = views;
  }

  get foundSlot(): Int32Array {
    return this.sets.foundSlot;
  }
  get foundDepth(): Int32Array {
    return this.sets.foundDepth;
  }

  /**
   * CompactCore.findMatches on the shard's memory: the number of (slot,
   * depth) answers in foundSlot/foundDepth, or -1 when the caller must ask
   * the shard (it is replacing buffers, or the reads kept being torn).
   */
  find(h: Uint32Array, n: number): number {
    for (let walk = 0; walk < WALKS; walk++) {
      const gen = Atomics.load(this.header, GEN);
      if ((gen & 1) !== 0) return -1;
      if (this.views?.gen !== gen && !this.refresh(gen)) return -1;
      const found = this.walk(this.views!, h, n);
      if (found >= 0 && Atomics.load(this.header, GEN) === gen) return found;
    }
    return -1;
  }

  /** Stops taking buffers (the shard stopped); the reader is not used again. */
  close(): void {
    this.port.close();
    this.views = undefined;
  }

  /** Takes the posted buffers; true when they are generation `gen`'s (posted before it was stored). */
  private refresh(gen: number): boolean {
    for (let m = receiveMessageOnPort(this.port); m !== undefined; m = receiveMessageOnPort(this.port)) this.take(m.message as NodeViews);
    return this.views?.gen === gen;
  }

  /** CompactCore.findMatches' walk; -1 when a read was torn. */
  private walk(v: NodeViews, h: Uint32Array, n: number): number {
    if (n === 0) return 0;
    let node = this.probe(v, h[0], h[1]);
    if (node < 0) return node === ABSENT ? 0 : -1;
    if (!this.load(v, node, h[0], h[1])) return -1;
    const sets = this.sets;
    sets.matchStart(0);
    let depth = 1;
    for (; depth < n; depth++) {
      const lo = h[2 * depth];
      const hi = h[2 * depth + 1];
      // The next node is usually the one after (CompactCore.successor); kind 0 is an empty set.
      const next = node + 1;
      node = next < v.nLo.length && v.nLo[next] === lo && v.nHi[next] === hi && v.kind[next] !== 0 ? next : this.probe(v, lo, hi);
      if (node === TORN) return -1;
      if (node === ABSENT) break;
      if (!this.load(v, node, lo, hi)) return -1;
      if (!sets.matchStep(0, depth)) return sets.matched;
    }
    return sets.matchEnd(depth);
  }

  /** The node of (lo, hi), ABSENT, or TORN (buckets kept moving). */
  private probe(v: NodeViews, lo: number, hi: number): number {
    for (let i = 0; i < SPINS; i++) {
      const t = Atomics.load(this.header, TABLE_VERSION);
      if ((t & 1) !== 0) continue;
      const node = findNodeIn(v.nTab, v.nBits, v.nLo, v.nHi, lo, hi);
      if (node >= 0) return node;
      if (Atomics.load(this.header, TABLE_VERSION) === t) return ABSENT;
    }
    return TORN;
  }

  /** Copies node `node`'s set into node 0 of `sets`, whole; false when it no longer is (lo, hi)'s node or kept changing. */
  private load(v: NodeViews, node: number, lo: number, hi: number): boolean {
    const ver = v.ver;
    if (node >= ver.length) return false;
    for (let i = 0; i < SPINS; i++) {
      const before = Atomics.load(ver, node);
      if ((before & 1) !== 0) continue;
      const whole = this.sets.copyNode(v.kind, v.w, v.pool, node);
      if (v.nLo[node] !== lo || v.nHi[node] !== hi) return false;
      if (Atomics.load(ver, node) === before) return whole;
    }
    return false;
  }
}
