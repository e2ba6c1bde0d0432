// Property test: the compact index (in-thread and sharded on worker threads)
// gives exactly the answers of PrefixIndex, the simple reference model, on
// seeded random streams of events, queries, routed blocks and worker removals.
// With --max-blocks, the reference is PrefixIndex plus a plain model of the
// documented eviction rule (oldest first-stored (worker, block) entries go first).
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

/** A seeded stream of operations over a few workers and small hash pools (so prefixes collide). */
class Stream {
  private readonly rnd: () => number;
  private readonly nextId = new Map<string, bigint>();
  /** Per worker key: external hash -> local-hash path from the root. */
  private readonly paths = new Map<string, Map<bigint, bigint[]>>();

  constructor(seed: number) {
    this.rnd = seededRandom(seed);
  }

  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }
  chance(p: number): boolean {
    return this.rnd() < p;
  }

  worker(): WorkerKey {
    return { workerId: BigInt(1 + this.int(5)), dpRank: this.int(2) };
  }

  private eventId(key: string): bigint {
    const next = this.nextId.get(key) ?? BigInt(1 + this.int(3));
    const r = this.rnd();
    // mostly in order; sometimes a gap, sometimes stale
    const id = r < 0.8 ? next : r < 0.9 ? next + BigInt(1 + this.int(3)) : next - BigInt(1 + this.int(2));
    if (id >= next) this.nextId.set(key, id + 1n);
    return id < 0n ? 0n : id;
  }

  event(): IndexEvent {
    const w = this.worker();
    const key = workerKeyString(w);
    const known = this.paths.get(key) ?? new Map<bigint, bigint[]>();
    this.paths.set(key, known);
    const eventId = this.eventId(key);
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
function runCase(seed: number, index: CompactIndex, maxBlocks: number | undefined, steps: number): number {
  const s = new Stream(seed);
  const ref = new EvictingReference(maxBlocks);
  const evictionsBefore = index.stats().evictions;
  const where = (i: number) => `seed ${seed} step ${i}`;
  for (let i = 0; i < steps; i++) {
    const r = s.int(100);
    if (r < 45) {
      const events = Array.from({ length: 1 + s.int(s.chance(0.3) ? 12 : 2) }, () => s.event());
      const restore = s.chance(0.05);
      const want = ref.applyBatch(events, restore);
      const got = index.applyBatch(toEventBatch(events), restore);
      assert.deepEqual(got, want, `${where(i)}: apply results`);
    } else if (r < 80) {
      const q = s.query();
      assert.deepEqual(sortedEntries(index.findMatches(q)), sortedEntries(ref.index.findMatches(q)), `${where(i)}: findMatches`);
      // The block a worker holds under an external hash (a lower-tier store's GPU parent).
      const w = s.worker();
      const ext = BigInt(1 + s.int(40));
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
      const id = BigInt(1 + s.int(5));
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
  // ranks, stamp rebases and f64 stamps (a tiny stamp window) and dense parent
  // arrays.
  const layouts = [
    { name: "u32 slots", opts: { maxWorkerRanks: 65_537 } },
    { name: "stamp window 16, dense parents from 2", opts: { initialEntries: 16, core: { stampWindow: 16, denseParentsAt: 2 } } },
    { name: "stamp window 256, u32 slots", opts: { initialEntries: 16, maxWorkerRanks: 1 << 20, core: { stampWindow: 256 } } },
  ];
  for (const { name, opts } of layouts) {
    it(`${name}: 200 + 200 cases, with and without eviction`, () => {
      for (let seed = 1; seed <= 200; seed++) runCase(seed, CompactIndex.local(opts), undefined, STEPS);
      for (let seed = 1; seed <= 200; seed++) runCase(seed, CompactIndex.local({ ...opts, maxBlocks: 1 + (seed % 12) }), 1 + (seed % 12), STEPS);
    });
  }

  describe("sharded on worker threads", () => {
    // Starting threads takes a while, so a few sharded indexes serve many
    // cases: each case first removes every worker (which also exercises
    // removal) while its reference starts empty.
    const configs = [
      { shards: 2, maxBlocks: undefined },
      { shards: 3, maxBlocks: undefined },
      { shards: 2, maxBlocks: 7 },
      { shards: 3, maxBlocks: 4 },
    ];
    const indexes: CompactIndex[] = [];
    before(async () => {
      for (const c of configs) indexes.push(await CompactIndex.create(c));
    });
    after(async () => {
      for (const i of indexes) await i.close();
    });

    for (const [n, c] of configs.entries()) {
      it(`${c.shards} shards, max blocks ${c.maxBlocks ?? "unbounded"}: 150 cases`, () => {
        const index = indexes[n];
        for (let seed = 1; seed <= 150; seed++) {
          for (const w of index.workers()) index.removeWorker(w.workerId);
          assert.equal(index.stats().entries, 0);
          runCase(seed * 7 + n, index, c.maxBlocks, STEPS);
        }
      });
    }
  });
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
