// Prompt hashing in WebAssembly with 128-bit SIMD: every block's local hash
// (XXH3-64 with the prompt's seed, every input-size class a block of token
// ids can fall in) and the chained sequence hash, for a whole prompt in one
// call. The module is assembled here from opcodes (wasmAsm.ts: no toolchain,
// no binary blob in the repo). Bit-exactness with the native hasher is
// checked in test/indexer.hash.test.ts.
//
// XXH3's long-input step works on 64-bit lanes, eight per 64-byte stripe:
// here four i64x2 vectors. The 32x32->64 products come from
// i64x2.extmul_{low,high}_i32x4_u; the 128-bit products that XXH3 folds
// (merging the accumulators, and the 16-byte mixes of the 17..240-byte paths)
// are computed two at a time from 32-bit halves.
import type { PromptHashes } from "./blockHash.js";
import {
  I32,
  I32_ADD,
  I32_DIV_U,
  I32_EQZ,
  I32_GE_U,
  I32_GT_U,
  I32_LT_U,
  I32_MUL,
  I32_SHR_U,
  I32_SUB,
  I64,
  I64_ADD,
  I64_AND,
  I64_EXTEND_I32_U,
  I64_MUL,
  I64_OR,
  I64_ROTL,
  I64_SHL,
  I64_SHR_U,
  I64_XOR,
  I64X2_ADD,
  I64X2_EXTMUL_HIGH_U,
  I64X2_EXTMUL_LOW_U,
  I64X2_MUL,
  I64X2_SHL,
  I64X2_SHR_U,
  V128,
  V128_XOR,
  WA,
  type WasmMemory,
  assemble,
  body,
  enterAt,
  funcType,
  get,
  I32_AND,
  I32_OR,
  I32_SHL,
  i32c,
  i64c,
  i64x2ExtractLane,
  ifThen,
  ifThenElse,
  load32,
  load64,
  load8u,
  loopUntil,
  set,
  shuffle32,
  store32,
  store64,
  tee,
  u64x2,
  v128load,
} from "./wasmAsm.js";
import { M64, SECRET_SIZE, SEQ_FLIP1, SEQ_FLIP2, customSecret, defaultSecret64 } from "./xxh3Secret.js";

// ---- memory layout -----------------------------------------------------------
// The seed's keys (written by useSeed, read at constant addresses), then the
// tokens, then the output hashes.
const SECRET = 0; // 192 bytes: the seed's custom secret (long path; also the 16-byte mix keys at multiples of 16)
const MID = 192; // 8 x 16 bytes: mix keys at default-secret offsets 3 + 16j (j = 0..6) and 119, seed applied
const FLIP4 = 320; // u64: the 4..8-byte path's key
const FLIP9 = 328; // 2 x u64: the 9..16-byte path's keys
const SWAPPED = 344; // 2 x 64 bytes: the scramble keys (secret 128..191), then the merge keys (11..74), u64 pairs swapped
const KEYS_END = 472;
const PARENT = 480; // u64: chain()'s parent sequence hash
const STOP = 504; // i32: where varints() stopped reading
const INIT = 512; // 64 bytes: XXH3's initial accumulators, pairs swapped (seed-independent, written once)
export const DATA = 576;

const PRIME32_1 = 0x9e3779b1n;
const PRIME64_1 = 0x9e3779b185ebca87n;
const MX = 0x165667919e3779f9n; // XXH3_avalanche's multiplier
const MX2 = 0x9fb21c651e98df25n; // rrmxmx's
const M32 = 0xffffffffn;
const INIT_ACC = [0xc2b2ae3dn, 0x9e3779b185ebca87n, 0xc2b2ae3d27d4eb4fn, 0x165667b19e3779f9n, 0x85ebca77c2b2ae63n, 0x85ebca77n, 0x27d4eb2f165667c5n, 0x9e3779b1n];

/** The keys useSeed writes at SECRET..KEYS_END for `seed`. */
function seedKeys(seed: bigint): Uint8Array {
  const keys = new Uint8Array(KEYS_END);
  const view = new DataView(keys.buffer);
  keys.set(customSecret(seed), SECRET);
  // XXH3_mix16B(secret + off, seed): the default secret's two words at off, plus and minus the seed.
  const mixKey = (at: number, off: number) => {
    view.setBigUint64(at, (defaultSecret64(off) + seed) & M64, true);
    view.setBigUint64(at + 8, (defaultSecret64(off + 8) - seed) & M64, true);
  };
  for (let j = 0; j < 7; j++) mixKey(MID + 16 * j, 3 + 16 * j); // XXH3_MIDSIZE_STARTOFFSET
  mixKey(MID + 112, 136 - 17); // XXH3_SECRET_SIZE_MIN - XXH3_MIDSIZE_LASTOFFSET
  const lo = seed & M32;
  const swapped = ((lo & 0xffn) << 24n) | ((lo & 0xff00n) << 8n) | ((lo >> 8n) & 0xff00n) | (lo >> 24n);
  view.setBigUint64(FLIP4, ((defaultSecret64(8) ^ defaultSecret64(16)) - (seed ^ (swapped << 32n))) & M64, true);
  view.setBigUint64(FLIP9, ((defaultSecret64(24) ^ defaultSecret64(32)) + seed) & M64, true);
  view.setBigUint64(FLIP9 + 8, ((defaultSecret64(40) ^ defaultSecret64(48)) - seed) & M64, true);
  // the long path's accumulators are kept pair-swapped: so are the keys XORed into them
  const secret = new DataView(keys.buffer, SECRET, SECRET_SIZE);
  for (let j = 0; j < 8; j++) {
    const from = j < 4 ? 128 + 16 * j : 11 + 16 * (j - 4);
    view.setBigUint64(SWAPPED + 16 * j, secret.getBigUint64(from + 8, true), true);
    view.setBigUint64(SWAPPED + 16 * j + 8, secret.getBigUint64(from, true), true);
  }
  return keys;
}

