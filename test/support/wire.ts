// A protobuf writer for property tests of hand-written decoders: besides the
// forms encoders emit, it writes the odd ones a hostile or unusual peer might
// send (over-long varints, wrong wire types, split packed lists, unknown
// fields of every wire type, groups).
export type Rnd = () => number;

/** A protobuf writer that can also write the odd forms a hostile or unusual peer might send. */
export class Wire {
  readonly bytes: number[] = [];
  constructor(private readonly rnd: Rnd) {}

  /** A varint; sometimes over-long (padded with 0x80 bytes, up to 10 in all, rarely 11). */
  varint(v: bigint): this {
    const out: number[] = [];
    v = BigInt.asUintN(64, v);
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) b |= 0x80;
      out.push(b);
    } while (v !== 0n);
    const r = this.rnd();
    if (r < 0.04) {
      const limit = r < 0.004 ? 11 : 10;
      while (out.length < limit && this.rnd() < 0.7) {
        out[out.length - 1] |= 0x80;
        out.push(0);
      }
    }
    this.bytes.push(...out);
    return this;
  }
  tag(field: number, wt: number): this {
    return this.varint(BigInt((field << 3) | wt));
  }
  delimited(field: number, body: number[]): this {
    this.tag(field, 2).varint(BigInt(body.length));
    this.bytes.push(...body);
    return this;
  }
  /** A scalar varint field, rarely with a wrong wire type. */
  scalar(field: number, v: bigint): this {
    const r = this.rnd();
    if (r < 0.01) return this.tag(field, 5).fixed(v, 4);
    if (r < 0.02) return this.tag(field, 1).fixed(v, 8);
    if (r < 0.03) return this.delimited(field, new Wire(this.rnd).varint(v).bytes);
    return this.tag(field, 0).varint(v);
  }
  fixed(v: bigint, n: number): this {
    for (let i = 0; i < n; i++) this.bytes.push(Number((v >> BigInt(8 * i)) & 0xffn));
    return this;
  }
  /** A repeated varint field, packed (one or two chunks) or unpacked. */
  repeated(field: number, values: bigint[]): this {
    const r = this.rnd();
    if (r < 0.15) {
      for (const v of values) this.tag(field, 0).varint(v);
    } else if (r < 0.25 && values.length > 1) {
      const cut = 1 + Math.floor(this.rnd() * (values.length - 1));
      this.packed(field, values.slice(0, cut)).packed(field, values.slice(cut));
    } else this.packed(field, values);
    return this;
  }
  private packed(field: number, values: bigint[]): this {
    const body = new Wire(this.rnd);
    for (const v of values) body.varint(v);
    return this.delimited(field, body.bytes);
  }
  /** Now and then a field no schema has, of any wire type (rarely a group). */
  noise(): this {
    if (this.rnd() > 0.08) return this;
    const field = 1000 + Math.floor(this.rnd() * 1000);
    const r = this.rnd();
    if (r < 0.3) this.tag(field, 0).varint(BigInt(Math.floor(this.rnd() * 2 ** 40)));
    else if (r < 0.5) this.tag(field, 1).fixed(123456789n, 8);
    else if (r < 0.7) this.tag(field, 5).fixed(1234n, 4);
    else if (r < 0.95) this.delimited(field, [1, 2, 3, 250]);
    else this.tag(field, 3).tag(field, 4);
    return this;
  }
}

export function u64(rnd: Rnd): bigint {
  const r = rnd();
  if (r < 0.3) return BigInt(Math.floor(rnd() * 100));
  if (r < 0.6) return BigInt(Math.floor(rnd() * 2 ** 32));
  return (BigInt(Math.floor(rnd() * 2 ** 32)) << 32n) | BigInt(Math.floor(rnd() * 2 ** 32));
}

/** Writes a message's fields in a random order (each field is its own byte run), with noise between. */
export function fields(rnd: Rnd, parts: number[][]): number[] {
  const order = parts.map((p) => [rnd(), p] as const).sort((a, b) => a[0] - b[0]);
  const w = new Wire(rnd);
  for (const [, p] of rnd() < 0.7 ? parts.map((p) => [0, p] as const) : order) {
    w.noise();
    w.bytes.push(...p);
  }
  return w.noise().bytes;
}

export const part = (rnd: Rnd, f: (w: Wire) => void) => {
  const w = new Wire(rnd);
  f(w);
  return w.bytes;
};
