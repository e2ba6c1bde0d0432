// The baseline for bench/indexer.bench.ts: the router's WebAssembly prompt
// hasher as it was before the SIMD one in src/hashing/wasmXxh3.ts (issue 21),
// kept unchanged (scalar i64 code, XXH3's long path only, blocks of 61+
// tokens) so the benchmark can time both in the same run.
import {
  I32,
  I32_ADD,
  I32_DIV_U,
  I32_EQZ,
  I32_GE_U,
  I32_MUL,
  I32_SUB,
  I64,
  I64_ADD,
  I64_AND,
  I64_EXTEND_I32_U,
  I64_MUL,
  I64_OR,
  I64_SHL,
  I64_SHR_U,
  I64_XOR,
  WA,
  type WasmMemory,
  body,
  call,
  get,
  i32c,
  i64c,
  ifThenElse,
  load64,
  loopUntil,
  section,
  set,
  store64,
  str,
  uleb,
  vec,
} from "../src/hashing/wasmAsm.js";
import { hashPrompt, localHashSeed, type PromptHashes } from "../src/hashing/blockHash.js";
import { SECRET_SIZE, SEQ_FLIP1 as FLIP1, SEQ_FLIP2 as FLIP2, customSecret } from "../src/hashing/xxh3Secret.js";

// ---- XXH3 ------------------------------------------------------------------
const SECRET = 0; // 192 bytes: the seed's derived secret
const DATA = 512; // tokens, then the output hashes
const M32 = 0xffffffffn;
const PRIME32_1 = 0x9e3779b1n;
const PRIME64_1 = 0x9e3779b185ebca87n;
const MX = 0x165667919e3779f9n;
const INIT_ACC = [0xc2b2ae3dn, 0x9e3779b185ebca87n, 0xc2b2ae3d27d4eb4fn, 0x165667b19e3779f9n, 0x85ebca77c2b2ae63n, 0x85ebca77n, 0x27d4eb2f165667c5n, 0x9e3779b1n];

const F_FOLD = 0; // (a, b) -> lo(a*b) ^ hi(a*b)
const F_AVALANCHE = 1; // (h) -> h
const F_BSWAP = 2; // (x) -> x
const F_SEQ = 3; // (parent, local) -> sequence hash
const F_LONG = 4; // (ptr, len) -> hash
const F_HASH_ALL = 5; // (tok, blockBytes, nBlocks, out)
const F_HASH_LOCALS = 6; // (tok, blockBytes, nBlocks, out)