// ---- the function's locals, by name ----------------------------------------
const PARAMS = ["tok", "len", "n", "out", "chain"]; // len: bytes per block
const LOCALS: [number, string[]][] = [
  [I32, ["b", "p", "o", "nb", "blk", "s", "ns", "q", "k", "r", "j"]],
  [I64, ["h", "sq", "acc", "x", "y", "ll", "lh", "hl"]],
  [V128, ["A0", "A1", "A2", "A3", "B0", "B1", "B2", "B3", "d", "x0", "x1", "x2", "x3", "E", "O", "S", "fA", "fB", "fBs", "fll", "flh", "fc"]],
];
const slot = new Map<string, number>();
[...PARAMS, ...LOCALS.flatMap(([, names]) => names)].forEach((name, i) => slot.set(name, i));
const at = (name: string) => {
  const i = slot.get(name);
  if (i === undefined) throw new Error(`no local ${name}`);
  return i;
};
const $ = (name: string) => get(at(name));
const to = (name: string) => set(at(name));
const teeTo = (name: string) => tee(at(name));
const addTo = (name: string, n: number) => [...$(name), ...i32c(n), I32_ADD, ...to(name)];
/** v128 load from a key table at a constant address. */
const key = (addr: number) => [...i32c(0), ...v128load(addr)];

// ---- scalar pieces (i64) ----------------------------------------------------------
const lo = (name: string) => [...$(name), ...i64c(M32), I64_AND];
const hi = (name: string) => [...$(name), ...i64c(32n), I64_SHR_U];
/**
 * XXH3_mul128_fold64(x, y): low ^ high of the 128-bit product. The low word
 * is i64.mul's; the high one is built from the 32-bit partial products.
 */
const fold64 = [
  ...$("x"), ...$("y"), I64_MUL,
  ...lo("x"), ...lo("y"), I64_MUL, ...i64c(32n), I64_SHR_U, ...to("ll"),
  ...lo("x"), ...hi("y"), I64_MUL, ...to("lh"),
  ...hi("x"), ...lo("y"), I64_MUL, ...to("hl"),
  // upper = hi(x)*hi(y) + (lh >> 32) + (hl >> 32) + ((ll >> 32) + (lh & M32) + (hl & M32)) >> 32
  ...hi("x"), ...hi("y"), I64_MUL, ...hi("lh"), I64_ADD, ...hi("hl"), I64_ADD,
  ...$("ll"), ...lo("lh"), I64_ADD, ...lo("hl"), I64_ADD, ...i64c(32n), I64_SHR_U, I64_ADD,
  I64_XOR,
];
/** h (on the stack) -> XXH3_avalanche(h), via local h. */
const avalanche = [
  ...teeTo("h"), ...$("h"), ...i64c(37n), I64_SHR_U, I64_XOR, ...i64c(MX), I64_MUL,
  ...teeTo("h"), ...$("h"), ...i64c(32n), I64_SHR_U, I64_XOR,
];
/** XXH_swap64(x), in three swaps (bytes in halfwords, halfwords in words, words). */
const swapX = [
  ...$("x"), ...i64c(8n), I64_SHR_U, ...i64c(0x00ff00ff00ff00ffn), I64_AND, ...$("x"), ...i64c(0x00ff00ff00ff00ffn), I64_AND, ...i64c(8n), I64_SHL, I64_OR, ...to("x"),
  ...$("x"), ...i64c(16n), I64_SHR_U, ...i64c(0x0000ffff0000ffffn), I64_AND, ...$("x"), ...i64c(0x0000ffff0000ffffn), I64_AND, ...i64c(16n), I64_SHL, I64_OR,
  ...i64c(32n), I64_ROTL,
];
/**
 * XXH3's 9..16-byte path once its keys are applied (x = first word ^ key 1,
 * y = last word ^ key 2): avalanche(len + swap64(x) + y + fold(x, y)). The
 * sequence hash is this path on (parent, local), 16 bytes with seed 1337.
 */
const mix9to16 = (lenCode: number[]) => [...lenCode, ...$("y"), I64_ADD, ...fold64, I64_ADD, ...swapX, I64_ADD, ...avalanche];
/** sq = sequence hash of (sq, h). */
const sequence = [
  ...$("sq"), ...i64c(SEQ_FLIP1), I64_XOR, ...to("x"),
  ...$("h"), ...i64c(SEQ_FLIP2), I64_XOR, ...to("y"),
  ...mix9to16(i64c(16n)), ...to("sq"),
];
const lenI64 = [...$("len"), I64_EXTEND_I32_U];

