// A msgpack writer for the flat readers' property tests: it picks among the
// encodings a value may take (every int width, str/bin/array/map header
// size), and writes floats, raw hostile fragments and maps with repeated keys.
export type Rnd = () => number;

/** A float (encoded float32 or float64). */
export class F {
  constructor(readonly v: number) {}
}
/** Bytes written as they are (a hostile fragment). */
export class Raw {
  constructor(readonly bytes: number[]) {}
}
/** A map with keys in this order (duplicates allowed). */
export class M {
  constructor(readonly entries: [unknown, unknown][]) {}
}

export class Writer {
  readonly out: number[] = [];
  constructor(private readonly rnd: Rnd) {}
  private be(v: bigint, bytes: number): void {
    for (let i = bytes - 1; i >= 0; i--) this.out.push(Number((v >> BigInt(8 * i)) & 0xffn));
  }
  /** `wide`: 64-bit forms allowed for small values too (a JS number, e.g. a token id, never gets them: the reference reads those as bigints). */
  int(v: bigint, wide: boolean): void {
    const choices: (() => void)[] = [];
    if (v >= 0n && v < 128n) choices.push(() => this.out.push(Number(v)));
    if (v < 0n && v >= -32n) choices.push(() => this.out.push(Number(v) & 0xff));
    if (v >= 0n && v < 256n) choices.push(() => (this.out.push(0xcc), this.be(v, 1)));
    if (v >= 0n && v < 65536n) choices.push(() => (this.out.push(0xcd), this.be(v, 2)));
    if (v >= 0n && v < 2n ** 32n) choices.push(() => (this.out.push(0xce), this.be(v, 4)));
    if (v >= 0n && v < 2n ** 64n && (wide || v >= 2n ** 32n)) choices.push(() => (this.out.push(0xcf), this.be(v, 8)));
    if (v >= -128n && v < 128n) choices.push(() => (this.out.push(0xd0), this.be(BigInt.asUintN(8, v), 1)));
    if (v >= -32768n && v < 32768n) choices.push(() => (this.out.push(0xd1), this.be(BigInt.asUintN(16, v), 2)));
    if (v >= -(2n ** 31n) && v < 2n ** 31n) choices.push(() => (this.out.push(0xd2), this.be(BigInt.asUintN(32, v), 4)));
    if (v >= -(2n ** 63n) && v < 2n ** 63n && (wide || v >= 2n ** 32n || v < -(2n ** 31n))) choices.push(() => (this.out.push(0xd3), this.be(BigInt.asUintN(64, v), 8)));
    // Mostly the smallest form, as msgspec writes; sometimes any other.
    (this.rnd() < 0.8 ? choices[0] : choices[Math.floor(this.rnd() * choices.length)])();
  }
  header(n: number, fix: number, fixMax: number, c16: number, c32: number): void {
    const r = this.rnd();
    if (n <= fixMax && r < 0.85) this.out.push(fix | n);
    else if (n < 65536 && r < 0.95) (this.out.push(c16), this.be(BigInt(n), 2));
    else (this.out.push(c32), this.be(BigInt(n), 4));
  }
  value(v: unknown): void {
    if (v === null || v === undefined) this.out.push(0xc0);
    else if (v === true || v === false) this.out.push(v ? 0xc3 : 0xc2);
    else if (typeof v === "number") this.int(BigInt(v), false);
    else if (typeof v === "bigint") this.int(v, true);
    else if (v instanceof F) {
      const b = Buffer.alloc(9);
      if (this.rnd() < 0.5 && Math.fround(v.v) === v.v) {
        b[0] = 0xca;
        b.writeFloatBE(v.v, 1);
        this.out.push(...b.subarray(0, 5));
      } else {
        b[0] = 0xcb;
        b.writeDoubleBE(v.v, 1);
        this.out.push(...b);
      }
    } else if (typeof v === "string") {
      const bytes = [...Buffer.from(v, "utf8")];
      const r = this.rnd();
      if (bytes.length < 32 && r < 0.8) this.out.push(0xa0 | bytes.length);
      else if (bytes.length < 256 && r < 0.9) (this.out.push(0xd9), this.be(BigInt(bytes.length), 1));
      else (this.out.push(0xda), this.be(BigInt(bytes.length), 2));
      this.out.push(...bytes);
    } else if (v instanceof Uint8Array) {
      if (v.length < 256 && this.rnd() < 0.8) (this.out.push(0xc4), this.be(BigInt(v.length), 1));
      else if (v.length < 65536) (this.out.push(0xc5), this.be(BigInt(v.length), 2));
      else (this.out.push(0xc6), this.be(BigInt(v.length), 4));
      this.out.push(...v);
    } else if (v instanceof Raw) this.out.push(...v.bytes);
    else if (Array.isArray(v)) {
      this.header(v.length, 0x90, 15, 0xdc, 0xdd);
      for (const x of v) this.value(x);
    } else if (v instanceof M) {
      this.header(v.entries.length, 0x80, 15, 0xde, 0xdf);
      for (const [k, x] of v.entries) (this.value(k), this.value(x));
    } else throw new Error(`cannot write ${String(v)}`);
  }
}

export const pick = <T>(rnd: Rnd, xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];

/** 40 nested arrays: past the reference decoders' nesting bound. */
export const DEEP: unknown = Array.from({ length: 40 }).reduce((inner: unknown) => [inner], 1);

/**
 * An unusual value for a field, for the flat readers' property tests: a
 * float, a wrong-signed or oversized int, one of `strings` (the field names
 * and enum values of the format under test), bytes, a bool, nil, nested or
 * deep values, an extension, a never-used byte, a huge array header, and
 * small ints in wide encodings. The reader must hand it back or read it
 * exactly as the reference does.
 */
export function oddMsgpackValue(rnd: Rnd, strings: readonly string[]): unknown {
  return pick(rnd, [
    new F(3),
    new F(2.5),
    -1,
    2n ** 63n,
    2n ** 32n,
    ...strings,
    "läufer",
    new Uint8Array(0),
    Uint8Array.from([1, 2]),
    true,
    null,
    [],
    [[1, 2]],
    new M([["a", 1]]),
    DEEP,
    new Raw([0xd4, 0x01, 0x02]), // a fixext
    new Raw([0xc1]), // never used
    new Raw([0xdd, 0xff, 0xff, 0xff, 0xff]), // array32 of 2^32 - 1 items
    new Raw([0xcf, 0, 0, 0, 0, 0, 0, 0, 16]), // 16 as a uint64
    new Raw([0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0]), // -16 as an int64
    new Raw([0xd2, 0, 0, 0, 16]), // 16 as an int32
    new Raw([0xd0, 0xfc]), // -4 as an int8
    new Raw([0xd1, 0xfe, 0xd4]), // -300 as an int16
  ]);
}
