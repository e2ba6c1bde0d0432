// HolderSets (src/indexer/holderSets.ts) against a plain Map<node, Set<slot>>:
// seeded random adds and removes with slots drawn low (the inline bitset),
// clustered (range bitsets), spread over 100,000 ranks (lists) and mixed, so
// sets move between every container; every walk (matchStart / matchStep /
// matchEnd) is compared with the obvious intersection, and the pool stays
// proportional to the holders. Named cases pin the container changes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HolderSets } from "../src/indexer/holderSets.js";
import { seededRandom } from "../src/util/random.js";

const NODES = 48;

/** (slot, depth) pairs the walk over `path` gives, sorted by slot. */
function walk(hs: HolderSets, path: number[]): [number, number][] {
  hs.matchStart(path[0]);
  let depth = 1;
  let n = -1;
  for (; depth < path.length; depth++) {
    if (!hs.matchStep(path[depth], depth)) {
      n = hs.matched;
      break;
    }
  }
  if (n < 0) n = hs.matchEnd(depth);
  const out: [number, number][] = [];
  for (let i = 0; i < n; i++) out.push([hs.foundSlot[i], hs.foundDepth[i]]);
  return out.sort((a, b) => a[0] - b[0]);
}

/** What walk() must give: each holder of the first node, and how many leading nodes of the path it holds. */
function expectedWalk(model: Set<number>[], path: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const slot of model[path[0]]) {
    let d = 1;
    while (d < path.length && model[path[d]].has(slot)) d++;
    out.push([slot, d]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

type Draw = (rnd: () => number) => number;
const draws: Record<string, Draw> = {
  "low (0-63)": (r) => Math.floor(r() * 64),
  "clustered (1,000-1,300)": (r) => 1000 + Math.floor(r() * 300),
  "spread over 100,000": (r) => Math.floor(r() * 100_000),
  mixed: (r) => {
    const x = r();
    return x < 0.3 ? Math.floor(r() * 64) : x < 0.7 ? 5000 + Math.floor(r() * 200) : x < 0.95 ? Math.floor(r() * 20_000) : 1_048_575;
  },
};

function runRandom(seed: number, draw: Draw, steps: number): void {
  const rnd = seededRandom(seed);
  const hs = new HolderSets();
  hs.grow(NODES);
  const model = Array.from({ length: NODES }, () => new Set<number>());
  // Each node leans to a density for a while: sets grow to many holders and shrink back.
  const lean = Array.from({ length: NODES }, () => rnd());
  for (let i = 0; i < steps; i++) {
    const v = Math.floor(rnd() * NODES);
    if (rnd() < 0.01) lean[v] = rnd();
    const r = rnd();
    if (r < 0.75) {
      const held = [...model[v]];
      if (rnd() < lean[v] || held.length === 0) {
        // Often a holder of another node: walks then meet holders they keep and holders they drop.
        const other = [...model[Math.floor(rnd() * NODES)]];
        const x = rnd();
        const slot =
          held.length > 0 && x < 0.1 ? held[Math.floor(rnd() * held.length)] : other.length > 0 && x < 0.5 ? other[Math.floor(rnd() * other.length)] : draw(rnd);
        assert.equal(hs.add(v, slot), !model[v].has(slot), `seed ${seed} step ${i}: add ${slot} to ${v}`);
        model[v].add(slot);
      } else {
        const slot = rnd() < 0.9 ? held[Math.floor(rnd() * held.length)] : draw(rnd);
        assert.equal(hs.remove(v, slot), model[v].has(slot), `seed ${seed} step ${i}: remove ${slot} from ${v}`);
        model[v].delete(slot);
      }
    } else if (r < 0.85) {
      const slot = rnd() < 0.5 && model[v].size > 0 ? [...model[v]][0] : draw(rnd);
      assert.equal(hs.has(v, slot), model[v].has(slot), `seed ${seed} step ${i}: has`);
      assert.equal(hs.count(v), model[v].size, `seed ${seed} step ${i}: count`);
      assert.equal(hs.isEmpty(v), model[v].size === 0, `seed ${seed} step ${i}: isEmpty`);
      assert.deepEqual(hs.slotsOf(v), [...model[v]].sort((a, b) => a - b), `seed ${seed} step ${i}: slots`);
    } else {
      const live = model.flatMap((m, n) => (m.size > 0 ? [n] : []));
      if (live.length === 0) continue;
      // Random paths over live nodes; half of them go from fewer holders to more (few alive against long sets).
      const path = Array.from({ length: 2 + Math.floor(rnd() * 6) }, () => live[Math.floor(rnd() * live.length)]);
      if (rnd() < 0.5) path.sort((x, y) => model[x].size - model[y].size);
      assert.deepEqual(walk(hs, path), expectedWalk(model, path), `seed ${seed} step ${i}: walk ${path}`);
    }
  }
  // The pool is bounded by the holders (bytes beyond the per-node header words).
  const holders = model.reduce((n, m) => n + m.size, 0);
  const poolBytes = hs.bytes() - NODES * 9;
  assert.ok(poolBytes <= 4 * 2 * (2 * 5 * holders + NODES / 4 + 1024), `seed ${seed}: pool ${poolBytes} bytes for ${holders} holders`);
  // Emptied, it shrinks back (the last list or range freed packs the pool).
  for (let v = 0; v < NODES; v++) for (const slot of model[v]) assert.ok(hs.remove(v, slot));
  for (let v = 0; v < NODES; v++) assert.ok(hs.isEmpty(v));
}

describe("HolderSets vs a Map of Sets (seeded random)", () => {
  for (const [name, draw] of Object.entries(draws)) {
    it(`${name}: 40 cases of 1,500 steps`, () => {
      for (let seed = 1; seed <= 40; seed++) runRandom(seed, draw, 1500);
    });
  }
});

describe("HolderSets container changes", () => {
  const fresh = () => {
    const hs = new HolderSets();
    hs.grow(4);
    return hs;
  };

  it("inline bitset for slots 0-63, one and two slots inline above", () => {
    const hs = fresh();
    for (const s of [0, 31, 32, 63]) assert.ok(hs.add(0, s));
    assert.equal(hs.kindOf(0), "low");
    assert.equal(hs.add(0, 63), false);
    assert.ok(hs.add(1, 70_000));
    assert.equal(hs.kindOf(1), "one");
    assert.ok(hs.add(1, 5));
    assert.equal(hs.kindOf(1), "two");
    assert.deepEqual(hs.slotsOf(1), [5, 70_000]);
    assert.ok(hs.remove(1, 70_000));
    assert.equal(hs.kindOf(1), "low", "back inline once every holder is below 64");
    assert.ok(hs.remove(1, 5));
    assert.equal(hs.kindOf(1), "empty");
  });

  it("three slots inline, packed in 20 bits each", () => {
    const hs = fresh();
    for (const s of [1_048_575, 64, 524_288]) hs.add(0, s);
    assert.equal(hs.kindOf(0), "three");
    assert.deepEqual(hs.slotsOf(0), [64, 524_288, 1_048_575]);
    assert.ok(hs.has(0, 524_288) && !hs.has(0, 524_289));
    assert.deepEqual(walk(hs, [0]), [
      [64, 1],
      [524_288, 1],
      [1_048_575, 1],
    ]);
    hs.add(0, 7);
    assert.equal(hs.kindOf(0), "list", "a fourth holder");
    hs.remove(0, 1_048_575);
    assert.equal(hs.kindOf(0), "three");
    assert.deepEqual(hs.slotsOf(0), [7, 64, 524_288]);
  });

  it("list -> range bitset -> list as holders come and go", () => {
    const hs = fresh();
    for (const s of [100, 200, 290, 400, 500]) hs.add(0, s);
    assert.equal(hs.kindOf(0), "list", "5 holders spanning 13 words");
    for (let s = 96; s < 128; s++) hs.add(0, s);
    assert.equal(hs.kindOf(0), "range", "36 holders spanning 13 words");
    assert.equal(hs.count(0), 36);
    for (let s = 96; s < 128; s++) if (s !== 100) hs.remove(0, s);
    assert.equal(hs.kindOf(0), "list", "5 holders left");
    assert.deepEqual(hs.slotsOf(0), [100, 200, 290, 400, 500]);
    hs.remove(0, 400);
    hs.remove(0, 500);
    assert.equal(hs.kindOf(0), "three");
  });

  it("a range keeps its holders while at least half full", () => {
    const hs = fresh();
    for (let s = 64; s < 64 + 10 * 32; s++) hs.add(0, s); // words 2-11, full
    assert.equal(hs.kindOf(0), "range");
    const keep = [64, 130, 200, 300, 383];
    for (let s = 64; s < 64 + 10 * 32; s++) if (!keep.includes(s)) hs.remove(0, s);
    assert.equal(hs.kindOf(0), "range", "5 holders in 10 words: half full");
    hs.remove(0, 130);
    assert.equal(hs.kindOf(0), "list", "4 holders in 10 words");
    assert.deepEqual(hs.slotsOf(0), [64, 200, 300, 383]);
  });

  it("a slot far from the others: a range does not widen across it", () => {
    const hs = fresh();
    for (let s = 64; s < 128; s++) hs.add(0, s);
    assert.equal(hs.kindOf(0), "range");
    hs.add(0, 99_999);
    assert.equal(hs.kindOf(0), "list", "65 holders spanning 3,123 words");
    assert.deepEqual(walk(hs, [0]).length, 65);
    hs.remove(0, 99_999);
    assert.deepEqual(hs.slotsOf(0), Array.from({ length: 64 }, (_, i) => 64 + i));
  });

  it("the pool packs itself once more than half of it is free", () => {
    const hs = fresh();
    const rnd = seededRandom(7);
    const slots = Array.from({ length: 4 }, () => [...new Set(Array.from({ length: 700 }, () => 64 + Math.floor(rnd() * 500_000)))]);
    slots.forEach((list, v) => list.forEach((s) => hs.add(v, s)));
    const big = hs.bytes();
    // Down to 5 holders each: the big blocks go back to their free list, then the pool is packed.
    slots.forEach((list, v) => list.slice(5).forEach((s) => assert.ok(hs.remove(v, s))));
    assert.ok(hs.bytes() * 4 < big, `${hs.bytes()} bytes after shrinking, ${big} before`);
    slots.forEach((list, v) => assert.deepEqual(hs.slotsOf(v), list.slice(0, 5).sort((a, b) => a - b)));
    assert.deepEqual(walk(hs, [0, 1]).length, 5);
  });

  it("a walk from a few holders into a long list (binary search) keeps every holder it meets", () => {
    const hs = fresh();
    for (const s of [150, 200]) hs.add(0, s);
    for (let s = 100; s < 3000; s += 100) hs.add(1, s); // 29 holders in a list; 150 is not one of them
    assert.equal(hs.kindOf(1), "list");
    assert.deepEqual(walk(hs, [0, 1]), [
      [150, 1],
      [200, 2],
    ]);
  });

  it("walks across containers: range, list, inline, with the early exit", () => {
    const hs = fresh();
    for (let s = 0; s < 2000; s++) hs.add(0, s); // range over 63 words
    for (const s of [3, 40, 1500, 1999]) hs.add(1, s); // list
    hs.add(2, 40); // low
    hs.add(3, 1999); // one
    assert.deepEqual(walk(hs, [0, 1, 2]).filter(([, d]) => d > 1), [
      [3, 2],
      [40, 3],
      [1500, 2],
      [1999, 2],
    ]);
    assert.equal(walk(hs, [0, 1, 2, 3]).length, 2000, "every holder of the first node is answered");
    assert.deepEqual(walk(hs, [1, 3, 2]), [
      [3, 1],
      [40, 1],
      [1500, 1],
      [1999, 2],
    ]);
  });
});
