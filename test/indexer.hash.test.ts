// The WebAssembly (SIMD) and JavaScript hashing of src/hashing/ (wasmXxh3.ts,
// prompt.ts, sequence.ts) against the native
// XXH3 hasher of blockHash.ts, which test/hash.test.ts checks against Python's
// xxhash: same local and sequence hashes for every block size, LoRA seed and
// input tried.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { hashPrompt, localBlockHash, localHashSeed, sequenceHash } from "../src/hashing/blockHash.js";
import { hashPromptFast, hashPromptJs, hashPromptSequence, hashPromptWords } from "../src/hashing/prompt.js";
import { SequenceHashes } from "../src/hashing/sequenceHashes.js";
import { seqHash32, seqOut } from "../src/hashing/sequence.js";
import { createWasmHasher } from "../src/hashing/wasmXxh3.js";
import { seededRandom } from "../src/util/random.js";

const rnd = seededRandom(99);
const u32 = () => Math.floor(rnd() * 2 ** 32);
const u64 = () => (BigInt(u32()) << 32n) | BigInt(u32());

describe("WebAssembly and JavaScript XXH3 equal the native hasher", () => {
  it("sequence hash: 20,000 random (parent, local) pairs and edge values", () => {
    const edges = [0n, 1n, (1n << 64n) - 1n, 1n << 63n, 0xffffffffn];
    const pairs: [bigint, bigint][] = edges.flatMap((a) => edges.map((b) => [a, b] as [bigint, bigint]));
    for (let i = 0; i < 20_000; i++) pairs.push([u64(), u64()]);
    for (const [p, l] of pairs) {
      seqHash32(Number(p & 0xffffffffn), Number(p >> 32n), Number(l & 0xffffffffn), Number(l >> 32n));
      assert.equal((BigInt(seqOut.hi) << 32n) | BigInt(seqOut.lo), sequenceHash(p, l), `parent ${p} local ${l}`);
    }
  });

  // Tokens are 4 bytes, so block sizes map onto XXH3's input-size classes:
  // 1-2 tokens 4..8 bytes, 3-4 the 9..16-byte path, 5-32 the 17..128-byte one
  // (branches past 32, 64, 96 bytes), 33-60 the 129..240-byte one (8 to 15
  // rounds, odd and even), 61+ the long path: stripes, the last partial
  // stripe, 1024-byte blocks and their scramble (255/256/257, 271-273,
  // 511-513 tokens sit on its edges).
  const SIZES = [
    ...Array.from({ length: 70 }, (_, i) => i + 1),
    ...[96, 100, 127, 128, 129, 240, 241, 255, 256, 257, 271, 272, 273, 300, 511, 512, 513, 1024, 1100],
  ];
  const SEEDS: [string, string][] = [["", ""], ["adapter-a", ""], ["ÄÖÜ", ""], ["", "tenant-1"], ["adapter-a", "tenant-1"]];

  it("prompt hashes for block sizes 1..1100 tokens, every XXH3 size class, base model, LoRA and namespace seeds", () => {
    for (const bs of SIZES) {
      for (const [lora, ns] of SEEDS) {
        for (let r = 0; r < 4; r++) {
          const extreme = r === 0 ? 0 : 0xffffffff; // all-zero and all-ones blocks, then random ones
          const tokens = Array.from({ length: bs * (1 + (r % 3)) + (r % 2) * 7 }, () => (r < 2 ? extreme : u32()));
          const want = hashPrompt(tokens, bs, lora, ns);
          const at = `block size ${bs}, lora "${lora}", namespace "${ns}", case ${r}`;
          assert.deepEqual(hashPromptFast(tokens, bs, lora, ns), want, `wasm: ${at}`);
          assert.deepEqual(hashPromptFast(Uint32Array.from(tokens), bs, lora, ns), want, `wasm, Uint32Array: ${at}`);
          assert.deepEqual(hashPromptSequence(tokens, bs, lora, ns), want.sequence, `wasm, sequence alone: ${at}`);
          assert.deepEqual(hashPromptWords(tokens, bs, lora, ns).bigints, want.sequence, `wasm, sequence words: ${at}`);
          assert.deepEqual(hashPromptJs(tokens, bs, lora, ns), want, `js: ${at}`);
        }
      }
    }
  });

  it("the decoders' path (tokenSpace + hashLocals) gives the native local hashes for every size class and seed", () => {
    const hasher = createWasmHasher();
    for (const bs of SIZES) {
      for (const [lora, ns] of SEEDS) {
        const seed = localHashSeed(lora, ns);
        const tokens = Array.from({ length: bs * 3 + 5 }, () => u32());
        const space = hasher.tokenSpace(tokens.length, bs);
        space.set(tokens);
        // blocks 1 and 2 only: the first token is not the space's first
        const got = hasher.hashLocals(bs, 2, bs, seed);
        for (let b = 1; b <= 2; b++) {
          const want = localBlockHash(tokens.slice(b * bs, (b + 1) * bs), seed);
          const have = (BigInt(got[2 * (b - 1) + 1]) << 32n) | BigInt(got[2 * (b - 1)]);
          assert.equal(have, want, `block ${b}, block size ${bs}, lora "${lora}", namespace "${ns}"`);
        }
      }
    }
  });

  it("FindBestWorker's decoder path (tokenSpace + sequenceWordsInPlace) gives the native sequence hashes, words owned by the caller", () => {
    const hasher = createWasmHasher();
    for (const bs of SIZES) {
      for (const [lora, ns] of SEEDS) {
        const seed = localHashSeed(lora, ns);
        const tokens = Array.from({ length: bs * 3 + (bs > 1 ? 5 % bs : 0) }, () => u32());
        // a space larger than the prompt, as the decoder sizes it by the message's bytes
        hasher.tokenSpace(tokens.length * 3 + 11, bs).set(tokens);
        const words = hasher.sequenceWordsInPlace(tokens.length, bs, seed);
        const want = hashPrompt(tokens, bs, lora, ns).sequence;
        const at = `block size ${bs}, lora "${lora}", namespace "${ns}"`;
        assert.deepEqual(new SequenceHashes(words).bigints, want, at);
        // the words are a copy: hashing another prompt in the same memory leaves them alone
        hasher.tokenSpace(tokens.length, bs).fill(7);
        hasher.sequenceWordsInPlace(tokens.length, bs, seed);
        assert.deepEqual(new SequenceHashes(words).bigints, want, `${at}, after reuse`);
      }
    }
    hasher.tokenSpace(10, 4);
    assert.throws(() => hasher.sequenceWordsInPlace(11, 4, 1337n), RangeError);
    assert.equal(hasher.sequenceWordsInPlace(3, 4, 1337n).length, 0);
  });

  it("SequenceHashes: words and bigints agree both ways, at any byte offset", () => {
    const hashes = Array.from({ length: 9 }, () => u64());
    const s = SequenceHashes.fromBigints(hashes);
    assert.equal(s.length, 9);
    assert.deepEqual(new SequenceHashes(s.words.slice()).bigints, hashes);
    const shifted = new Uint32Array(19);
    shifted.set(s.words, 1);
    assert.deepEqual(new SequenceHashes(shifted.subarray(1)).bigints, hashes);
    assert.equal(new SequenceHashes(new Uint32Array(0)).length, 0);
  });

  it("memory growth, seed changes and any ArrayLike of token ids", () => {
    const hasher = createWasmHasher();
    const seeds = SEEDS.map(([lora, ns]) => localHashSeed(lora, ns));
    // from a small prompt to ones far past the initial memory (2 pages), alternating seeds
    for (const [i, n] of [100, 8192, 200_000, 64, 1_000_003].entries()) {
      const tokens = Uint32Array.from({ length: n }, () => u32());
      const [lora, ns] = SEEDS[i % SEEDS.length];
      assert.deepEqual(hasher.hash(tokens, 64, seeds[i % seeds.length]), hashPrompt(tokens, 64, lora, ns), `${n} tokens`);
    }
    const tokens = Array.from({ length: 64 * 5 + 3 }, () => u32());
    const arrayLike = { length: tokens.length, ...Object.fromEntries(tokens.map((t, i) => [i, t])) } as ArrayLike<number>;
    assert.deepEqual(hashPromptFast(arrayLike, 64), hashPrompt(tokens, 64));
    assert.deepEqual(hashPromptFast(new Float64Array(tokens), 16), hashPrompt(tokens, 16));
    assert.deepEqual(hashPromptFast([], 64), { local: [], sequence: [] });
    assert.deepEqual(hashPromptFast(tokens.slice(0, 63), 64), { local: [], sequence: [] });
    assert.equal(hashPromptWords(tokens.slice(0, 63), 64).length, 0);
    assert.deepEqual(hashPromptWords(arrayLike, 64).bigints, hashPrompt(tokens, 64).sequence);
  });

  it("the reference block: tokens 0..63 hash to 0x304d910e689e42bf", () => {
    const ref = Array.from({ length: 64 }, (_, i) => i);
    assert.equal(hashPromptFast(ref, 64).local[0], 0x304d910e689e42bfn);
    assert.equal(hashPromptJs(ref, 64).local[0], 0x304d910e689e42bfn);
  });
});