// ---- SIMD pieces (i64x2) -------------------------------------------------------
const ZERO = u64x2(0n, 0n);
/** Of two vectors (a, b): a's low u32 and b's high u32 in each u64 lane (a blend, so a & M32 when b = 0). */
const LOW_HALVES = shuffle32([0, 5, 2, 7]);
/**
 * Two XXH3_mul128_fold64 at once: vectors X = (a, b) and Y = (c, d) of u64
 * lanes -> (fold(a, b), fold(c, d)), the 4 partial products of each 128-bit
 * product taken two at a time from the u32 halves.
 */
const foldPair = (X: string, Y: string) => [
  ...$(X), ...$(Y), ...shuffle32([0, 4, 1, 5]), ...to("fA"), // (a.lo, c.lo, a.hi, c.hi)
  ...$(X), ...$(Y), ...shuffle32([2, 6, 3, 7]), ...to("fB"), // (b.lo, d.lo, b.hi, d.hi)
  ...$("fB"), ...$("fB"), ...shuffle32([2, 3, 0, 1]), ...to("fBs"), // (b.hi, d.hi, b.lo, d.lo)
  ...$("fA"), ...$("fB"), ...I64X2_EXTMUL_LOW_U, ...to("fll"),
  ...$("fA"), ...$("fBs"), ...I64X2_EXTMUL_LOW_U, ...to("flh"),
  // cross = (ll >> 32) + (lh & M32) + hl
  ...$("fll"), ...i32c(32), ...I64X2_SHR_U, ...$("flh"), ...ZERO, ...LOW_HALVES, ...I64X2_ADD,
  ...$("fA"), ...$("fBs"), ...I64X2_EXTMUL_HIGH_U, ...I64X2_ADD, ...to("fc"),
  // lower = (cross << 32) | (ll & M32): ll's low halves, cross's low halves above them
  ...$("fll"), ...$("fc"), ...i32c(32), ...I64X2_SHL, ...LOW_HALVES,
  // upper = hh + (lh >> 32) + (cross >> 32)
  ...$("fA"), ...$("fB"), ...I64X2_EXTMUL_HIGH_U, ...$("flh"), ...i32c(32), ...I64X2_SHR_U, ...I64X2_ADD,
  ...$("fc"), ...i32c(32), ...I64X2_SHR_U, ...I64X2_ADD,
  ...V128_XOR,
];
/** v128 at data address code + offset, XOR the 16-byte key at key address code + keyOffset, into local `name`. */
const keyed = (name: string, addr: number[], offset: number, keyAddr: number[], keyOffset: number) => [
  ...addr, ...v128load(offset), ...keyAddr, ...v128load(keyOffset), ...V128_XOR, ...to(name),
];
/** S += fold pair of x0, x1. */
const addFoldPair = [...$("S"), ...foldPair("x0", "x1"), ...I64X2_ADD, ...to("S")];
/** The two lanes of S plus the i64 on the stack. */
const plusLanesOfS = [...$("S"), ...i64x2ExtractLane(0), I64_ADD, ...$("S"), ...i64x2ExtractLane(1), I64_ADD];
const lenTimesPrime = [...lenI64, ...i64c(PRIME64_1), I64_MUL];
const at0 = i32c(0);
const atP = $("p");
/** p + len - k */
const fromEnd = (k: number) => [...$("p"), ...$("len"), I32_ADD, ...i32c(k), I32_SUB];

