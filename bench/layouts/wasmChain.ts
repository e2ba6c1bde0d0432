// Bench-only prototype (issue 21 §2): the sequence-hash chaining of a stored
// event's blocks in one WebAssembly call, with 64-bit multiplies, in place of
// one 32-bit JavaScript seqHash32 per block (src/hashing/sequence.ts). The
// caller copies the event's block words (external lo, hi, local lo, hi: 4 u32
// per block, as records.ts writes them) into the module's memory at IN, the
// parent's sequence hash at PARENT, and calls chain(n, chained); the sequence
// hashes come back at OUT as (lo, hi) u32 pairs. The arithmetic is XXH3's
// 9..16-byte path on (parent, local) with seed 1337, as sequence.ts and
// src/hashing/wasmXxh3.ts compute it; bench/layouts.run.ts checks the cores
// that use it against the untuned core, which chains with seqHash32.
import {
  I32,
  I32_ADD,
  I32_EQZ,
  I32_GE_U,
  I64,
  I64_ADD,
  I64_AND,
  I64_MUL,
  I64_OR,
  I64_ROTL,
  I64_SHL,
  I64_SHR_U,
  I64_XOR,
  WA,
  type WasmMemory,
  assemble,
  body,
  funcType,
  get,
  i32c,
  i64c,
  ifThen,
  load64,
  loopUntil,
  set,
  store64,
  tee,
} from "../../src/hashing/wasmAsm.js";
import { M64, SEQ_FLIP1, SEQ_FLIP2 } from "../../src/hashing/xxh3Secret.js";

const PARENT = 0;
const OUT = 64;
const MX = 0x165667919e3779f9n;
const M32 = 0xffffffffn;

// locals: params n, chained; then i32 i, p, o; i64 sq, h, x, y, ll, lh, hl
const [N, CHAINED, I, P, O, SQ, H, X, Y, LL, LH, HL] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const lo = (l: number) => [...get(l), ...i64c(M32), I64_AND];
const hi = (l: number) => [...get(l), ...i64c(32n), I64_SHR_U];
const fold64 = [
  ...get(X), ...get(Y), I64_MUL,
  ...lo(X), ...lo(Y), I64_MUL, ...i64c(32n), I64_SHR_U, ...set(LL),
  ...lo(X), ...hi(Y), I64_MUL, ...set(LH),
  ...hi(X), ...lo(Y), I64_MUL, ...set(HL),
  ...hi(X), ...hi(Y), I64_MUL, ...hi(LH), I64_ADD, ...hi(HL), I64_ADD,
  ...get(LL), ...lo(LH), I64_ADD, ...lo(HL), I64_ADD, ...i64c(32n), I64_SHR_U, I64_ADD,
  I64_XOR,
];
const swapX = [
  ...get(X), ...i64c(8n), I64_SHR_U, ...i64c(0x00ff00ff00ff00ffn), I64_AND, ...get(X), ...i64c(0x00ff00ff00ff00ffn), I64_AND, ...i64c(8n), I64_SHL, I64_OR, ...set(X),
  ...get(X), ...i64c(16n), I64_SHR_U, ...i64c(0x0000ffff0000ffffn), I64_AND, ...get(X), ...i64c(0x0000ffff0000ffffn), I64_AND, ...i64c(16n), I64_SHL, I64_OR,
  ...i64c(32n), I64_ROTL,
];
const avalanche = [
  ...tee(H), ...get(H), ...i64c(37n), I64_SHR_U, I64_XOR, ...i64c(MX), I64_MUL,
  ...tee(H), ...get(H), ...i64c(32n), I64_SHR_U, I64_XOR,
];
/** sq = sequence hash of (sq, h): avalanche(16 + swap64(x) + y + fold(x, y)). */
const sequence = [
  ...get(SQ), ...i64c(SEQ_FLIP1 & M64), I64_XOR, ...set(X),
  ...get(H), ...i64c(SEQ_FLIP2 & M64), I64_XOR, ...set(Y),
  ...i64c(16n), ...get(Y), I64_ADD, ...fold64, I64_ADD, ...swapX, I64_ADD, ...avalanche, ...set(SQ),
];
const code = [
  ...i32c(0), ...load64(PARENT), ...set(SQ),
  // p: the next block's words (IN = OUT + 8 * n, right after the output), o: the next output
  ...get(N), ...i32c(3), 0x74 /* i32.shl */, ...i32c(OUT), I32_ADD, ...set(P),
  ...i32c(OUT), ...set(O),
  // No parent: the first block's sequence hash is its local hash.
  ...ifThen([...get(CHAINED), I32_EQZ, ...get(N), I32_EQZ, I32_EQZ, 0x71 /* i32.and */], [
    ...get(P), ...load64(8), ...set(SQ),
    ...get(O), ...get(SQ), ...store64(0),
    ...get(P), ...i32c(16), I32_ADD, ...set(P),
    ...get(O), ...i32c(8), I32_ADD, ...set(O),
    ...i32c(1), ...set(I),
  ]),
  ...loopUntil([...get(I), ...get(N), I32_GE_U], [
    ...get(P), ...load64(8), ...set(H),
    ...sequence,
    ...get(O), ...get(SQ), ...store64(0),
    ...get(P), ...i32c(16), I32_ADD, ...set(P),
    ...get(O), ...i32c(8), I32_ADD, ...set(O),
    ...get(I), ...i32c(1), I32_ADD, ...set(I),
  ]),
];

let compiled: object | undefined;

/** One chainer (its own memory); views are remade when the memory grows. */
export class WasmChain {
  private readonly memory: WasmMemory;
  private readonly fn: (n: number, chained: number) => void;
  /** The whole memory as u32 words (valid until the next prepare()). */
  u32: Uint32Array;

  constructor() {
    compiled ??= new WA.Module(
      assemble({ types: [funcType([I32, I32], [])], funcTypes: [0], bodies: [body([[3, I32], [7, I64]], code)], memoryPages: 4, exports: { chain: 0 } }),
    );
    const instance = new WA.Instance(compiled, {});
    this.memory = instance.exports.mem as WasmMemory;
    this.fn = instance.exports.chain as (n: number, chained: number) => void;
    this.u32 = new Uint32Array(this.memory.buffer);
  }

  /**
   * Chains the n blocks at words [b, b + 4n) of `w` from the parent (pLo, pHi)
   * when `chained`, else from the first block's local hash. Block i's sequence
   * hash is then at u32[OUT_WORD + 2i], u32[OUT_WORD + 2i + 1].
   */
  chain(w: Uint32Array, b: number, n: number, chained: boolean, pLo: number, pHi: number): void {
    const need = OUT + 24 * n;
    if (need > this.memory.buffer.byteLength) this.memory.grow(Math.ceil((need - this.memory.buffer.byteLength) / 65536));
    if (this.u32.buffer !== this.memory.buffer) this.u32 = new Uint32Array(this.memory.buffer);
    const u32 = this.u32;
    u32[PARENT / 4] = pLo;
    u32[PARENT / 4 + 1] = pHi;
    u32.set(w.subarray(b, b + 4 * n), OUT / 4 + 2 * n);
    this.fn(n, chained ? 1 : 0);
  }
}

/** Where chain() leaves the sequence hashes, in u32 words. */
export const OUT_WORD = OUT / 4;
