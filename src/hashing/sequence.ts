// Sequence hash (XXH3-64, seed 1337, over parent u64 LE ++ local u64 LE) in
// plain 32-bit JavaScript arithmetic. It is bit-exact with blockHash.ts's
// sequenceHash() but needs no native call and no bigint, so the index can
// chain hashes at ingest speed. XXH3 hashes a 16-byte input with its 9..16
// byte path: two key-mixed words, a folded 128-bit product, an avalanche.
import { SEQ_FLIP1 as FLIP1, SEQ_FLIP2 as FLIP2 } from "./xxh3Secret.js";

const F1_LO = Number(FLIP1 & 0xffffffffn);
const F1_HI = Number(FLIP1 >> 32n);
const F2_LO = Number(FLIP2 & 0xffffffffn);
const F2_HI = Number(FLIP2 >> 32n);
const MX_LO = 0x9e3779f9; // 0x165667919E3779F9, XXH3's avalanche multiplier
const MX_HI = 0x16566791;
const TWO32 = 4294967296;

/** High 32 bits of the 64-bit product of two u32 values (the low half is Math.imul). */
function mulHi(a: number, b: number): number {
  // The double product is off by at most 2^11 from the exact one; with the
  // exact low word removed, dividing by 2^32 lands within 2^-20 of the high
  // word, so rounding gives it exactly.
  return Math.round((a * b - (Math.imul(a, b) >>> 0)) / 4294967296) >>> 0;
}

function bswap(x: number): number {
  return (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
}

/** Result of the last seqHash32 call (avoids allocating a pair per hash). */
export const seqOut = { lo: 0, hi: 0 };

/** Sequence hash of (parent, local), both u64 given as (lo, hi) u32 halves; result in seqOut. */
export function seqHash32(pLo: number, pHi: number, lLo: number, lHi: number): void {
  const aLo = (pLo ^ F1_LO) >>> 0;
  const aHi = (pHi ^ F1_HI) >>> 0;
  const bLo = (lLo ^ F2_LO) >>> 0;
  const bHi = (lHi ^ F2_HI) >>> 0;
  // 128-bit product a*b from four 32x32 partial products, folded (low ^ high).
  const llLo = Math.imul(aLo, bLo) >>> 0;
  const llHi = mulHi(aLo, bLo);
  const lhLo = Math.imul(aLo, bHi) >>> 0;
  const lhHi = mulHi(aLo, bHi);
  const hlLo = Math.imul(aHi, bLo) >>> 0;
  const hlHi = mulHi(aHi, bLo);
  const hhLo = Math.imul(aHi, bHi) >>> 0;
  const hhHi = mulHi(aHi, bHi);
  const s1 = llHi + lhLo + hlLo;
  const w1 = s1 >>> 0;
  const s2 = hhLo + lhHi + hlHi + Math.floor(s1 / TWO32);
  const w2 = s2 >>> 0;
  const w3 = (hhHi + Math.floor(s2 / TWO32)) >>> 0;
  const foldLo = (llLo ^ w2) >>> 0;
  const foldHi = (w1 ^ w3) >>> 0;
  // acc = 16 + swap64(a) + b + fold
  let lo = 16 + bswap(aHi) + bLo + foldLo;
  let hi = bswap(aLo) + bHi + foldHi + Math.floor(lo / TWO32);
  lo >>>= 0;
  hi >>>= 0;
  // avalanche: h ^= h >> 37; h *= MX; h ^= h >> 32
  lo = (lo ^ (hi >>> 5)) >>> 0;
  const pHi2 = (mulHi(lo, MX_LO) + Math.imul(lo, MX_HI) + Math.imul(hi, MX_LO)) >>> 0;
  const pLo2 = Math.imul(lo, MX_LO) >>> 0;
  seqOut.lo = (pLo2 ^ pHi2) >>> 0;
  seqOut.hi = pHi2;
}
