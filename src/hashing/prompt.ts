// Prompt hashing without a native call per block: every block's local hash
// (XXH3-64) and the sequence hash, for the whole prompt in one WebAssembly
// call (wasmXxh3.ts, 128-bit SIMD, every block size), or, when WebAssembly
// cannot load, XXH3's long-input path (blocks of 61+ tokens) in 32-bit
// JavaScript arithmetic. Bit-exact with src/hashing/blockHash.ts
// (test/indexer.hash.test.ts checks them against each other); multimodal
// blocks use the native hasher.
import { hashPrompt, localHashSeed, type PromptHashes } from "./blockHash.js";
import { seqHash32, seqOut } from "./sequence.js";
import { SequenceHashes } from "./sequenceHashes.js";
import { createWasmHasher, type WasmHasher } from "./wasmXxh3.js";
import { M64, SECRET_SIZE, customSecret } from "./xxh3Secret.js";

/** The WebAssembly hasher; the JavaScript path below stands in if it cannot load. */
let wasm: WasmHasher | undefined;
try {
  wasm = createWasmHasher();
} catch {
  wasm = undefined;
}

const STRIPE = 64;
const STRIPES_PER_BLOCK = (SECRET_SIZE - STRIPE) / 8;
const BLOCK_LEN = STRIPE * STRIPES_PER_BLOCK;
const PRIME32_1 = 0x9e3779b1;
const PRIME64_1 = 0x9e3779b185ebca87n;
const INIT_ACC = [0xc2b2ae3dn, 0x9e3779b185ebca87n, 0xc2b2ae3d27d4eb4fn, 0x165667b19e3779f9n, 0x85ebca77c2b2ae63n, 0x85ebca77n, 0x27d4eb2f165667c5n, 0x9e3779b1n];
const MX_LO = 0x9e3779f9;
const MX_HI = 0x16566791;
const TWO32 = 4294967296;

function mulHi(a: number, b: number): number {
  // The double product is off by at most 2^11 from the exact one; with the
  // exact low word removed, dividing by 2^32 lands within 2^-20 of the high
  // word, so rounding gives it exactly.
  return Math.round((a * b - (Math.imul(a, b) >>> 0)) / 4294967296) >>> 0;
}

/** A seed's derived secret, as the u32 halves of the u64 words each step reads. */
interface Keys {
  /** Stripe keys: u64 at byte 8*j for j = 0..23, as (lo, hi) pairs. */
  stripe: Uint32Array;
  /** Last-stripe keys at byte 121 + 8*i. */
  last: Uint32Array;
  /** Merge keys at byte 11 + 8*j, j = 0..7. */
  merge: Uint32Array;
}

const keyCache = new Map<bigint, Keys>();

function keysFor(seed: bigint): Keys {
  let keys = keyCache.get(seed);
  if (keys !== undefined) return keys;
  const view = new DataView(customSecret(seed).buffer);
  const words = (offsets: number[]) => {
    const out = new Uint32Array(offsets.length * 2);
    offsets.forEach((o, j) => {
      out[2 * j] = view.getUint32(o, true);
      out[2 * j + 1] = view.getUint32(o + 4, true);
    });
    return out;
  };
  keys = {
    stripe: words(Array.from({ length: 24 }, (_, j) => 8 * j)),
    last: words(Array.from({ length: 8 }, (_, i) => SECRET_SIZE - STRIPE - 7 + 8 * i)),
    merge: words(Array.from({ length: 8 }, (_, j) => 11 + 8 * j)),
  };
  if (keyCache.size > 64) keyCache.clear();
  keyCache.set(seed, keys);
  return keys;
}

const acc = new Uint32Array(16);
const INIT = new Uint32Array(INIT_ACC.flatMap((v) => [Number(v & 0xffffffffn), Number(v >> 32n)]));
const lenStart = new Map<number, [number, number]>();

