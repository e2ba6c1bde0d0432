// Prompt hashing without a native call per block: XXH3-64's long-input path
// (inputs over 240 bytes, i.e. blocks of 61+ tokens, such as the usual 64)
// and the sequence hash, for the whole prompt in one WebAssembly call
// (wasmXxh3.ts), or in 32-bit JavaScript arithmetic when WebAssembly is not
// available. Bit-exact with src/hashing/blockHash.ts (test/indexer.hash.test.ts
// checks them against each other); shorter blocks and multimodal blocks fall
// back to the native hasher.
import { hashPrompt, localHashSeed, type PromptHashes } from "../hashing/blockHash.js";
import { seqHash32, seqOut } from "./seqHash.js";
import { createWasmHasher, type WasmHasher } from "./wasmXxh3.js";

/** The WebAssembly hasher (about 5x faster still); the JavaScript path below stands in if it cannot load. */
let wasm: WasmHasher | undefined;
try {
  wasm = createWasmHasher();
} catch {
  wasm = undefined;
}

const M64 = (1n << 64n) - 1n;
/** XXH3's default 192-byte secret. */
const K_SECRET = Uint8Array.from([
  0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
  0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
  0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
  0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
  0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
  0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
  0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
  0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
  0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
  0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
  0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
  0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
]);
const SECRET_SIZE = 192;
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
  // XXH3_initCustomSecret: each 16-byte lane adds the seed to its low word and subtracts it from its high word.
  const secret = new Uint8Array(SECRET_SIZE);
  const view = new DataView(secret.buffer);
  const k = new DataView(K_SECRET.buffer);
  for (let i = 0; i < SECRET_SIZE; i += 16) {
    view.setBigUint64(i, (k.getBigUint64(i, true) + seed) & M64, true);
    view.setBigUint64(i + 8, (k.getBigUint64(i + 8, true) - seed) & M64, true);
  }
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

/** Same result as hashPrompt() (blockHash.ts), about 10x faster for blocks of 61+ tokens. */
export function hashPromptFast(tokens: ArrayLike<number>, blockSize: number, loraName = ""): PromptHashes {
  if (blockSize * 4 <= 240) return hashPrompt(tokens, blockSize, loraName);
  if (wasm !== undefined) {
    const pairs = wasm.hash(tokens, blockSize, localHashSeed(loraName));
    const n = pairs.length / 2;
    const local = new Array<bigint>(n);
    const sequence = new Array<bigint>(n);
    for (let i = 0; i < n; i++) {
      local[i] = pairs[2 * i];
      sequence[i] = pairs[2 * i + 1];
    }
    return { local, sequence };
  }
  return hashPromptJs(tokens, blockSize, loraName);
}

/** The JavaScript fallback of hashPromptFast (exported for its test). */
export function hashPromptJs(tokens: ArrayLike<number>, blockSize: number, loraName = ""): PromptHashes {
  if (blockSize * 4 <= 240) return hashPrompt(tokens, blockSize, loraName);
  const u32 = tokens instanceof Uint32Array ? tokens : Uint32Array.from(tokens);
  const keys = keysFor(localHashSeed(loraName));
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