// ---- XXH3-64 of the block at p, length len, by size class; result in h -------
/** 4..8 bytes: rrmxmx((last u32 + (first u32 << 32)) ^ key, len). */
const short4to8 = [
  ...fromEnd(4), ...load32(0), I64_EXTEND_I32_U, ...atP, ...load32(0), I64_EXTEND_I32_U, ...i64c(32n), I64_SHL, I64_ADD,
  ...at0, ...load64(FLIP4), I64_XOR, ...to("h"),
  ...$("h"), ...$("h"), ...i64c(49n), I64_ROTL, I64_XOR, ...$("h"), ...i64c(24n), I64_ROTL, I64_XOR, ...i64c(MX2), I64_MUL,
  ...teeTo("h"), ...$("h"), ...i64c(35n), I64_SHR_U, ...lenI64, I64_ADD, I64_XOR, ...i64c(MX2), I64_MUL,
  ...teeTo("h"), ...$("h"), ...i64c(28n), I64_SHR_U, I64_XOR, ...to("h"),
];
/** 9..16 bytes. */
const short9to16 = [
  ...atP, ...load64(0), ...at0, ...load64(FLIP9), I64_XOR, ...to("x"),
  ...fromEnd(8), ...load64(0), ...at0, ...load64(FLIP9 + 8), I64_XOR, ...to("y"),
  ...mix9to16(lenI64), ...to("h"),
];
/** 17..128 bytes: pairs of 16-byte mixes from both ends, as far as len reaches. */
const mix17to128 = (() => {
  const pairAt = (i: number) => [
    ...keyed("x0", atP, 16 * i, at0, SECRET + 32 * i),
    ...keyed("x1", fromEnd(16 * (i + 1)), 0, at0, SECRET + 32 * i + 16),
    ...addFoldPair,
  ];
  return [
    ...ZERO, ...to("S"),
    ...pairAt(0),
    ...ifThen([...$("len"), ...i32c(32), I32_GT_U], [
      ...pairAt(1),
      ...ifThen([...$("len"), ...i32c(64), I32_GT_U], [...pairAt(2), ...ifThen([...$("len"), ...i32c(96), I32_GT_U], pairAt(3))]),
    ]),
    ...lenTimesPrime, ...plusLanesOfS, ...avalanche, ...to("h"),
  ];
})();
/** 129..240 bytes: 8 mixes, avalanched; then the remaining 16-byte rounds and the last 16 bytes. */
const mix129to240 = [
  ...ZERO, ...to("S"),
  ...[0, 2, 4, 6].flatMap((i) => [...keyed("x0", atP, 16 * i, at0, SECRET + 16 * i), ...keyed("x1", atP, 16 * i + 16, at0, SECRET + 16 * i + 16), ...addFoldPair]),
  ...lenTimesPrime, ...plusLanesOfS, ...avalanche, ...to("acc"),
  // rounds 8..len/16-1 with keys MID + 16j, two at a time: j counts them, r = how many
  ...ZERO, ...to("S"),
  ...$("len"), ...i32c(16), I32_DIV_U, ...i32c(8), I32_SUB, ...to("r"),
  ...$("p"), ...i32c(128), I32_ADD, ...to("q"),
  ...i32c(MID), ...to("k"),
  ...i32c(0), ...to("j"),
  ...loopUntil([...$("j"), ...i32c(2), I32_ADD, ...$("r"), I32_GT_U], [
    ...keyed("x0", $("q"), 0, $("k"), 0), ...keyed("x1", $("q"), 16, $("k"), 16), ...addFoldPair,
    ...addTo("q", 32), ...addTo("k", 32), ...addTo("j", 2),
  ]),
  // the last 16 bytes, paired with an odd round left over or with zero (fold(0, 0) = 0)
  ...keyed("x1", fromEnd(16), 0, at0, MID + 112),
  ...ifThenElse([...$("j"), ...$("r"), I32_LT_U], keyed("x0", $("q"), 0, $("k"), 0), [...ZERO, ...to("x0")]),
  ...addFoldPair,
  ...$("acc"), ...plusLanesOfS, ...avalanche, ...to("h"),
];

/**
 * One 64-byte stripe at q, keys at k (XXH3_accumulate_512): per u64 lane i,
 * acc[i] += lo32(d ^ key) * hi32(d ^ key) and acc[i ^ 1] += d. The
 * accumulators are kept with each lane pair swapped (A0 = (acc[1], acc[0]),
 * ...), so the data adds in place; the products come out swapped from the
 * order of the u32 lanes fed to extmul.
 */
const stripeAt = (data: number[], dataOffset: number, keys: number[], keyOffset: number) => [0, 2].flatMap((v) => [
  ...[v, v + 1].flatMap((i) => [
    ...$(`A${i}`), ...data, ...v128load(dataOffset + 16 * i), ...teeTo("d"), ...I64X2_ADD, ...to(`A${i}`),
    ...$("d"), ...keys, ...v128load(keyOffset + 16 * i), ...V128_XOR, ...to(`x${i - v}`),
  ]),
  // E = the low u32 of each of the four u64 lanes, O = the high ones, each pair swapped
  ...$("x0"), ...$("x1"), ...shuffle32([2, 0, 6, 4]), ...to("E"),
  ...$("x0"), ...$("x1"), ...shuffle32([3, 1, 7, 5]), ...to("O"),
  ...$(`A${v}`), ...$("E"), ...$("O"), ...I64X2_EXTMUL_LOW_U, ...I64X2_ADD, ...to(`A${v}`),
  ...$(`A${v + 1}`), ...$("E"), ...$("O"), ...I64X2_EXTMUL_HIGH_U, ...I64X2_ADD, ...to(`A${v + 1}`),
]);
const stripe = stripeAt($("q"), 0, $("k"), 0);
/** XXH3_scrambleAcc: acc = (acc ^ (acc >> 47) ^ key) * PRIME32_1 (keys swapped as the lanes are). */
const scramble = [0, 1, 2, 3].flatMap((i) => [
  ...$(`A${i}`), ...$(`A${i}`), ...i32c(47), ...I64X2_SHR_U, ...V128_XOR,
  ...key(SWAPPED + 16 * i), ...V128_XOR, ...u64x2(PRIME32_1, PRIME32_1), ...I64X2_MUL, ...to(`A${i}`),
]);
/** Stripes s = 0..count-1 from data address base, keys at SECRET + 8s. */
const stripes = (base: number[], count: number[]) => [
  ...base, ...to("q"), ...i32c(SECRET), ...to("k"), ...i32c(0), ...to("s"),
  ...loopUntil([...$("s"), ...count, I32_GE_U], [...stripe, ...addTo("q", 64), ...addTo("k", 8), ...addTo("s", 1)]),
];
const initAcc = [0, 1, 2, 3].flatMap((i) => [...key(INIT + 16 * i), ...to(`A${i}`)]);
/** The merge of accumulators `${acc}0..3`: len * PRIME64_1 + the folds of the four lane pairs, each XOR its key at 11 + 16j (swapped: fold is symmetric). */
const mergeOf = (acc: string) => [
  ...[0, 1, 2, 3].flatMap((j) => [...$(`${acc}${j}`), ...key(SWAPPED + 64 + 16 * j), ...V128_XOR, ...to(`x${j}`)]),
  ...foldPair("x0", "x1"), ...foldPair("x2", "x3"), ...I64X2_ADD, ...to("S"),
  ...lenTimesPrime, ...plusLanesOfS, ...avalanche, ...to("h"),
];
/** The last stripe: the input's last 64 bytes, keys at 121. */
const lastStripe = stripeAt(fromEnd(64), 0, at0, SECRET + SECRET_SIZE - 64 - 7);
/**
 * The long path's accumulation for 241..1024 bytes (blocks of 61..256
 * tokens): no scramble, so the (len - 1) / 64 stripes (3..15) can be added
 * in any order: straight code entered at stripe ns - 1 (enterAt), data and
 * keys at constant offsets, no loop counters.
 */