/** acc[i^1] += data; acc[i] += lo32(data ^ key) * hi32(data ^ key), for the 8 lanes of one stripe. */
function accumulate512(w: Uint32Array, at: number, keys: Uint32Array, k: number): void {
  for (let i = 0; i < 8; i++) {
    const dLo = w[at + 2 * i];
    const dHi = w[at + 2 * i + 1];
    const xLo = (dLo ^ keys[k + 2 * i]) >>> 0;
    const xHi = (dHi ^ keys[k + 2 * i + 1]) >>> 0;
    const j = 2 * (i ^ 1);
    let lo = acc[j] + dLo;
    acc[j + 1] = acc[j + 1] + dHi + (lo >= TWO32 ? 1 : 0);
    acc[j] = lo;
    lo = acc[2 * i] + (Math.imul(xLo, xHi) >>> 0);
    acc[2 * i + 1] = acc[2 * i + 1] + mulHi(xLo, xHi) + (lo >= TWO32 ? 1 : 0);
    acc[2 * i] = lo;
  }
}

function scramble(keys: Uint32Array): void {
  for (let i = 0; i < 8; i++) {
    const hi = acc[2 * i + 1];
    const lo = (acc[2 * i] ^ (hi >>> 15) ^ keys[32 + 2 * i]) >>> 0;
    const h = (hi ^ keys[33 + 2 * i]) >>> 0;
    acc[2 * i] = Math.imul(lo, PRIME32_1);
    acc[2 * i + 1] = mulHi(lo, PRIME32_1) + Math.imul(h, PRIME32_1);
  }
}

/** XXH3-64 of `w[from..from+words)` (u32 words, little-endian bytes); result in seqOut. Needs words*4 > 240. */
function xxh3Long(w: Uint32Array, from: number, words: number, keys: Keys): void {
  const len = words * 4;
  acc.set(INIT);
  const nbBlocks = Math.floor((len - 1) / BLOCK_LEN);
  for (let b = 0; b < nbBlocks; b++) {
    for (let s = 0; s < STRIPES_PER_BLOCK; s++) accumulate512(w, from + (b * BLOCK_LEN + s * STRIPE) / 4, keys.stripe, 2 * s);
    scramble(keys.stripe);
  }
  const nbStripes = Math.floor((len - 1 - BLOCK_LEN * nbBlocks) / STRIPE);
  for (let s = 0; s < nbStripes; s++) accumulate512(w, from + (nbBlocks * BLOCK_LEN + s * STRIPE) / 4, keys.stripe, 2 * s);
  accumulate512(w, from + words - STRIPE / 4, keys.last, 0);
  // merge: start = len * PRIME64_1, plus the folded products of the 4 accumulator pairs
  let start = lenStart.get(len);
  if (start === undefined) {
    const v = (BigInt(len) * PRIME64_1) & M64;
    start = [Number(v & 0xffffffffn), Number(v >> 32n)];
    lenStart.set(len, start);
  }
  let rLo = start[0];
  let rHi = start[1];
  const m = keys.merge;
  for (let p = 0; p < 4; p++) {
    const aLo = (acc[4 * p] ^ m[4 * p]) >>> 0;
    const aHi = (acc[4 * p + 1] ^ m[4 * p + 1]) >>> 0;
    const bLo = (acc[4 * p + 2] ^ m[4 * p + 2]) >>> 0;
    const bHi = (acc[4 * p + 3] ^ m[4 * p + 3]) >>> 0;
    const llHi = mulHi(aLo, bLo);
    const s1 = llHi + (Math.imul(aLo, bHi) >>> 0) + (Math.imul(aHi, bLo) >>> 0);
    const s2 = (Math.imul(aHi, bHi) >>> 0) + mulHi(aLo, bHi) + mulHi(aHi, bLo) + Math.floor(s1 / TWO32);
    const w3 = (mulHi(aHi, bHi) + Math.floor(s2 / TWO32)) >>> 0;
    const foldLo = ((Math.imul(aLo, bLo) >>> 0) ^ (s2 >>> 0)) >>> 0;
    const foldHi = ((s1 >>> 0) ^ w3) >>> 0;
    const lo = rLo + foldLo;
    rHi = (rHi + foldHi + (lo >= TWO32 ? 1 : 0)) >>> 0;
    rLo = lo >>> 0;
  }
  // avalanche
  rLo = (rLo ^ (rHi >>> 5)) >>> 0;
  const hi = (mulHi(rLo, MX_LO) + Math.imul(rLo, MX_HI) + Math.imul(rHi, MX_LO)) >>> 0;
  seqOut.lo = ((Math.imul(rLo, MX_LO) >>> 0) ^ hi) >>> 0;
  seqOut.hi = hi;
}

