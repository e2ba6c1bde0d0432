// The index chains a stored event's sequence hashes in one WebAssembly call
// (src/hashing/sequenceChain.ts over wasmXxh3.ts' chain()). It must give the
// native hasher's sequence hashes bit for bit, with and without a parent, for
// any event length, and so must the JavaScript fallback.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sequenceHash } from "../src/hashing/blockHash.js";
import { createSequenceChainer, jsSequenceChainer } from "../src/hashing/sequenceChain.js";
import { seededRandom } from "../src/util/random.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { PrefixIndex } from "../src/indexer/prefixIndex.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import type { IndexEvent } from "../src/protocols/events.js";

const M64 = (1n << 64n) - 1n;
const lo = (x: bigint) => Number(x & 0xffffffffn);
const hi = (x: bigint) => Number(x >> 32n);

describe("sequence hashes of a stored event, chained in one call", () => {
  it("equal the native hasher's, with and without a parent, 0 to 300 blocks, in the WebAssembly and JavaScript chainers", () => {
    const rnd = seededRandom(5);
    const u64 = () => (BigInt(Math.floor(rnd() * 2 ** 32)) << 32n) | BigInt(Math.floor(rnd() * 2 ** 32));
    const wasm = createSequenceChainer();
    const js = jsSequenceChainer();
    for (let c = 0; c < 300; c++) {
      const n = c < 20 ? c : Math.floor(rnd() * 300);
      const locals = Array.from({ length: n }, () => (c % 7 === 0 ? u64() & 0xffn : u64()));
      const parent = c % 3 === 0 ? undefined : c % 5 === 0 ? M64 : u64();
      // Records as the index writes them, after a few words of something else: external lo, hi, local lo, hi.
      const at = 3;
      const records = new Uint32Array(at + 4 * n);
      locals.forEach((l, i) => records.set([i, 1000 + i, lo(l), hi(l)], at + 4 * i));
      const expected: number[] = [];
      let s = parent;
      for (const l of locals) {
        s = s === undefined ? l : sequenceHash(s, l);
        expected.push(lo(s), hi(s));
      }
      for (const [name, chainer] of [["wasm", wasm], ["js", js]] as const) {
        const got = chainer.chain(records, at, n, parent === undefined ? 0 : lo(parent), parent === undefined ? 0 : hi(parent), parent !== undefined);
        assert.deepEqual(Array.from(got.subarray(0, 2 * n)), expected, `${name}, case ${c}: ${n} blocks, parent ${parent}`);
      }
    }
  });

  it("an event longer than one chaining slice (10,000 blocks) indexes as the reference does", async () => {
    const index = await CompactIndex.create({ shards: 0 });
    const ref = new PrefixIndex();
    const blocks = Array.from({ length: 10_000 }, (_, i) => ({ externalHash: BigInt(i + 1), localHash: (BigInt(i) * 0x9e3779b97f4a7c15n) & M64 }));
    const events: IndexEvent[] = [
      { kind: "stored", workerId: 1n, dpRank: 0, eventId: 1n, blocks },
      // A child of block 9,000: its chain continues from a hash made in the third slice.
      { kind: "stored", workerId: 1n, dpRank: 0, eventId: 2n, parentHash: 9000n, blocks: [{ externalHash: 20_000n, localHash: 77n }] },
    ];
    index.applyBatch(toEventBatch(events));
    for (const e of events) ref.apply(e);
    const seqs: bigint[] = [];
    let s: bigint | undefined;
    for (const b of blocks) seqs.push((s = s === undefined ? b.localHash : sequenceHash(s, b.localHash)));
    assert.deepEqual([...index.findMatches(seqs)], [...ref.findMatches(seqs)]);
    assert.deepEqual([...index.findMatches(seqs)], [["1:0", 10_000]]);
    const branch = [...seqs.slice(0, 9000), sequenceHash(seqs[8999], 77n)];
    assert.deepEqual([...index.findMatches(branch)], [["1:0", 9001]]);
    await index.close();
  });
});