const accumulateUpTo1024 = [
  ...initAcc,
  ...enterAt([...$("len"), ...i32c(1), I32_SUB, ...i32c(6), I32_SHR_U], Array.from({ length: 15 }, (_, s) => stripeAt(atP, 64 * s, at0, SECRET + 8 * s))),
  ...lastStripe,
];
/** XXH3's long path (over 240 bytes) with the seed's custom secret. */
const long = [
  ...initAcc,
  // nb = (len - 1) / 1024 whole 1024-byte blocks, each 16 stripes and a scramble
  ...$("len"), ...i32c(1), I32_SUB, ...i32c(1024), I32_DIV_U, ...to("nb"),
  ...i32c(0), ...to("blk"),
  ...loopUntil([...$("blk"), ...$("nb"), I32_GE_U], [
    ...stripes([...$("p"), ...$("blk"), ...i32c(1024), I32_MUL, I32_ADD], i32c(16)),
    ...scramble,
    ...addTo("blk", 1),
  ]),
  // ns = ((len - 1) - 1024 * nb) / 64 more stripes
  ...$("len"), ...i32c(1), I32_SUB, ...$("nb"), ...i32c(1024), I32_MUL, I32_SUB, ...i32c(64), I32_DIV_U, ...to("ns"),
  ...stripes([...$("p"), ...$("nb"), ...i32c(1024), I32_MUL, I32_ADD], $("ns")),
  ...lastStripe,
  ...mergeOf("A"),
];
/** sq = this block's sequence hash (the local hash h for block 0). Leaves h clobbered (avalanche). */
const chainOn = ifThenElse([...$("b"), I32_EQZ], [...$("h"), ...to("sq")], sequence);
/**
 * Stores this block's hashes at o and moves o on: chain = 0, the local hash h;
 * chain = 1, h then the sequence hash; chain = 2, the sequence hash alone
 * (what routing reads, so it leaves as one contiguous run of u64s).
 */
const emitHash = ifThenElse([...$("chain"), ...i32c(1), I32_GT_U], [
  ...chainOn,
  ...$("o"), ...$("sq"), ...store64(0),
  ...addTo("o", 8),
], [
  ...$("o"), ...$("h"), ...store64(0),
  ...ifThenElse($("chain"), [...chainOn, ...$("o"), ...$("sq"), ...store64(8), ...addTo("o", 16)], addTo("o", 8)),
]);
/**
 * hash(tok, len, n, out, chain): the local hash of each of n blocks of len
 * bytes from tok; out gets the local hashes (chain = 0), (local, sequence)
 * u64 pairs (chain = 1) or the sequence hashes (chain = 2). One loop per size
 * class, the class's code inline.
 */
function blocks(local: number[]): number[] {
  return [
    ...$("tok"), ...to("p"), ...$("out"), ...to("o"), ...i32c(0), ...to("b"),
    ...loopUntil([...$("b"), ...$("n"), I32_GE_U], [
      ...local,
      ...emitHash,
      ...$("p"), ...$("len"), I32_ADD, ...to("p"),
      ...addTo("b", 1),
    ]),
  ];
}
/**
 * The loop for 241..1024-byte blocks, software-pipelined: each turn
 * accumulates the next block's stripes (into A) before merging the block
 * saved in B, so the merge's long chain of dependent multiplies overlaps
 * independent work (about 7% faster for 256-byte blocks than one block a
 * turn, measured in bench/hashing.run.ts).
 */