const big = new BigUint64Array(1);
const halves = new Uint32Array(big.buffer);

/** Same result as hashPrompt() (blockHash.ts), without a native call per block. */
export function hashPromptFast(tokens: ArrayLike<number>, blockSize: number, loraName = "", cacheNamespace = ""): PromptHashes {
  if (wasm !== undefined) return wasm.hash(tokens, blockSize, localHashSeed(loraName, cacheNamespace));
  return hashPromptJs(tokens, blockSize, loraName, cacheNamespace);
}

/** hashPromptFast(...).sequence, without making bigints of the local hashes: what routing reads. */
export function hashPromptSequence(tokens: ArrayLike<number>, blockSize: number, loraName = "", cacheNamespace = ""): bigint[] {
  if (wasm !== undefined) return wasm.sequence(tokens, blockSize, localHashSeed(loraName, cacheNamespace));
  return hashPromptJs(tokens, blockSize, loraName, cacheNamespace).sequence;
}

/**
 * hashPromptSequence() as u32 words (SequenceHashes): routing's form, with
 * no bigints made unless a reader asks.
 */
export function hashPromptWords(tokens: ArrayLike<number>, blockSize: number, loraName = "", cacheNamespace = ""): SequenceHashes {
  if (wasm !== undefined) return new SequenceHashes(wasm.sequenceWords(tokens, blockSize, localHashSeed(loraName, cacheNamespace)));
  return SequenceHashes.fromBigints(hashPromptJs(tokens, blockSize, loraName, cacheNamespace).sequence);
}

/** A hasher of its own for a decoder that writes token ids into its memory (undefined where WebAssembly cannot load). */
export function createPromptSpace(): WasmHasher | undefined {
  return wasm === undefined ? undefined : createWasmHasher();
}

/** The JavaScript fallback of hashPromptFast (exported for its test). */
export function hashPromptJs(tokens: ArrayLike<number>, blockSize: number, loraName = "", cacheNamespace = ""): PromptHashes {
  if (blockSize * 4 <= 240) return hashPrompt(tokens, blockSize, loraName, cacheNamespace);
  const u32 = tokens instanceof Uint32Array ? tokens : Uint32Array.from(tokens);
  const keys = keysFor(localHashSeed(loraName, cacheNamespace));
  const blocks = Math.floor(u32.length / blockSize);
  const local = new Array<bigint>(blocks);
  const sequence = new Array<bigint>(blocks);
  let pLo = 0;
  let pHi = 0;
  for (let i = 0; i < blocks; i++) {
    xxh3Long(u32, i * blockSize, blockSize, keys);
    const lLo = seqOut.lo;
    const lHi = seqOut.hi;
    halves[0] = lLo;
    halves[1] = lHi;
    local[i] = big[0];
    if (i > 0) {
      seqHash32(pLo, pHi, lLo, lHi);
      pLo = seqOut.lo;
      pHi = seqOut.hi;
      halves[0] = pLo;
      halves[1] = pHi;
      sequence[i] = big[0];
    } else {
      pLo = lLo;
      pHi = lHi;
      sequence[i] = local[i];
    }
  }
  return { local, sequence };
}
