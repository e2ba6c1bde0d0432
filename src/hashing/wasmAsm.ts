// A minimal WebAssembly assembler: just the encodings the hashers in
// src/hashing/ (and the scalar baseline in bench/) are written with, so their
// modules are assembled from opcodes at load time, with no toolchain and no
// binary blob in the repo.

export const I32 = 0x7f;
export const I64 = 0x7e;
export const V128 = 0x7b;

export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}
export function sleb(v: bigint): number[] {
  const out: number[] = [];
  for (;;) {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    if ((v === 0n && (b & 0x40) === 0) || (v === -1n && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}
export const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
export const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
export const str = (s: string) => [...uleb(s.length), ...Buffer.from(s, "utf8")];

// ---- scalar instructions ---------------------------------------------------
export const get = (i: number) => [0x20, ...uleb(i)];
export const set = (i: number) => [0x21, ...uleb(i)];
export const tee = (i: number) => [0x22, ...uleb(i)];
export const i32c = (n: number) => [0x41, ...sleb(BigInt(n))];
export const i64c = (n: bigint) => [0x42, ...sleb(BigInt.asIntN(64, n))];
export const load32 = (offset: number) => [0x28, 2, ...uleb(offset)];
export const load64 = (offset: number) => [0x29, 3, ...uleb(offset)];
export const load8u = (offset: number) => [0x2d, 0, ...uleb(offset)];
export const store32 = (offset: number) => [0x36, 2, ...uleb(offset)];
export const store64 = (offset: number) => [0x37, 3, ...uleb(offset)];
export const call = (f: number) => [0x10, ...uleb(f)];
export const I64_ADD = 0x7c;
export const I64_MUL = 0x7e;
export const I64_XOR = 0x85;
export const I64_AND = 0x83;
export const I64_OR = 0x84;
export const I64_SHL = 0x86;
export const I64_SHR_U = 0x88;
export const I64_ROTL = 0x89;
export const I64_EXTEND_I32_U = 0xad;
export const I32_ADD = 0x6a;
export const I32_SUB = 0x6b;
export const I32_MUL = 0x6c;
export const I32_SHR_U = 0x76;
export const I32_AND = 0x71;
export const I32_OR = 0x72;
export const I32_SHL = 0x74;
export const I32_DIV_U = 0x6e;
export const I32_GE_U = 0x4f;
export const I32_GT_U = 0x4b;
export const I32_LT_U = 0x49;
export const I32_EQZ = 0x45;

// ---- control -------------------------------------------------------------
/** while (!exit) { body }: exit is code leaving an i32 on the stack. */
export const loopUntil = (exit: number[], body: number[]) => [0x02, 0x40, 0x03, 0x40, ...exit, 0x0d, 1, ...body, 0x0c, 0, 0x0b, 0x0b];
export const ifThenElse = (cond: number[], then: number[], els: number[]) => [...cond, 0x04, 0x40, ...then, 0x05, ...els, 0x0b];
export const ifThen = (cond: number[], then: number[]) => [...cond, 0x04, 0x40, ...then, 0x0b];
/**
 * A jump into a run of code pieces: with `index` (code leaving an i32) = n,
 * runs pieces n-1, n-2, ..., 0 (n = 0 runs piece 0 too; n past the last
 * piece runs them all). Nested blocks left by one br_table, as in Duff's device.
 */
export function enterAt(index: number[], pieces: number[][]): number[] {
  const k = pieces.length;
  // Block j (1..k, outermost first) ends just before piece j-1; the br_table sits in the innermost, block k.
  let code = [...Array(k).fill([0x02, 0x40]).flat(), ...index, 0x0e, ...uleb(k + 1), ...Array.from({ length: k + 1 }, (_, n) => uleb(k - Math.max(n, 1))).flat(), ...uleb(0)];
  for (let j = k; j >= 1; j--) code = [...code, 0x0b, ...pieces[j - 1]];
  return code;
}

// ---- SIMD (the 0xfd prefix; opcodes are LEB128 after it) ------------------
const simd = (op: number) => [0xfd, ...uleb(op)];
export const v128load = (offset: number) => [...simd(0x00), 0, ...uleb(offset)];
export const v128const = (bytes: ArrayLike<number>) => [...simd(0x0c), ...Array.from(bytes)];
/** i8x16.shuffle of the two v128s on the stack, lanes given as 32-bit lane numbers (0-3 first operand, 4-7 second). */
export const shuffle32 = (lanes: [number, number, number, number]) => [...simd(0x0d), ...lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3])];
/** i8x16.shuffle with byte lane numbers (0-15 first operand, 16-31 second). */
export const shuffle8 = (lanes: number[]) => [...simd(0x0d), ...lanes];
export const I64X2_SPLAT = simd(0x12);
export const i64x2ExtractLane = (lane: number) => [...simd(0x1d), lane];
export const V128_AND = simd(0x4e);
export const V128_OR = simd(0x50);
export const V128_XOR = simd(0x51);
export const I64X2_SHL = simd(0xcb);
export const I64X2_SHR_U = simd(0xcd);
export const I64X2_ADD = simd(0xce);
export const I64X2_MUL = simd(0xd5);
/** u32 lanes 0,1 of a and b -> u64 lanes a0*b0, a1*b1. */
export const I64X2_EXTMUL_LOW_U = simd(0xde);
/** u32 lanes 2,3 of a and b -> u64 lanes a2*b2, a3*b3. */
export const I64X2_EXTMUL_HIGH_U = simd(0xdf);

/** A v128 of two u64 lanes. */
export function u64x2(lo: bigint, hi: bigint): number[] {
  const b = new DataView(new ArrayBuffer(16));
  b.setBigUint64(0, BigInt.asUintN(64, lo), true);
  b.setBigUint64(8, BigInt.asUintN(64, hi), true);
  return v128const(new Uint8Array(b.buffer));
}

// ---- functions and modules -------------------------------------------------
/** A function body: local declarations as (count, type) runs, then the code. */
export function body(locals: [number, number][], code: number[]): number[] {
  const b = [...vec(locals.map(([n, t]) => [...uleb(n), t])), ...code, 0x0b];
  return [...uleb(b.length), ...b];
}

/** A function type (params) -> (results). */
export const funcType = (params: number[], results: number[]) => [0x60, ...vec(params.map((t) => [t])), ...vec(results.map((t) => [t]))];

export interface ModuleSpec {
  types: number[][];
  /** Each function's type index, in function order. */
  funcTypes: number[];
  bodies: number[][];
  /** Initial memory pages, exported as "mem". */
  memoryPages: number;
  /** Exported functions: name -> function index. */
  exports: Record<string, number>;
}

export function assemble(m: ModuleSpec): Uint8Array {
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(m.types)),
    ...section(3, vec(m.funcTypes.map((t) => uleb(t)))),
    ...section(5, vec([[0x00, ...uleb(m.memoryPages)]])),
    ...section(7, vec([[...str("mem"), 0x02, 0], ...Object.entries(m.exports).map(([name, f]) => [...str(name), 0x00, ...uleb(f)])])),
    ...section(10, vec(m.bodies)),
  ]);
}

// The project's TypeScript libs do not declare WebAssembly: the little used here.
export interface WasmMemory {
  buffer: ArrayBuffer;
  grow(pages: number): number;
}
export const WA = (
  globalThis as unknown as {
    WebAssembly: {
      Module: new (bytes: Uint8Array) => object;
      Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
    };
  }
).WebAssembly;