function blocksPipelined(): number[] {
  return ifThen([...$("n"), ...i32c(0), I32_GT_U], [
    ...$("tok"), ...to("p"), ...$("out"), ...to("o"), ...i32c(0), ...to("b"),
    ...accumulateUpTo1024,
    ...loopUntil([...$("b"), ...$("n"), I32_GE_U], [
      ...[0, 1, 2, 3].flatMap((j) => [...$(`A${j}`), ...to(`B${j}`)]),
      ...ifThen([...$("b"), ...i32c(1), I32_ADD, ...$("n"), I32_LT_U], [...$("p"), ...$("len"), I32_ADD, ...to("p"), ...accumulateUpTo1024]),
      ...mergeOf("B"),
      ...emitHash,
      ...addTo("b", 1),
    ]),
  ]);
}
const hashBlocks = ifThenElse([...$("len"), ...i32c(1024), I32_GT_U], blocks(long),
  ifThenElse([...$("len"), ...i32c(240), I32_GT_U], blocksPipelined(),
    ifThenElse([...$("len"), ...i32c(128), I32_GT_U], blocks(mix129to240),
      ifThenElse([...$("len"), ...i32c(16), I32_GT_U], blocks(mix17to128),
        ifThenElse([...$("len"), ...i32c(8), I32_GT_U], blocks(short9to16), blocks(short4to8))))));

// ---- packed varints -----------------------------------------------------------
/**
 * varints(p, end, d) -> d': protobuf's packed varints from byte p on, each
 * stored as a u32 at d, d + 4, ... The 1..4-byte ones only (token ids under
 * 2^28): it stops at a varint of 5 bytes or more, leaving it to the caller,
 * or once p >= end; where it stopped goes to STOP. As in WireReader.packedU32,
 * a varint may run past end (the caller sees STOP > end and refuses it).
 */
const VP = 0;
const VEND = 1;
const VD = 2;
const VX = 3;
const VV = 4;
const varintByte = (k: number) => [...get(VP), ...load8u(k), ...tee(VX), ...i32c(0x7f), I32_AND, ...(k === 0 ? [] : [...i32c(7 * k), I32_SHL, ...get(VV), I32_OR]), ...set(VV)];
const varintEnds = [...get(VX), ...i32c(0x80), I32_LT_U];
const advance = (n: number) => [...get(VP), ...i32c(n), I32_ADD, ...set(VP)];
const varintsBody = [
  ...loopUntil([...get(VP), ...get(VEND), I32_GE_U], [
    ...varintByte(0),
    ...ifThenElse(varintEnds, advance(1), [
      ...varintByte(1),
      ...ifThenElse(varintEnds, advance(2), [
        ...varintByte(2),
        ...ifThenElse(varintEnds, advance(3), [
          ...varintByte(3),
          // 5 bytes or more: the caller reads it (br 5: out of the four ifs, the loop and the loop's block)
          ...ifThenElse(varintEnds, advance(4), [0x0c, 5]),
        ]),
      ]),
    ]),
    ...get(VD), ...get(VV), ...store32(0),
    ...get(VD), ...i32c(4), I32_ADD, ...set(VD),
  ]),
  ...i32c(0), ...get(VP), ...store32(STOP),
  ...get(VD),
];

/**
 * chain(tok, _, n, out, chain): the sequence hashes of n stored blocks given
 * as the index's op records write them (4 u32 each from `tok`: external lo,
 * hi, local lo, hi), chained from the parent's at PARENT when `chain` is 1,
 * else from the first block's local hash; (lo, hi) pairs from `out`. The
 * index chains an event's blocks here in one call (CompactCore.stored).
 */
const chainBody = [
  ...i32c(0), ...load64(PARENT), ...to("sq"),
  ...$("tok"), ...to("p"),
  ...$("out"), ...to("o"),
  ...i32c(0), ...to("b"),
  // No parent: the first block's sequence hash is its local hash.
  ...ifThen([...$("chain"), I32_EQZ, ...$("n"), I32_EQZ, I32_EQZ, I32_AND], [
    ...$("p"), ...load64(8), ...to("sq"),
    ...$("o"), ...$("sq"), ...store64(0),
    ...addTo("p", 16), ...addTo("o", 8),
    ...i32c(1), ...to("b"),
  ]),
  ...loopUntil([...$("b"), ...$("n"), I32_GE_U], [
    ...$("p"), ...load64(8), ...to("h"),
    ...sequence,
    ...$("o"), ...$("sq"), ...store64(0),
    ...addTo("p", 16), ...addTo("o", 8), ...addTo("b", 1),
  ]),
];

export function buildModule(): Uint8Array {
  const hashLocals = LOCALS.map(([t, names]) => [names.length, t] as [number, number]);
  return assemble({
    types: [funcType([I32, I32, I32, I32, I32], []), funcType([I32, I32, I32], [I32])],
    funcTypes: [0, 1, 0],
    bodies: [body(hashLocals, hashBlocks), body([[2, I32]], varintsBody), body(hashLocals, chainBody)],
    memoryPages: 2,
    exports: { hash: 0, varints: 1, chain: 2 },
  });
}

