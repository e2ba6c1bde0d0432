// Property test: the compact index (in-thread and sharded on worker threads)
// gives exactly the answers of PrefixIndex, the simple reference model, on
// seeded random streams of events, queries, routed blocks and worker removals.
// With --max-blocks, the reference is PrefixIndex plus a plain model of the
// documented eviction rule (oldest first-stored (worker, block) entries go first).
import { SequenceHashes } from "../src/hashing/sequenceHashes.js";
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { sequenceHash } from "../src/hashing/blockHash.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { PrefixIndex } from "../src/indexer/prefixIndex.js";
import type { ApplyResult, KvIndex } from "../src/indexer/types.js";
import { type IndexEvent, type WorkerKey, workerKeyString } from "../src/protocols/events.js";
import { seededRandom } from "../src/util/random.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";

/** PrefixIndex plus the eviction rule, written the obvious way. */
class EvictingReference {
  readonly index = new PrefixIndex();
  /** `${key}|${ext}` -> entry, in first-store order (oldest first). */
  private readonly entries = new Map<string, { key: WorkerKey; ext: bigint }>();
  evictions = 0;

  constructor(private readonly maxBlocks: number | undefined) {}

  applyBatch(events: readonly IndexEvent[], restore: boolean): ApplyResult[] {
    const results = events.map((e) => {
      const r = this.index.apply(e, restore);
      if (r.outcome === "applied") this.track(e);
      return r;
    });
    this.evict();
    return results;
  }

  storeRouted(key: WorkerKey, seqs: readonly bigint[]): void {
    this.index.storeRouted(key, seqs);
    for (const s of seqs) this.touch(key, s);
    this.evict();
  }

  removeRouted(key: WorkerKey, seqs: readonly bigint[]): void {
    this.index.removeRouted(key, seqs);
    if (!this.index.workers().some((w) => workerKeyString(w) === workerKeyString(key))) return;
    for (const s of seqs) this.entries.delete(`${workerKeyString(key)}|${s}`);
  }

  removeWorker(workerId: bigint): number {
    this.dropWorker(workerId);
    return this.index.removeWorker(workerId);
  }

  private track(e: IndexEvent): void {
    if (e.kind === "stored") for (const b of e.blocks) this.touch(e, b.externalHash);
    else if (e.kind === "removed") for (const h of e.blockHashes) this.entries.delete(`${workerKeyString(e)}|${h}`);
    else this.dropRank(e); // a cleared acts on its (worker, dp_rank)
  }

  private dropRank(key: WorkerKey): void {
    const prefix = `${workerKeyString(key)}|`;
    for (const k of this.entries.keys()) if (k.startsWith(prefix)) this.entries.delete(k);
  }

  private touch(key: WorkerKey, ext: bigint): void {
    const k = `${workerKeyString(key)}|${ext}`;
    if (!this.entries.has(k)) this.entries.set(k, { key: { workerId: key.workerId, dpRank: key.dpRank }, ext });
  }

  private dropWorker(workerId: bigint): void {
    for (const [k, v] of this.entries) if (v.key.workerId === workerId) this.entries.delete(k);
  }

  private evict(): void {
    if (this.maxBlocks === undefined) return;
    while (this.entries.size > this.maxBlocks) {
      const [k, v] = this.entries.entries().next().value!;
      this.entries.delete(k);
      this.index.removeRouted(v.key, [v.ext]);
      this.evictions++;
    }
  }
}

/**
 * Many known worker ranks: before the stream, worker ids 1..size each store
 * one block with the same local hash (one node held by `size` slots), so the
 * stream's workers sit on high slots, far apart. The stream then uses a
 * cluster of `cluster` consecutive ids (slots close together: dense holder
 * sets) and `scattered` ids spread over the fleet (sparse ones), each with
 * dp ranks 0 and 1 (rank 1 gets a slot past the fleet's). Bursts make many
 * cluster workers store the same blocks, remove them, or clear at once, so
 * nodes go from a few holders to many and back.
 */
interface Fleet {
  size: number;
  cluster: number;
  scattered: number;
}

/** The block every fleet worker stores first: its local (and sequence) hash and its external hash. */
const FLEET_LOCAL = 0x0123_4567_89ab_cdefn;
const FLEET_EXT = 77n;

/** A seeded stream of operations over a few workers and small hash pools (so prefixes collide). */
class Stream {
  private readonly rnd: () => number;
  private readonly nextId = new Map<string, bigint>();
  /** Per worker key: external hash -> local-hash path from the root. */
  private readonly paths = new Map<string, Map<bigint, bigint[]>>();
  /** Worker ids the stream's events use. */
  readonly ids: bigint[];
  /** The fleet's consecutive ids (empty without a fleet). */
  private readonly cluster: bigint[] = [];

