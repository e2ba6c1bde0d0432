// Links in CompactCore's node table (docs/indexer.md, "Links"): a chain stored
// into fresh nodes puts only its first node in the node table; the others are
// found from the node before them. These streams make what links must
// survive, each step compared with PrefixIndex (which keys every block by its
// sequence hash alone): chains of up to 400 blocks (node numbers far past the
// table's buckets), branches off the middle of a chain, middle blocks removed
// (a link whose parent node is freed goes into the table) and stored again,
// freed node numbers reused, a block stored again under another parent, and
// restores of a worker's dump into another worker (a restore states its own
// sequence hashes; blocks whose parent the worker no longer holds cannot be
// chained, and put every link into the table).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { sequenceHash } from "../src/hashing/blockHash.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { PrefixIndex } from "../src/indexer/prefixIndex.js";
import { type IndexEvent, workerKeyString } from "../src/protocols/events.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import { seededRandom } from "../src/util/random.js";

const M64 = (1n << 64n) - 1n;
const WORKERS = [1n, 2n, 3n, 4n];

function sorted<V>(m: Map<string, V>): [string, V][] {
  return [...m].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function dumpOf(index: { dump(): Iterable<IndexEvent> }): [string, IndexEvent[]][] {
  const by = new Map<string, IndexEvent[]>();
  for (const e of index.dump()) by.set(workerKeyString(e), [...(by.get(workerKeyString(e)) ?? []), e]);
  return sorted(by);
}

/** One seeded stream; returns how many restores could not chain (so the test can tell it covered both kinds). */
function runStream(seed: number, steps: number): { restores: number } {
  const rnd = seededRandom(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const index = CompactIndex.local();
  const ref = new PrefixIndex();
  const nextId = new Map<bigint, bigint>();
  /** Per worker: external hash -> local hashes from the root. */
  const paths = new Map<bigint, Map<bigint, bigint[]>>(WORKERS.map((w) => [w, new Map()]));
  let ext = 1000n;
  let restores = 0;
  const id = (w: bigint) => {
    const n = (nextId.get(w) ?? 0n) + 1n;
    nextId.set(w, n);
    return n;
  };
  // Few first blocks (so workers share prefixes), many later ones (so chains are fresh nodes).
  const local = (depth: number) => (depth < 3 ? BigInt(1 + int(3)) * 0x9e3779b97f4a7c15n : BigInt(1 + int(1 << 30)) * 0x2545f4914f6cdd1dn + BigInt(depth)) & M64;
  const apply = (events: IndexEvent[], restore: boolean, where: string) => {
    const want = events.map((e) => ref.apply(e, restore));
    const got = index.applyBatch(toEventBatch(events), restore);
    assert.deepEqual(got, want, `${where}: apply results`);
  };
  for (let step = 0; step < steps; step++) {
    const where = `seed ${seed} step ${step}`;
    const w = WORKERS[int(WORKERS.length)];
    const known = paths.get(w)!;
    const exts = [...known.keys()];
    const r = int(100);
    if (r < 40) {
      // A chain: from a held block (often mid-chain: a branch) or from the root.
      let parentHash: bigint | undefined;
      let path: bigint[] = [];
      if (exts.length > 0 && rnd() < 0.7) {
        parentHash = exts[int(exts.length)];
        path = known.get(parentHash)!;
      }
      const n = 1 + (rnd() < 0.3 ? int(400) : int(12));
      const blocks = Array.from({ length: n }, () => {
        const localHash = local(path.length);
        // Now and then a block this worker holds already, under whatever parent it had (a duplicate store).
        const externalHash = exts.length > 0 && rnd() < 0.03 ? exts[int(exts.length)] : ext++;
        path = [...path, localHash];
        if (!known.has(externalHash)) known.set(externalHash, path);
        return { externalHash, localHash };
      });
      apply([{ kind: "stored", workerId: w, dpRank: 0, eventId: id(w), parentHash, blocks }], false, where);
    } else if (r < 60 && exts.length > 0) {
      // Removals, mostly from the middle of chains: the links after them lose their parent node.
      const blockHashes = Array.from({ length: 1 + int(6) }, () => exts[int(exts.length)]);
      apply([{ kind: "removed", workerId: w, dpRank: 0, eventId: id(w), blockHashes }], false, where);
      for (const h of blockHashes) known.delete(h);
    } else if (r < 63) {
      apply([{ kind: "cleared", workerId: w, dpRank: 0, eventId: id(w) }], false, where);
      known.clear();
    } else if (r < 68) {
      // Another worker's dump restored into this one: each block states its sequence hash.
      const from = WORKERS[int(WORKERS.length)];
      const dump = [...ref.dump()].filter((e) => e.workerId === from).map((e) => ({ ...e, workerId: w, dpRank: 0 }));
      if (dump.length === 0) continue;
      restores++;
      apply(dump, true, where);
      for (const [h, p] of paths.get(from)!) if (!known.has(h)) known.set(h, p);
    } else {
      // A query along a held path (sometimes cut short, sometimes with a tail nobody holds).
      const all = [...paths.values()].flatMap((m) => [...m.values()]);
      if (all.length === 0) continue;
      let locals = all[int(all.length)];
      if (rnd() < 0.3) locals = locals.slice(0, 1 + int(locals.length));
      if (rnd() < 0.3) locals = [...locals, local(locals.length)];
      const seqs: bigint[] = [];
      let s: bigint | undefined;
      for (const l of locals) seqs.push((s = sequenceHash(s, l)));
      assert.deepEqual(sorted(index.findMatches(seqs)), sorted(ref.findMatches(seqs)), `${where}: findMatches over ${seqs.length} blocks`);
    }
    if (step % 25 === 24) {
      assert.equal(index.size(), ref.size(), `${where}: distinct blocks`);
      assert.deepEqual(dumpOf(index), dumpOf(ref), `${where}: dump`);
    }
  }
  assert.equal(index.size(), ref.size(), `seed ${seed}: distinct blocks`);
  assert.deepEqual(dumpOf(index), dumpOf(ref), `seed ${seed}: dump`);
  return { restores };
}

describe("node-table links (CompactCore)", () => {
  it("long chains, branches, freed parents, reused nodes and restores: 60 seeded streams match PrefixIndex", () => {
    let restores = 0;
    for (let seed = 1; seed <= 60; seed++) restores += runStream(seed, 120).restores;
    assert.ok(restores > 30, `restores exercised: ${restores}`);
  });

  it("a chain longer than the node table has buckets, and a branch off its middle", () => {
    const index = CompactIndex.local();
    const ref = new PrefixIndex();
    const blocks = Array.from({ length: 5000 }, (_, i) => ({ externalHash: BigInt(i + 1), localHash: (BigInt(i + 1) * 0x9e3779b97f4a7c15n) & M64 }));
    const events: IndexEvent[] = [
      { kind: "stored", workerId: 1n, dpRank: 0, eventId: 1n, blocks },
      { kind: "stored", workerId: 1n, dpRank: 0, eventId: 2n, parentHash: 4500n, blocks: [{ externalHash: 9000n, localHash: 77n }] },
      // Block 2,000's only holder drops it: block 2,001 (a link) must still be found from a query's path.
      { kind: "stored", workerId: 2n, dpRank: 0, eventId: 1n, blocks: blocks.slice(0, 2500) },
      { kind: "removed", workerId: 1n, dpRank: 0, eventId: 3n, blockHashes: [2000n] },
      { kind: "removed", workerId: 2n, dpRank: 0, eventId: 2n, blockHashes: [2000n] },
    ];
    index.applyBatch(toEventBatch(events));
    for (const e of events) ref.apply(e);
    const seqs: bigint[] = [];
    let s: bigint | undefined;
    for (const b of blocks) seqs.push((s = sequenceHash(s, b.localHash)));
    const branch = [...seqs.slice(0, 4500), sequenceHash(seqs[4499], 77n)];
    for (const q of [seqs, branch, seqs.slice(0, 2001), [seqs[0]]]) assert.deepEqual(sorted(index.findMatches(q)), sorted(ref.findMatches(q)));
    assert.equal(index.size(), ref.size());
  });
});