// ---- the JavaScript side ---------------------------------------------------------
export interface WasmHasher {
  /** Local and sequence hashes of every full block (a trailing partial block is not hashed). */
  hash(tokens: ArrayLike<number>, blockSize: number, seed: bigint): PromptHashes;
  /** The sequence hashes alone (the local hashes are computed, for the chain, but not turned into bigints). */
  sequence(tokens: ArrayLike<number>, blockSize: number, seed: bigint): bigint[];
  /**
   * The sequence hashes alone as (lo, hi) u32 pairs, in an array of its own
   * (routing's query: no bigints made).
   */
  sequenceWords(tokens: ArrayLike<number>, blockSize: number, seed: bigint): Uint32Array;
  /**
   * sequenceWords() of the first `count` token ids of the token space, where
   * a decoder wrote them (no copy in).
   */
  sequenceWordsInPlace(count: number, blockSize: number, seed: bigint): Uint32Array;
  /**
   * Token space in the module's memory for `tokens` token ids followed by
   * room for their hashes: decoders write token ids there directly. The view
   * stays valid until the next tokenSpace() call.
   */
  tokenSpace(tokens: number, blockSize: number): Uint32Array;
  /**
   * Packed varints (protobuf's, read as WireReader.packedU32 reads them: the
   * low 32 bits of each) of bytes [from, to) into the token space from token
   * `at` on, decoded in WebAssembly. Returns the new token count, or -1 when
   * a varint is irregular or crosses `to`, or when `at + (to - from)` passes
   * the space (each varint takes at least a byte: no check per value).
   */
  packedTokens(bytes: Uint8Array, from: number, to: number, at: number): number;
  /**
   * Copies a whole message into the space's byte room at once, for
   * packedTokensOfMessage(): one copy per message instead of one per packed
   * field. False (nothing copied) when the message is longer than the space
   * holds tokens (then use packedTokens). Valid until the next tokenSpace().
   */
  loadMessage(bytes: Uint8Array): boolean;
  /** packedTokens() of bytes [from, to) of the message loadMessage() copied in. */
  packedTokensOfMessage(from: number, to: number, at: number): number;
  /**
   * Local hashes of `blocks` blocks of `blockSize` tokens starting at token
   * `first` of the token space, as (lo, hi) u32 pairs (a view, valid until
   * the next call).
   */
  hashLocals(first: number, blocks: number, blockSize: number, seed: bigint): Uint32Array;
  /**
   * The sequence hashes of the n stored blocks at words [at, at + 4n) of
   * `records` (4 u32 per block: external lo, hi, local lo, hi), chained from
   * the parent (pLo, pHi) when `chained`, else from the first block's local
   * hash: (lo, hi) u32 pairs in words [0, 2n) of the array returned (longer;
   * valid until the next call).
   */
  chainSequence(records: Uint32Array, at: number, n: number, pLo: number, pHi: number, chained: boolean): Uint32Array;
}

/** Compiled once per thread: every hasher (one per ingest stream, say) is an instance with its own memory, sharing the tiered-up code. */
let compiled: object | undefined;

