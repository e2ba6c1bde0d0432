// Store stamps in CompactCore: an entry keeps the delta from its list
// predecessor's stamp (inline in its meta byte, else in a Map, else in a
// dense array; deltas past 2^32 - 2 stay in the Map even then), so eviction
// order depends on deltas being merged right when entries leave the middle,
// the head or the tail of a slot's list. The index property test drives
// stamps from CompactIndex's clock (small gaps); this drives the core with
// stamps far apart (gaps up to 2^40) and checks every stamp it reports, and
// every eviction, against a plain list per slot.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CompactCore, type CoreOptions, SlotTable } from "../src/indexer/compactCore.js";
import { OP_REMOVE_ROUTED, OP_STORE_ROUTED, RecordWriter } from "../src/indexer/records.js";
import { seededRandom } from "../src/util/random.js";

const SLOTS = 4;

function runCase(seed: number, opts: CoreOptions, steps: number): void {
  const rnd = seededRandom(seed);
  const core = new CompactCore(new SlotTable(new ArrayBuffer(SlotTable.bytes(SLOTS)), SLOTS), 16, opts);
  const model: { hash: bigint; stamp: number }[][] = Array.from({ length: SLOTS }, () => []);
  const writer = new RecordWriter();
  const out = new Int32Array(1);
  const apply = (op: number, slot: number, hashes: bigint[], stamp: number) => {
    writer.reset();
    writer.hashes(op, slot, { workerId: BigInt(slot + 1), dpRank: 0 }, hashes, stamp);
    core.applyRecords(writer.words, 1, out);
  };
  let clock = 1;
  let next = 1n;
  for (let step = 0; step < steps; step++) {
    const slot = Math.floor(rnd() * SLOTS);
    const list = model[slot];
    const r = rnd();
    if (r < 0.5 || list.length === 0) {
      const k = 1 + Math.floor(rnd() * 5);
      const hashes = Array.from({ length: k }, () => next++);
      apply(OP_STORE_ROUTED, slot, hashes, clock);
      hashes.forEach((hash, i) => list.push({ hash, stamp: clock + i }));
      const g = rnd();
      // Gaps that fit inline, need the side store, and pass 2^32.
      clock += k + (g < 0.4 ? Math.floor(rnd() * 40) : g < 0.8 ? Math.floor(rnd() * 100_000) : Math.floor(rnd() * 2 ** 40));
    } else if (r < 0.85) {
      const at = Math.floor(rnd() * list.length);
      apply(OP_REMOVE_ROUTED, slot, [list[at].hash], clock);
      list.splice(at, 1);
    } else {
      const all = model.flat().map((e) => e.stamp);
      const through = all[Math.floor(rnd() * all.length)];
      const expected = all.filter((s) => s <= through).length;
      for (let s = 0; s < SLOTS; s++) model[s] = model[s].filter((e) => e.stamp > through);
      assert.equal(core.evictThrough(through), expected, `seed ${seed} step ${step}: evicted`);
    }
    const stamps = model.flat().map((e) => e.stamp).sort((a, b) => a - b);
    const got = new Float64Array(stamps.length + 1);
    assert.equal(core.entries, stamps.length, `seed ${seed} step ${step}: entries`);
    assert.deepEqual([...got.subarray(0, core.oldestStamps(stamps.length + 1, got))], stamps, `seed ${seed} step ${step}: stamps`);
  }
}

describe("CompactCore stamp deltas vs a plain list per slot", () => {
  const layouts: { name: string; opts: CoreOptions }[] = [
    { name: "default (deltas up to 62 inline)", opts: {} },
    { name: "every delta in the Map", opts: { inlineStampDelta: 0, denseStampsAt: Infinity } },
    { name: "deltas over 1 in the dense array (past 2^32 in the Map)", opts: { inlineStampDelta: 1, denseStampsAt: 1 } },
  ];
  for (const { name, opts } of layouts) {
    it(`${name}: 60 cases of 300 steps`, () => {
      for (let seed = 1; seed <= 60; seed++) runCase(seed, opts, 300);
    });
  }
});
