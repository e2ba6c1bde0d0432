// The WebAssembly and JavaScript hashing of src/hashing/ (wasmXxh3.ts, prompt.ts,
// sequence.ts) against the native
// XXH3 hasher of blockHash.ts, which test/hash.test.ts checks against Python's
// xxhash: same local and sequence hashes for every block size, LoRA seed and
// input tried.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { hashPrompt, sequenceHash } from "../src/hashing/blockHash.js";
import { hashPromptFast, hashPromptJs } from "../src/hashing/prompt.js";
import { seqHash32, seqOut } from "../src/hashing/sequence.js";
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

  it("prompt hashes for block sizes 1..1100 tokens (long path from 61), base model and LoRA", () => {
    const sizes = [1, 16, 32, 60, 61, 64, 65, 100, 128, 255, 256, 257, 300, 512, 1024, 1100];
    for (const bs of sizes) {
      for (const lora of ["", "adapter-a", "ÄÖÜ"]) {
        for (let r = 0; r < 6; r++) {
          const tokens = Array.from({ length: bs * (1 + (r % 3)) + (r % 2) * 7 }, () => (r === 0 ? 0 : u32()));
          const want = hashPrompt(tokens, bs, lora);
          assert.deepEqual(hashPromptFast(tokens, bs, lora), want, `wasm: block size ${bs}, lora "${lora}", case ${r}`);
          assert.deepEqual(hashPromptJs(tokens, bs, lora), want, `js: block size ${bs}, lora "${lora}", case ${r}`);
        }
      }
    }
  });

  it("the reference block: tokens 0..63 hash to 0x304d910e689e42bf", () => {
    const ref = Array.from({ length: 64 }, (_, i) => i);
    assert.equal(hashPromptFast(ref, 64).local[0], 0x304d910e689e42bfn);
    assert.equal(hashPromptJs(ref, 64).local[0], 0x304d910e689e42bfn);
  });
});