export function createWasmHasher(): WasmHasher {
  compiled ??= new WA.Module(buildModule());
  const instance = new WA.Instance(compiled, {});
  const memory = instance.exports.mem as WasmMemory;
  const hashFn = instance.exports.hash as (tok: number, blockBytes: number, n: number, out: number, chain: number) => void;
  const varintsFn = instance.exports.varints as (p: number, end: number, d: number) => number;
  const chainFn = instance.exports.chain as (tok: number, unused: number, n: number, out: number, chain: number) => void;
  // Views over the memory, made again when it grows (growing detaches the old buffer).
  let buffer = memory.buffer;
  let u8 = new Uint8Array(buffer);
  let u32 = new Uint32Array(buffer);
  let u64 = new BigUint64Array(buffer);
  const ensure = (bytes: number) => {
    if (bytes > memory.buffer.byteLength) memory.grow(Math.ceil((bytes - memory.buffer.byteLength) / 65536));
    if (buffer !== memory.buffer) {
      buffer = memory.buffer;
      u8 = new Uint8Array(buffer);
      u32 = new Uint32Array(buffer);
      u64 = new BigUint64Array(buffer);
    }
  };
  // Keys per seed, kept for the few seeds (base model, LoRAs, namespaces) a router sees.
  const keyCache = new Map<bigint, Uint8Array>();
  let current: bigint | undefined;
  const useSeed = (seed: bigint) => {
    if (current === seed) return;
    let keys = keyCache.get(seed);
    if (keys === undefined) {
      if (keyCache.size >= 64) keyCache.clear();
      keys = seedKeys(seed);
      keyCache.set(seed, keys);
    }
    new Uint8Array(buffer, SECRET, KEYS_END).set(keys);
    current = seed;
  };
  new BigUint64Array(buffer, INIT, 8).set(INIT_ACC.map((_, i) => INIT_ACC[i ^ 1]));
  /**
   * Copies the n whole blocks of `tokens` in and hashes them (emitHash's
   * `chain` mode): the hashes are at u64 index `at` on.
   */
  const hashWhole = (tokens: ArrayLike<number>, blockSize: number, n: number, seed: bigint, chain = 1): number => {
    const whole = n * blockSize;
    const out = DATA + Math.ceil(whole / 2) * 8; // 8-aligned, for the u64 view
    ensure(out + n * 16);
    useSeed(seed);
    // A trailing partial block is not hashed: copy the whole blocks only, by a view for a
    // typed array (Array.prototype.slice on one took 800 µs for 8k tokens).
    if (tokens.length === whole) u32.set(tokens, DATA / 4);
    else if (tokens instanceof Uint32Array) u32.set(tokens.subarray(0, whole), DATA / 4);
    else if (Array.isArray(tokens)) u32.set(tokens.slice(0, whole), DATA / 4);
    else for (let i = 0; i < whole; i++) u32[DATA / 4 + i] = tokens[i];
    hashFn(DATA, blockSize * 4, n, out, chain);
    return out / 8;
  };
  let spaceTokens = 0;
  /** chainSequence()'s answer: the memory from DATA on. */
  let chainView = new Uint32Array(buffer, DATA);
  /** Where packedTokens() copies varint bytes in (loadMessage() a whole message): after the space's hashes. */
  let spaceBytes = 0;
  /** Packed varints at memory [p, end) into the token space from token `at` (see packedTokens). */
  function packedAt(p: number, end: number, at: number): number {
    let d = DATA + 4 * at;
    for (;;) {
      d = varintsFn(p, end, d);
      p = u32[STOP / 4];
      if (p >= end) break;
      // A varint of 5 bytes or more, by WireReader.varint's rules: at most 10 bytes, the 10th at most 1.
      let lo = 0;
      for (let i = 0; ; i++) {
        if (p >= end || i === 10) return -1;
        const x = u8[p++];
        if (i < 4) lo |= (x & 0x7f) << (7 * i);
        else if (i === 4) lo |= (x & 0x0f) << 28;
        else if (i === 9 && x > 1) return -1;
        if (x < 0x80) break;
      }
      u32[d / 4] = lo >>> 0;
      d += 4;
    }
    return p > end ? -1 : (d - DATA) / 4;
  }
  return {
    tokenSpace(tokens, blockSize) {
      // After the tokens: one (lo, hi) hash pair per whole block, then room for `tokens` bytes of
      // packed varints (packedTokens) and the few bytes its reads may run past them. Nothing
      // after this call grows the memory, so the view stays valid.
      spaceBytes = DATA + tokens * 4 + (Math.floor(tokens / blockSize) + 1) * 8;
      ensure(spaceBytes + tokens + 8);
      spaceTokens = tokens;
      return new Uint32Array(buffer, DATA, tokens);
    },
    packedTokens(bytes, from, to, at) {
      const len = to - from;
      if (len < 0 || at + len > spaceTokens) return -1;
      u8.set(bytes.subarray(from, to), spaceBytes);
      return packedAt(spaceBytes, spaceBytes + len, at);
    },
    loadMessage(bytes) {
      if (bytes.length > spaceTokens) return false;
      u8.set(bytes, spaceBytes);
      return true;
    },
    packedTokensOfMessage(from, to, at) {
      const len = to - from;
      if (len < 0 || at + len > spaceTokens) return -1;
      return packedAt(spaceBytes + from, spaceBytes + to, at);
    },
    sequenceWords(tokens, blockSize, seed) {
      const n = Math.floor(tokens.length / blockSize);
      const at = hashWhole(tokens, blockSize, n, seed, 2);
      return u32.slice(2 * at, 2 * (at + n));
    },
    sequenceWordsInPlace(count, blockSize, seed) {
      if (count > spaceTokens) throw new RangeError(`${count} tokens asked of a token space of ${spaceTokens}`);
      const n = Math.floor(count / blockSize);
      useSeed(seed);
      // After the tokens, in the room tokenSpace() keeps for one hash per block.
      const out = DATA + spaceTokens * 4;
      hashFn(DATA, blockSize * 4, n, out, 2);
      return u32.slice(out / 4, out / 4 + 2 * n);
    },
    chainSequence(records, at, n, pLo, pHi, chained) {
      // The hashes at DATA, the blocks' words after them: block i is read before hash i is written over
      // anything, so the result is one view from DATA, made again only when the memory grows.
      const blocksAt = DATA + n * 8;
      ensure(blocksAt + n * 16);
      if (chainView.buffer !== buffer) chainView = new Uint32Array(buffer, DATA);
      u32[PARENT / 4] = pLo;
      u32[PARENT / 4 + 1] = pHi;
      u32.set(records.subarray(at, at + 4 * n), blocksAt / 4);
      chainFn(blocksAt, 0, n, DATA, chained ? 1 : 0);
      // The token space's view (tokenSpace) covers the same bytes: a decoder's tokens there are gone now.
      spaceTokens = 0;
      return chainView;
    },
    hashLocals(first, blocks, blockSize, seed) {
      useSeed(seed);
      const out = DATA + spaceTokens * 4;
      hashFn(DATA + first * 4, blockSize * 4, blocks, out, 0);
      return new Uint32Array(buffer, out, blocks * 2);
    },
    hash(tokens, blockSize, seed) {
      const n = Math.floor(tokens.length / blockSize);
      const at = hashWhole(tokens, blockSize, n, seed);
      const local = new Array<bigint>(n);
      const sequence = new Array<bigint>(n);
      for (let i = 0, w = at; i < n; i++, w += 2) {
        local[i] = u64[w];
        sequence[i] = u64[w + 1];
      }
      return { local, sequence };
    },
    sequence(tokens, blockSize, seed) {
      const n = Math.floor(tokens.length / blockSize);
      const at = hashWhole(tokens, blockSize, n, seed);
      const sequence = new Array<bigint>(n);
      for (let i = 0, w = at + 1; i < n; i++, w += 2) sequence[i] = u64[w];
      return sequence;
    },
  };
}