  constructor(
    seed: number,
    readonly fleet?: Fleet,
  ) {
    this.rnd = seededRandom(seed);
    if (fleet === undefined) {
      this.ids = [1n, 2n, 3n, 4n, 5n];
      return;
    }
    const start = 1 + this.int(fleet.size - fleet.cluster);
    for (let i = 0; i < fleet.cluster; i++) this.cluster.push(BigInt(start + i));
    // The fleet's last id too: a slot far from the others.
    const scattered = [BigInt(fleet.size), ...Array.from({ length: fleet.scattered - 1 }, () => BigInt(1 + this.int(fleet.size)))];
    this.ids = [...new Set([...this.cluster, ...scattered])];
  }

  /** The fleet's first events: every id stores the shared block (rank 0); the stream's workers know it as a parent. */
  prologue(): IndexEvent[] {
    if (this.fleet === undefined) return [];
    for (const id of this.ids) {
      const key = workerKeyString({ workerId: id, dpRank: 0 });
      this.nextId.set(key, 2n);
      this.paths.set(key, new Map([[FLEET_EXT, [FLEET_LOCAL]]]));
    }
    return Array.from({ length: this.fleet.size }, (_, i) => ({
      kind: "stored" as const,
      workerId: BigInt(i + 1),
      dpRank: 0,
      eventId: 1n,
      blocks: [{ externalHash: FLEET_EXT, localHash: FLEET_LOCAL }],
    }));
  }

  /** Many cluster workers at once: store the same blocks (under the fleet block or at the root), remove them, or clear. */
  burst(): IndexEvent[] {
    if (this.cluster.length === 0) return [];
    const who = this.cluster.filter(() => this.chance(0.8)).map((workerId) => ({ workerId, dpRank: this.int(4) === 0 ? 1 : 0 }));
    const r = this.rnd();
    const locals = Array.from({ length: 1 + this.int(3) }, () => BigInt(1 + this.int(6)) * 0x9e3779b97f4a7c15n % (1n << 64n));
    const underFleet = this.chance(0.5);
    const exts = locals.map((_, i) => BigInt(1 + ((i * 7 + (underFleet ? 3 : 0)) % 40)));
    return who.map((w) => {
      if (r < 0.55) return this.event(w, { locals, exts, parent: underFleet ? FLEET_EXT : undefined });
      if (r < 0.9) return this.event(w, { remove: exts });
      return this.event(w, { clear: true });
    });
  }

  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }
  chance(p: number): boolean {
    return this.rnd() < p;
  }

  workerId(): bigint {
    return this.ids[this.int(this.ids.length)];
  }

  worker(): WorkerKey {
    return { workerId: this.workerId(), dpRank: this.int(2) };
  }

  private eventId(key: string): bigint {
    const next = this.nextId.get(key) ?? BigInt(1 + this.int(3));
    const r = this.rnd();
    // mostly in order; sometimes a gap, sometimes stale
    const id = r < 0.8 ? next : r < 0.9 ? next + BigInt(1 + this.int(3)) : next - BigInt(1 + this.int(2));
    if (id >= next) this.nextId.set(key, id + 1n);
    return id < 0n ? 0n : id;
  }

  /** A random event of a random worker; `forced` (bursts) fixes the worker and what it does. */
  event(
    w: WorkerKey = this.worker(),
    forced?: { locals?: bigint[]; exts?: bigint[]; parent?: bigint; remove?: bigint[]; clear?: boolean },
  ): IndexEvent {
    const key = workerKeyString(w);
    const known = this.paths.get(key) ?? new Map<bigint, bigint[]>();
    this.paths.set(key, known);
    const eventId = this.eventId(key);
    if (forced?.locals !== undefined) {
      const parentHash = forced.parent !== undefined && known.has(forced.parent) ? forced.parent : undefined;
      let path = parentHash === undefined ? [] : known.get(parentHash)!;
      const blocks = forced.locals.map((localHash, i) => {
        const externalHash = forced.exts![i];
        path = [...path, localHash];
        known.set(externalHash, path);
        return { externalHash, localHash };
      });
      return { kind: "stored", workerId: w.workerId, dpRank: w.dpRank, eventId, parentHash, blocks };
    }
    if (forced?.remove !== undefined) return { kind: "removed", workerId: w.workerId, dpRank: w.dpRank, eventId, blockHashes: forced.remove };
    if (forced?.clear) return { kind: "cleared", workerId: w.workerId, dpRank: w.dpRank, eventId };
    const r = this.rnd();
    if (r < 0.6) {
      let parentHash: bigint | undefined;
      let path: bigint[] = [];
      const ext = [...known.keys()];
      const pr = this.rnd();
      if (pr < 0.55 && ext.length > 0) {
        parentHash = ext[this.int(ext.length)];
        path = known.get(parentHash)!;
      } else if (pr < 0.65) {
        parentHash = BigInt(10_000 + this.int(50)); // probably unknown
      }
      const blocks = Array.from({ length: 1 + this.int(4) }, () => {
        // small pools: the same local hashes recur across workers, so prefixes are shared
        const localHash = BigInt(1 + this.int(6)) * 0x9e3779b97f4a7c15n % (1n << 64n);
        const externalHash = this.chance(0.5) ? localHash ^ BigInt(w.workerId) : BigInt(1 + this.int(40));
        path = [...path, localHash];
        known.set(externalHash, path);
        return { externalHash, localHash };
      });
      return { kind: "stored", workerId: w.workerId, dpRank: w.dpRank, eventId, parentHash, blocks };
    }
    if (r < 0.9) {
      const ext = [...known.keys()];
      const blockHashes = Array.from({ length: this.int(4) }, () =>
        ext.length > 0 && this.chance(0.8) ? ext[this.int(ext.length)] : BigInt(20_000 + this.int(10)),
      );
      return { kind: "removed", workerId: w.workerId, dpRank: w.dpRank, eventId, blockHashes };
    }
    return { kind: "cleared", workerId: w.workerId, dpRank: w.dpRank, eventId };
  }

  /** Sequence hashes of a stored path (often) or of random local hashes, with a random tail. */
  query(): bigint[] {
    const all = [...this.paths.values()].flatMap((m) => [...m.values()]);
    let locals = all.length > 0 && this.chance(0.85) ? all[this.int(all.length)] : [];
    if (this.chance(0.5)) locals = locals.slice(0, 1 + this.int(Math.max(1, locals.length)));
    const tail = Array.from({ length: this.int(3) }, () => BigInt(1 + this.int(6)) * 0x9e3779b97f4a7c15n % (1n << 64n));
    const seqs: bigint[] = [];
    let parent: bigint | undefined;
    for (const l of [...locals, ...tail]) seqs.push((parent = sequenceHash(parent, l)));
    return seqs;
  }

  forget(workerId: bigint): void {
    for (const key of [...this.paths.keys()]) if (key.startsWith(`${workerId}:`)) this.paths.delete(key);
  }
}