// fold(a, b): 64x64 -> 128 by 32-bit halves; locals 2..5 = ll, lh, hl, cross
const lo = (i: number) => [...get(i), ...i64c(M32), I64_AND];
const hi = (i: number) => [...get(i), ...i64c(32n), I64_SHR_U];
const fold = [
  ...lo(0), ...lo(1), I64_MUL, ...set(2),
  ...lo(0), ...hi(1), I64_MUL, ...set(3),
  ...hi(0), ...lo(1), I64_MUL, ...set(4),
  // cross = (ll >> 32) + (lh & M32) + hl
  ...get(2), ...i64c(32n), I64_SHR_U, ...get(3), ...i64c(M32), I64_AND, I64_ADD, ...get(4), I64_ADD, ...set(5),
  // lower = (cross << 32) | (ll & M32)
  ...get(5), ...i64c(32n), I64_SHL, ...get(2), ...i64c(M32), I64_AND, I64_OR,
  // upper = hi(a)*hi(b) + (lh >> 32) + (cross >> 32)
  ...hi(0), ...hi(1), I64_MUL, ...get(3), ...i64c(32n), I64_SHR_U, I64_ADD, ...get(5), ...i64c(32n), I64_SHR_U, I64_ADD,
  I64_XOR,
];
const avalanche = [
  ...get(0), ...get(0), ...i64c(37n), I64_SHR_U, I64_XOR, ...i64c(MX), I64_MUL, ...set(0),
  ...get(0), ...get(0), ...i64c(32n), I64_SHR_U, I64_XOR,
];
const bswap: number[] = [...i64c(0n)];
for (let k = 0; k < 8; k++) {
  // byte k moves to byte 7-k
  bswap.push(...get(0), ...i64c(BigInt(8 * k)), I64_SHR_U, ...i64c(0xffn), I64_AND, ...i64c(BigInt(8 * (7 - k))), I64_SHL, I64_OR);
}
// seq(parent, local): a = parent ^ FLIP1, b = local ^ FLIP2; avalanche(16 + bswap(a) + b + fold(a, b))
const seq = [
  ...get(0), ...i64c(FLIP1), I64_XOR, ...set(0),
  ...get(1), ...i64c(FLIP2), I64_XOR, ...set(1),
  ...i64c(16n), ...get(0), ...call(F_BSWAP), I64_ADD, ...get(1), I64_ADD, ...get(0), ...get(1), ...call(F_FOLD), I64_ADD,
  ...call(F_AVALANCHE),
];
// long(ptr, len): i32 locals 2 = nbBlocks, 3 = b, 4 = s, 5 = nbStripes, 7 = stripe ptr, 8 = key ptr;
// i64 locals 6 = result, 9..16 = the 8 accumulators (kept in locals: no memory traffic), 17 = d, 18 = dk
const A = (i: number) => 9 + i;
/** One stripe at local 7 with keys at local 8, on the accumulator locals. */
const stripeInline: number[] = [];
for (let i = 0; i < 8; i++) {
  stripeInline.push(...get(7), ...load64(8 * i), ...set(17));
  stripeInline.push(...get(17), ...get(8), ...load64(8 * i), I64_XOR, ...set(18));
  stripeInline.push(...get(A(i ^ 1)), ...get(17), I64_ADD, ...set(A(i ^ 1)));
  stripeInline.push(...get(A(i)), ...get(18), ...i64c(M32), I64_AND, ...get(18), ...i64c(32n), I64_SHR_U, I64_MUL, I64_ADD, ...set(A(i)));
}
const scrambleInline: number[] = [];
for (let i = 0; i < 8; i++) {
  scrambleInline.push(...get(A(i)), ...get(A(i)), ...i64c(47n), I64_SHR_U, I64_XOR, ...i32c(0), ...load64(SECRET + 128 + 8 * i), I64_XOR, ...i64c(PRIME32_1), I64_MUL, ...set(A(i)));
}
const long: number[] = [];
INIT_ACC.forEach((v, i) => long.push(...i64c(v), ...set(A(i))));
long.push(...get(1), ...i32c(1), I32_SUB, ...i32c(1024), I32_DIV_U, ...set(2));
long.push(...i32c(0), ...set(3));
long.push(
  ...loopUntil(
    [...get(3), ...get(2), I32_GE_U],
    [
      ...i32c(0), ...set(4),
      ...loopUntil(
        [...get(4), ...i32c(16), I32_GE_U],
        [
          ...get(0), ...get(3), ...i32c(1024), I32_MUL, I32_ADD, ...get(4), ...i32c(64), I32_MUL, I32_ADD, ...set(7),
          ...i32c(SECRET), ...get(4), ...i32c(8), I32_MUL, I32_ADD, ...set(8),
          ...stripeInline,
          ...get(4), ...i32c(1), I32_ADD, ...set(4),
        ],
      ),
      ...scrambleInline,
      ...get(3), ...i32c(1), I32_ADD, ...set(3),
    ],
  ),
);
// nbStripes = ((len - 1) - 1024 * nbBlocks) / 64
long.push(...get(1), ...i32c(1), I32_SUB, ...get(2), ...i32c(1024), I32_MUL, I32_SUB, ...i32c(64), I32_DIV_U, ...set(5));
long.push(...i32c(0), ...set(4));
long.push(
  ...loopUntil(
    [...get(4), ...get(5), I32_GE_U],
    [
      ...get(0), ...get(2), ...i32c(1024), I32_MUL, I32_ADD, ...get(4), ...i32c(64), I32_MUL, I32_ADD, ...set(7),
      ...i32c(SECRET), ...get(4), ...i32c(8), I32_MUL, I32_ADD, ...set(8),
      ...stripeInline,
      ...get(4), ...i32c(1), I32_ADD, ...set(4),
    ],
  ),
);
// the last stripe: the input's final 64 bytes, keys at 192 - 64 - 7
long.push(...get(0), ...get(1), I32_ADD, ...i32c(64), I32_SUB, ...set(7), ...i32c(SECRET + 192 - 64 - 7), ...set(8), ...stripeInline);
// merge: len * PRIME64_1 + sum fold(acc[2j] ^ k(11+16j), acc[2j+1] ^ k(19+16j))
long.push(...get(1), I64_EXTEND_I32_U, ...i64c(PRIME64_1), I64_MUL, ...set(6));
for (let j = 0; j < 4; j++) {
  long.push(
    ...get(6),
    ...get(A(2 * j)), ...i32c(0), ...load64(SECRET + 11 + 16 * j), I64_XOR,
    ...get(A(2 * j + 1)), ...i32c(0), ...load64(SECRET + 19 + 16 * j), I64_XOR,
    ...call(F_FOLD), I64_ADD, ...set(6),
  );
}
long.push(...get(6), ...call(F_AVALANCHE));
// hashAll(tok, blockBytes, nBlocks, out): out[2b] = local, out[2b+1] = sequence; locals 4 = b (i32), 5 = local, 6 = seq (i64)
const hashAll = [
  ...i32c(0), ...set(4),
  ...loopUntil(
    [...get(4), ...get(2), I32_GE_U],
    [
      ...get(0), ...get(4), ...get(1), I32_MUL, I32_ADD, ...get(1), ...call(F_LONG), ...set(5),
      ...ifThenElse([...get(4), I32_EQZ], [...get(5), ...set(6)], [...get(6), ...get(5), ...call(F_SEQ), ...set(6)]),
      ...get(3), ...get(4), ...i32c(16), I32_MUL, I32_ADD, ...get(5), ...store64(0),
      ...get(3), ...get(4), ...i32c(16), I32_MUL, I32_ADD, ...get(6), ...store64(8),
      ...get(4), ...i32c(1), I32_ADD, ...set(4),
    ],
  ),
];