function sortedEntries<V>(m: Map<string, V>): [string, V][] {
  return [...m].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function dumpByWorker(index: KvIndex): [string, IndexEvent[]][] {
  const by = new Map<string, IndexEvent[]>();
  for (const e of index.dump()) {
    const k = workerKeyString(e);
    by.set(k, [...(by.get(k) ?? []), e]);
  }
  return sortedEntries(by);
}

function sameState(ref: EvictingReference, got: CompactIndex, where: string): void {
  assert.deepEqual(sortedEntries(got.blockCounts()), sortedEntries(ref.index.blockCounts()), `${where}: blockCounts`);
  assert.deepEqual(sortedEntries(got.lastEventIds()), sortedEntries(ref.index.lastEventIds()), `${where}: lastEventIds`);
  assert.equal(got.size(), ref.index.size(), `${where}: size`);
  assert.deepEqual(dumpByWorker(got), dumpByWorker(ref.index), `${where}: dump`);
}

/** Runs one seeded case; returns the number of operations compared. */
function runCase(seed: number, index: CompactIndex, maxBlocks: number | undefined, steps: number, fleet?: Fleet): number {
  const s = new Stream(seed, fleet);
  const ref = new EvictingReference(maxBlocks);
  const evictionsBefore = index.stats().evictions;
  const where = (i: number) => `seed ${seed} step ${i}`;
  const prologue = s.prologue();
  if (prologue.length > 0) assert.deepEqual(index.applyBatch(toEventBatch(prologue)), ref.applyBatch(prologue, false), `seed ${seed}: fleet`);
  for (let i = 0; i < steps; i++) {
    const r = s.int(100);
    if (r < 45) {
      const burst = fleet !== undefined && s.chance(0.3);
      const events = burst ? s.burst() : Array.from({ length: 1 + s.int(s.chance(0.3) ? 12 : 2) }, () => s.event());
      const restore = s.chance(0.05);
      const want = ref.applyBatch(events, restore);
      const got = index.applyBatch(toEventBatch(events), restore);
      assert.deepEqual(got, want, `${where(i)}: apply results`);
    } else if (r < 80) {
      const q = s.query();
      assert.deepEqual(sortedEntries(index.findMatches(q)), sortedEntries(ref.index.findMatches(q)), `${where(i)}: findMatches`);
      const words = SequenceHashes.fromBigints(q).words;
      // Routing's query (u32 words, no bigints) answers as the bigint one, on the index and on the reference.
      assert.deepEqual(sortedEntries(index.findMatchesWords(words, q.length)), sortedEntries(ref.index.findMatches(q)), `${where(i)}: findMatchesWords`);
      assert.deepEqual(sortedEntries(ref.index.findMatchesWords(words, q.length)), sortedEntries(ref.index.findMatches(q)), `${where(i)}: reference findMatchesWords`);
      // The block a worker holds under an external hash (a lower-tier store's GPU parent).
      const w = s.worker();
      const ext = s.chance(0.1) ? FLEET_EXT : BigInt(1 + s.int(40));
      assert.equal(index.sequenceHashOf(w, ext), ref.index.sequenceHashOf(w, ext), `${where(i)}: sequenceHashOf`);
    } else if (r < 87) {
      const w = s.worker();
      const q = s.query();
      ref.storeRouted(w, q);
      index.storeRouted(w, q);
    } else if (r < 92) {
      const w = s.worker();
      const q = s.query();
      ref.removeRouted(w, q);
      index.removeRouted(w, q);
    } else if (r < 96) {
      const id = s.workerId();
      assert.equal(index.removeWorker(id), ref.removeWorker(id), `${where(i)}: removeWorker`);
      s.forget(id);
    } else {
      sameState(ref, index, where(i));
    }
    assert.deepEqual(
      index.workers().map(workerKeyString).sort(),
      ref.index.workers().map(workerKeyString).sort(),
      `${where(i)}: workers`,
    );
  }
  sameState(ref, index, `seed ${seed} end`);
  assert.equal(index.stats().evictions - evictionsBefore, ref.evictions, `seed ${seed}: evictions`);
  return steps;
}

const STEPS = 60;

describe("CompactIndex matches PrefixIndex (seeded random streams)", () => {
  it("in the main thread: 700 cases", () => {
    let ops = 0;
    for (let seed = 1; seed <= 700; seed++) ops += runCase(seed, CompactIndex.local(), undefined, STEPS);
    assert.equal(ops, 700 * STEPS);
  });

  it("in the main thread with --max-blocks eviction: 700 cases", () => {
    for (let seed = 1; seed <= 700; seed++) runCase(seed, CompactIndex.local({ maxBlocks: 1 + (seed % 12) }), 1 + (seed % 12), STEPS);
  });

  it("with tables grown from their smallest size: 200 + 200 cases", () => {
    for (let seed = 1; seed <= 200; seed++) runCase(seed, CompactIndex.local({ initialEntries: 16 }), undefined, STEPS);
    for (let seed = 1; seed <= 200; seed++) runCase(seed, CompactIndex.local({ initialEntries: 16, maxBlocks: 1 + (seed % 12) }), 1 + (seed % 12), STEPS);
  });

  // The other layouts the core picks: u32 slot arrays past 65,536 worker
  // ranks, stamp deltas in the side store (a Map, then a dense array), dense
  // parent arrays and dense arrays of local hashes unlike their node's.
  const layouts = [
    { name: "u32 slots", opts: { maxWorkerRanks: 65_537 } },
    { name: "stamp deltas over 1 in the side store, dense from 2; dense parents and local hashes from 2", opts: { initialEntries: 16, core: { inlineStampDelta: 1, denseStampsAt: 2, denseParentsAt: 2, denseLocalsAt: 2 } } },
    { name: "every stamp delta in the side store's Map, u32 slots", opts: { initialEntries: 16, maxWorkerRanks: 1 << 20, core: { inlineStampDelta: 0, denseStampsAt: Infinity } } },
  ];
  for (const { name, opts } of layouts) {
    it(`${name}: 200 + 200 cases, with and without eviction`, () => {
      for (let seed = 1; seed <= 200; seed++) runCase(seed, CompactIndex.local(opts), undefined, STEPS);
      for (let seed = 1; seed <= 200; seed++) runCase(seed, CompactIndex.local({ ...opts, maxBlocks: 1 + (seed % 12) }), 1 + (seed % 12), STEPS);
    });
  }

  // Many known worker ranks: holder sets past the inline bitset of slots
  // 0-63 (one slot, two, sorted lists, range bitsets, and the changes
  // between them as bursts add and drop holders).
  const fleets: { name: string; fleet: Fleet; cases: number }[] = [
    { name: "3,000 ranks, a 40-rank cluster and 6 scattered", fleet: { size: 3000, cluster: 40, scattered: 6 }, cases: 30 },
    { name: "400 ranks, a 200-rank cluster and 3 scattered", fleet: { size: 400, cluster: 200, scattered: 3 }, cases: 60 },
  ];
  for (const { name, fleet, cases } of fleets) {
    it(`${name}: ${cases} + ${cases} cases, with and without eviction`, () => {
      for (let seed = 1; seed <= cases; seed++) runCase(seed, CompactIndex.local(), undefined, STEPS, fleet);
      for (let seed = 1; seed <= cases; seed++) runCase(seed, CompactIndex.local({ maxBlocks: 1 + (seed % 12) * 20 }), 1 + (seed % 12) * 20, STEPS, fleet);
    });
  }

  describe("sharded on worker threads", () => {
    // Starting threads takes a while, so a few sharded indexes serve many
    // cases: each case first removes every worker (which also exercises
    // removal) while its reference starts empty.
    const configs: { shards: number; maxBlocks: number | undefined; fleet?: Fleet; cases?: number }[] = [
      { shards: 2, maxBlocks: undefined },
      { shards: 3, maxBlocks: undefined },
      { shards: 2, maxBlocks: 7 },
      { shards: 3, maxBlocks: 4 },
      { shards: 2, maxBlocks: undefined, fleet: { size: 300, cluster: 60, scattered: 3 }, cases: 40 },
      { shards: 3, maxBlocks: 90, fleet: { size: 300, cluster: 60, scattered: 3 }, cases: 40 },
    ];
    const indexes: CompactIndex[] = [];
    before(async () => {
      for (const c of configs) indexes.push(await CompactIndex.create(c));
    });
    after(async () => {
      for (const i of indexes) await i.close();
    });

    for (const [n, c] of configs.entries()) {
      const cases = c.cases ?? 150;
      const fleet = c.fleet === undefined ? "" : `, ${c.fleet.size} ranks known`;
      it(`${c.shards} shards, max blocks ${c.maxBlocks ?? "unbounded"}${fleet}: ${cases} cases`, () => {
        const index = indexes[n];
        for (let seed = 1; seed <= cases; seed++) {
          for (const w of index.workers()) index.removeWorker(w.workerId);
          assert.equal(index.stats().entries, 0);
          runCase(seed * 7 + n, index, c.maxBlocks, STEPS, c.fleet);
        }
      });
    }
  });
});

/**
 * A seeded case with ingest batches queued to shard threads (applyBatchAsync)
 * and not awaited, while synchronous calls go on: each batch's results, and
 * every synchronous call's, must equal the reference applying everything in
 * call order; whenever the queue is drained the whole state must agree.
 */
async function runPipelinedCase(seed: number, index: CompactIndex, steps: number): Promise<number> {
  const s = new Stream(seed);
  const ref = new EvictingReference(undefined);
  const where = (i: number) => `seed ${seed} step ${i}`;
  let queued: Promise<void>[] = [];
  const drain = async () => {
    await Promise.all(queued);
    queued = [];
  };
  for (let i = 0; i < steps; i++) {
    const r = s.int(100);
    if (r < 55) {
      const events = Array.from({ length: 1 + s.int(s.chance(0.3) ? 12 : 2) }, () => s.event());
      const restore = s.chance(0.05);
      const want = ref.applyBatch(events, restore);
      queued.push(index.applyBatchAsync(toEventBatch(events), restore).then((got) => assert.deepEqual(got, want, `${where(i)}: queued apply results`)));
    } else if (r < 65) {
      // A synchronous apply comes after everything queued before it.
      const events = [s.event()];
      assert.deepEqual(index.applyBatch(toEventBatch(events)), ref.applyBatch(events, false), `${where(i)}: apply results`);
    } else if (r < 72) {
      const w = s.worker();
      const q = s.query();
      ref.storeRouted(w, q);
      index.storeRouted(w, q);
    } else if (r < 78) {
      const id = s.workerId();
      assert.equal(index.removeWorker(id), ref.removeWorker(id), `${where(i)}: removeWorker`);
      s.forget(id);
    } else if (r < 84) {
      const w = s.worker();
      const ext = BigInt(1 + s.int(40));
      assert.equal(index.sequenceHashOf(w, ext), ref.index.sequenceHashOf(w, ext), `${where(i)}: sequenceHashOf`);
    } else {
      await drain();
      const q = s.query();
      assert.deepEqual(sortedEntries(index.findMatches(q)), sortedEntries(ref.index.findMatches(q)), `${where(i)}: findMatches`);
      const words = SequenceHashes.fromBigints(q).words;
      // Routing's query (u32 words, no bigints) answers as the bigint one, on the index and on the reference.
      assert.deepEqual(sortedEntries(index.findMatchesWords(words, q.length)), sortedEntries(ref.index.findMatches(q)), `${where(i)}: findMatchesWords`);
      assert.deepEqual(sortedEntries(ref.index.findMatchesWords(words, q.length)), sortedEntries(ref.index.findMatches(q)), `${where(i)}: reference findMatchesWords`);
      if (s.chance(0.3)) sameState(ref, index, where(i));
    }
  }
  await drain();
  sameState(ref, index, `seed ${seed} end`);
  return steps;
}

/**
 * The consistency rule with queries running while batches are queued: a
 * query sees every batch whose results came back before it was made (and
 * nothing never submitted). Store-only chains make each worker's overlap
 * grow monotonically, so the answer per worker must lie between the
 * reference over the batches known applied (the longest fully resolved
 * prefix) and the reference over every batch submitted.
 */
async function runConsistencyCase(seed: number, index: CompactIndex, batches: number): Promise<number> {
  const rnd = seededRandom(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const ids = [11n, 12n, 13n, 14n, 15n, 16n];
  const chains = new Map<bigint, { ext: bigint[]; locals: bigint[]; next: bigint }>(ids.map((id) => [id, { ext: [], locals: [], next: 1n }]));
  let ext = BigInt(seed) * 1_000_000n;
  const applied = new PrefixIndex();
  const submitted = new PrefixIndex();
  const pending: IndexEvent[][] = [];
  const resolved: boolean[] = [];
  let appliedUpTo = 0;
  const queued: Promise<void>[] = [];
  let checked = 0;
  const check = () => {
    while (appliedUpTo < resolved.length && resolved[appliedUpTo]) for (const e of pending[appliedUpTo++]) applied.apply(e);
    const id = ids[int(ids.length)];
    const c = chains.get(id)!;
    const prefix = c.locals.slice(0, 1 + int(Math.max(1, c.locals.length)));
    const seqs: bigint[] = [];
    let parent: bigint | undefined;
    for (const l of prefix) seqs.push((parent = sequenceHash(parent, l)));
    const got = index.findMatches(seqs);
    const lo = applied.findMatches(seqs);
    const hi = submitted.findMatches(seqs);
    for (const key of new Set([...got.keys(), ...lo.keys(), ...hi.keys()])) {
      const g = got.get(key) ?? 0;
      assert.ok((lo.get(key) ?? 0) <= g && g <= (hi.get(key) ?? 0), `seed ${seed}: ${key} matched ${g}, applied says ${lo.get(key) ?? 0}, submitted ${hi.get(key) ?? 0}`);
    }
    checked++;
  };
  for (let b = 0; b < batches; b++) {
    const events: IndexEvent[] = Array.from({ length: 1 + int(6) }, () => {
      const workerId = ids[int(ids.length)];
      const c = chains.get(workerId)!;
      const blocks = Array.from({ length: 1 + int(4) }, () => {
        // A small pool of local hashes: chains of different workers share prefixes.
        const localHash = BigInt(1 + int(3)) * 0x9e3779b97f4a7c15n % (1n << 64n);
        c.locals.push(localHash);
        c.ext.push(++ext);
        return { externalHash: ext, localHash };
      });
      const parentHash = c.ext.length > blocks.length ? c.ext[c.ext.length - blocks.length - 1] : undefined;
      return { kind: "stored" as const, workerId, dpRank: 0, eventId: c.next++, parentHash, blocks };
    });
    for (const e of events) submitted.apply(e);
    const n = pending.push(events) - 1;
    resolved.push(false);
    queued.push(
      index.applyBatchAsync(toEventBatch(events)).then(() => {
        resolved[n] = true;
      }),
    );
    check();
    // Let some results land now and then, so both bounds move.
    if (int(4) === 0) await new Promise((r) => setImmediate(r));
  }
  await Promise.all(queued);
  check();
  return checked;
}

describe("queued ingest on shard threads (applyBatchAsync)", () => {
  for (const shards of [1, 2, 4]) {
    describe(`${shards} shard thread${shards === 1 ? "" : "s"}`, () => {
      let index: CompactIndex;
      before(async () => {
        index = await CompactIndex.create({ shards });
      });
      after(() => index.close());

      it("results and state equal the reference applying everything in call order: 60 cases", async () => {
        for (let seed = 1; seed <= 60; seed++) {
          for (const w of index.workers()) index.removeWorker(w.workerId);
          await runPipelinedCase(seed * 13 + shards, index, STEPS);
        }
      });

      it("a query made while batches are queued sees every batch that came back before it: 20 cases", async () => {
        for (let seed = 1; seed <= 20; seed++) {
          for (const w of index.workers()) index.removeWorker(w.workerId);
          assert.ok((await runConsistencyCase(seed * 17 + shards, index, 80)) > 80);
        }
      });

      it("with rings of 96 words (full rings on both sides, wrap-around, big batches applied synchronously): 30 cases", async () => {
        const tiny = await CompactIndex.create({ shards, ringWords: 96 });
        try {
          for (let seed = 1; seed <= 30; seed++) {
            for (const w of tiny.workers()) tiny.removeWorker(w.workerId);
            await runPipelinedCase(seed * 19 + shards, tiny, STEPS);
            for (const w of tiny.workers()) tiny.removeWorker(w.workerId);
            assert.ok((await runConsistencyCase(seed * 23 + shards, tiny, 40)) > 40);
          }
        } finally {
          await tiny.close();
        }
      });

      it("with queries asking the shards instead of reading their memory (the path off x86-64): 20 + 10 cases", async () => {
        const asking = await CompactIndex.create({ shards, sharedReads: false });
        try {
          for (let seed = 1; seed <= 20; seed++) {
            for (const w of asking.workers()) asking.removeWorker(w.workerId);
            await runPipelinedCase(seed * 29 + shards, asking, STEPS);
          }
          for (let seed = 1; seed <= 10; seed++) {
            for (const w of asking.workers()) asking.removeWorker(w.workerId);
            assert.ok((await runConsistencyCase(seed * 31 + shards, asking, 80)) > 80);
          }
          assert.equal(asking.queryAnswers().read, 0);
        } finally {
          await asking.close();
        }
      });

      it("a batch refused for want of worker slots throws at once and changes nothing", async () => {
        const small = await CompactIndex.create({ shards, maxWorkerRanks: 2 });
        try {
          const one = (workerId: bigint, eventId: bigint): IndexEvent => ({
            kind: "stored",
            workerId,
            dpRank: 0,
            eventId,
            blocks: [{ externalHash: 100n + workerId, localHash: 7n }],
          });
          const first = small.applyBatchAsync(toEventBatch([one(1n, 1n), one(2n, 1n)]));
          // Two pairs are queued (not yet known): a third is refused before anything is queued.
          assert.throws(() => small.applyBatchAsync(toEventBatch([one(1n, 2n), one(3n, 1n)])), /at most 2/);
          await first;
          assert.deepEqual(sortedEntries(small.blockCounts()), [["1:0", 1], ["2:0", 1]]);
          assert.deepEqual(sortedEntries(small.lastEventIds()), [["1:0", 1n], ["2:0", 1n]]);
        } finally {
          await small.close();
        }
      });
    });
  }
});

// find_matches first tries the node after the previous block's node (a chain
// stored into fresh nodes gets consecutive node numbers). A freed node keeps a
// stale hash word; this case builds one that looks exactly like the prompt's
// next block while the real node sits elsewhere, so a shortcut that trusted it
// would cut the match short.
describe("find_matches' next-node shortcut", () => {
  it("ignores a freed node that still looks like the next block", () => {
    const worker: WorkerKey = { workerId: 7n, dpRank: 0 };
    const s0 = 0x1111_2222_3333_4444n;
    // A freed node's low word becomes the free-list link (0x7fffffff: the list's end); its high word stays.
    const s1 = (0x5555_6666n << 32n) | 0x7fff_ffffn;
    const decoy = (0x5555_6666n << 32n) | 0x0000_0001n;
    const store = (eventId: bigint, ext: bigint, seq: bigint): IndexEvent => ({
      kind: "stored",
      ...worker,
      eventId,
      blocks: [{ externalHash: ext, localHash: seq, sequenceHash: seq }],
    });
    const events: IndexEvent[] = [
      store(1n, 10n, s0), // node 0
      store(2n, 11n, decoy), // node 1, freed below
      store(3n, 12n, s1), // node 2: the real node of the prompt's second block
      { kind: "removed", ...worker, eventId: 4n, blockHashes: [11n] },
    ];
    const compact = CompactIndex.local();
    const reference = new PrefixIndex();
    for (const e of events) {
      compact.applyBatch(toEventBatch([e]), true);
      reference.apply(e, true);
    }
    const key = workerKeyString(worker);
    assert.equal(reference.findMatches([s0, s1]).get(key), 2);
    assert.equal(compact.findMatches([s0, s1]).get(key), 2);
    // And a chain stored on top still finds its nodes: a third block under s1.
    assert.deepEqual([...compact.findMatches([s0, s1, 99n])], [...reference.findMatches([s0, s1, 99n])]);
  });
});

// Holder sets past slot 63 (src/indexer/holderSets.ts): one slot, two, a
// sorted list, a range bitset, and the changes between them, each step
// compared with PrefixIndex. test/holderSets.test.ts checks that these slot
// patterns do take those containers.
describe("holder sets past slot 63 (named cases)", () => {
  const X1 = 0xaaaa_0000_0000_0001n;
  const X2 = 0xaaaa_0000_0000_0002n;
  const Y = 0xbbbb_0000_0000_0003n;
  const queries = [[X1], [X1, sequenceHash(X1, X2)], [X1, sequenceHash(X1, X2), sequenceHash(sequenceHash(X1, X2), Y)], [X1, sequenceHash(X1, Y)]];
  const nextId = new Map<string, bigint>();
  const id = (workerId: bigint, dpRank: number) => {
    const k = `${workerId}:${dpRank}`;
    const n = (nextId.get(k) ?? 0n) + 1n;
    nextId.set(k, n);
    return n;
  };
  /** Worker `w` (rank `r`) stores X1, then `also` under it (external hashes 10, 11, 12). */
  const storeX = (w: number, r = 0, also: bigint[] = []): IndexEvent => ({
    kind: "stored",
    workerId: BigInt(w),
    dpRank: r,
    eventId: id(BigInt(w), r),
    blocks: [X1, ...also].map((localHash, i) => ({ externalHash: BigInt(10 + i), localHash })),
  });
  const removeX = (w: number, r = 0): IndexEvent => ({ kind: "removed", workerId: BigInt(w), dpRank: r, eventId: id(BigInt(w), r), blockHashes: [10n] });
  /** Worker ids 1..n each store a block of their own first: worker i gets slot i - 1. */
  const fleet = (n: number): IndexEvent[] =>
    Array.from({ length: n }, (_, i) => ({
      kind: "stored" as const,
      workerId: BigInt(i + 1),
      dpRank: 0,
      eventId: id(BigInt(i + 1), 0),
      blocks: [{ externalHash: 1n, localHash: BigInt(5_000_000 + i) }],
    }));

  /** Applies each step (events, or a worker removal) to both indexes and compares every query and the state after it. */
  function lockstep(name: string, steps: (IndexEvent[] | bigint)[]): void {
    nextId.clear();
    const index = CompactIndex.local();
    const ref = new EvictingReference(undefined);
    steps.forEach((step, i) => {
      const where = `${name} step ${i}`;
      if (typeof step === "bigint") assert.equal(index.removeWorker(step), ref.removeWorker(step), `${where}: removeWorker`);
      else assert.deepEqual(index.applyBatch(toEventBatch(step)), ref.applyBatch(step, false), `${where}: apply`);
      for (const q of queries) assert.deepEqual(sortedEntries(index.findMatches(q)), sortedEntries(ref.index.findMatches(q)), `${where}: findMatches ${q.length}`);
      if (i % 8 === 0 || i === steps.length - 1) sameState(ref, index, where);
    });
  }
  const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

  it("list -> range bitset -> list on release", () => {
    const build = fleet(300);
    // Slots 100, 200, 290 hold X1 (a list), then slots 96..127 (a range over 7 words), some with X2 and Y under it.
    lockstep("list/range", [
      build,
      [storeX(101, 0, [X2]), storeX(201), storeX(291, 0, [X2, Y])],
      ...range(97, 129).map((w) => [storeX(w, 0, w % 3 === 0 ? [X2, Y] : w % 3 === 1 ? [X2] : [])]),
      // Released one by one until the three first holders are left: back to a list.
      ...range(97, 129).filter((w) => w !== 101).map((w) => [removeX(w)]),
    ]);
  });

  it("a slot far from the others", () => {
    lockstep("far slot", [
      fleet(3000),
      range(65, 129).map((w) => storeX(w, 0, w % 2 === 0 ? [X2] : [])),
      [storeX(3000, 0, [X2, Y])],
      [storeX(3000, 1, [Y])], // rank 1: a slot past the fleet's
      [removeX(3000)],
      [removeX(70), removeX(71)],
      3000n,
    ]);
  });

  it("clear and removeWorker of slots in a dense node", () => {
    lockstep("dense", [
      fleet(200),
      range(65, 129).map((w) => storeX(w, 0, [X2])),
      [storeX(100, 1, [X2, Y])],
      [{ kind: "cleared", workerId: 100n, dpRank: 0, eventId: id(100n, 0) }],
      101n,
      100n,
      ...range(65, 129).filter((w) => w !== 100 && w !== 101).map((w) => BigInt(w)),
    ]);
  });
});