// hashLocals(tok, blockBytes, nBlocks, out): out[b] = local hash of block b (no chaining); local 4 = b
const hashLocals = [
  ...i32c(0), ...set(4),
  ...loopUntil(
    [...get(4), ...get(2), I32_GE_U],
    [
      ...get(3), ...get(4), ...i32c(8), I32_MUL, I32_ADD,
      ...get(0), ...get(4), ...get(1), I32_MUL, I32_ADD, ...get(1), ...call(F_LONG),
      ...store64(0),
      ...get(4), ...i32c(1), I32_ADD, ...set(4),
    ],
  ),
];

export function buildModule(): Uint8Array {
  const types = [
    [0x60, ...vec([[I64], [I64]]), ...vec([[I64]])], // 0 (i64,i64)->i64
    [0x60, ...vec([[I64]]), ...vec([[I64]])], // 1 (i64)->i64
    [0x60, ...vec([[I32], [I32]]), ...vec([[I64]])], // 2 (i32,i32)->i64
    [0x60, ...vec([[I32], [I32], [I32], [I32]]), ...vec([])], // 3 (i32 x4)->()
  ];
  const funcTypes = [0, 1, 1, 0, 2, 3, 3];
  const bodies = [
    body([[4, I64]], fold),
    body([], avalanche),
    body([], bswap),
    body([], seq),
    body([[4, I32], [1, I64], [2, I32], [10, I64]], long),
    body([[1, I32], [2, I64]], hashAll),
    body([[1, I32]], hashLocals),
  ];
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(3, vec(funcTypes.map((t) => uleb(t)))),
    ...section(5, vec([[0x00, ...uleb(2)]])),
    ...section(7, vec([[...str("mem"), 0x02, 0], [...str("hashAll"), 0x00, F_HASH_ALL], [...str("hashLocals"), 0x00, F_HASH_LOCALS]])),
    ...section(10, vec(bodies)),
  ]);
}

export interface ScalarWasmHasher {
  /** Local and sequence hashes of every full block, as u64 pairs [local0, seq0, local1, seq1, ...]. */
  hash(tokens: ArrayLike<number>, blockSize: number, seed: bigint): BigUint64Array;
  /**
   * Token space in the module's memory for `tokens` token ids followed by
   * room for their hashes: decoders write token ids there directly. The view
   * stays valid until the next tokenSpace() call.
   */
  tokenSpace(tokens: number, blockSize: number): Uint32Array;
  /**
   * Local hashes of `blocks` blocks of `blockSize` tokens starting at token
   * `first` of the token space, as (lo, hi) u32 pairs (a view, valid until
   * the next call).
   */
  hashLocals(first: number, blocks: number, blockSize: number, seed: bigint): Uint32Array;
}

export function createScalarWasmHasher(): ScalarWasmHasher {
  const instance = new WA.Instance(new WA.Module(buildModule()), {});
  const memory = instance.exports.mem as WasmMemory;
  const hashAllFn = instance.exports.hashAll as (tok: number, blockBytes: number, n: number, out: number) => void;
  const hashLocalsFn = instance.exports.hashLocals as (tok: number, blockBytes: number, n: number, out: number) => void;
  let secretSeed: bigint | undefined;
  let spaceTokens = 0;
  const useSeed = (seed: bigint) => {
    if (secretSeed === seed) return;
    new Uint8Array(memory.buffer, SECRET, SECRET_SIZE).set(customSecret(seed));
    secretSeed = seed;
  };
  const ensure = (bytes: number) => {
    if (bytes > memory.buffer.byteLength) memory.grow(Math.ceil((bytes - memory.buffer.byteLength) / 65536));
  };
  return {
    tokenSpace(tokens, blockSize) {
      // The hashes go after the tokens: one (lo, hi) pair per whole block.
      ensure(DATA + tokens * 4 + (Math.floor(tokens / blockSize) + 1) * 8);
      spaceTokens = tokens;
      return new Uint32Array(memory.buffer, DATA, tokens);
    },
    hashLocals(first, blocks, blockSize, seed) {
      useSeed(seed);
      const out = DATA + spaceTokens * 4;
      hashLocalsFn(DATA + first * 4, blockSize * 4, blocks, out);
      return new Uint32Array(memory.buffer, out, blocks * 2);
    },
    hash(tokens, blockSize, seed) {
      const blocks = Math.floor(tokens.length / blockSize);
      const tokenBytes = blocks * blockSize * 4;
      const need = DATA + tokenBytes + blocks * 16;
      if (need > memory.buffer.byteLength) memory.grow(Math.ceil((need - memory.buffer.byteLength) / 65536));
      useSeed(seed);
      const buf = memory.buffer;
      const whole = blocks * blockSize;
      const dst = new Uint32Array(buf, DATA, whole);
      // A trailing partial block is not hashed: copy the whole blocks only, by a view for a
      // typed array (Array.prototype.slice on one took 800 µs for 8k tokens).
      if (tokens.length === whole) dst.set(tokens);
      else if (tokens instanceof Uint32Array) dst.set(tokens.subarray(0, whole));
      else if (Array.isArray(tokens)) dst.set(tokens.slice(0, whole));
      else for (let i = 0; i < whole; i++) dst[i] = tokens[i];
      const out = DATA + tokenBytes;
      hashAllFn(DATA, blockSize * 4, blocks, out);
      return new BigUint64Array(buf.slice(out, out + blocks * 16));
    },
  };
}


const scalar = createScalarWasmHasher();

/** hashPromptFast as it was: this module for blocks of 61+ tokens, the native hasher per block below that. */
export function hashPromptScalarWasm(tokens: ArrayLike<number>, blockSize: number, loraName = "", cacheNamespace = ""): PromptHashes {
  if (blockSize * 4 <= 240) return hashPrompt(tokens, blockSize, loraName, cacheNamespace);
  const pairs = scalar.hash(tokens, blockSize, localHashSeed(loraName, cacheNamespace));
  const n = pairs.length / 2;
  const local = new Array<bigint>(n);
  const sequence = new Array<bigint>(n);
  for (let i = 0; i < n; i++) {
    local[i] = pairs[2 * i];
    sequence[i] = pairs[2 * i + 1];
  }
  return { local, sequence };
}
