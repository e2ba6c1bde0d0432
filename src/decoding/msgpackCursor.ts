// The msgpack primitives of the strict hot-path readers (engine payloads,
// Dynamo's RouterEvent envelopes): a cursor over one message's bytes that
// reads exactly the forms those readers take and throws HAND_BACK at anything
// else (truncation, a form it does not handle, a length past the end). The
// readers extend it, catch HAND_BACK, and hand the message to their library
// decoder, which stays the reference for every answer, error and bound.

/** Thrown inside a reader to hand the message back to the reference decoder. */
export const HAND_BACK = new Error("hand back to the reference decoder");

/** A map key matched none of the names asked for (a field the reference does not read). */
export const KEY_IGNORED = -1;

/** How deep a value the readers skip may nest (the references bound a whole payload at 32). */
export const SKIP_DEPTH = 3;

export const isArrayHeader = (h: number): boolean => (h >= 0x90 && h <= 0x9f) || h === 0xdc || h === 0xdd;
export const isMapHeader = (h: number): boolean => (h >= 0x80 && h <= 0x8f) || h === 0xde || h === 0xdf;

/** ASCII text as bytes (the keys and tags the readers compare against). */
export const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

export class MsgpackCursor {
  protected buf: Uint8Array = new Uint8Array(0);
  protected pos = 0;
  protected end = 0;
  /** The last int64() read, as u32 halves of its 64-bit two's complement. */
  protected intLo = 0;
  protected intHi = 0;

  protected byte(): number {
    if (this.pos >= this.end) throw HAND_BACK;
    return this.buf[this.pos++];
  }

  protected need(n: number): void {
    if (this.pos + n > this.end) throw HAND_BACK;
  }

  /** A big-endian unsigned length of `bytes` bytes. */
  protected lengthOf(bytes: number): number {
    this.need(bytes);
    const b = this.buf;
    const p = this.pos;
    this.pos += bytes;
    if (bytes === 1) return b[p];
    if (bytes === 2) return (b[p] << 8) | b[p + 1];
    return ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
  }

  /** The element count of an array or map whose header byte is `h`. */
  protected containerLength(h: number): number {
    if (h >= 0x80 && h <= 0x9f) return h & 0x0f;
    return this.lengthOf(h === 0xdc || h === 0xde ? 2 : 4);
  }

  /** An array header: its count, which cannot exceed the bytes left (each item takes one at least). */
  protected arrayLength(): number {
    const h = this.byte();
    if (!isArrayHeader(h)) throw HAND_BACK;
    const n = this.containerLength(h);
    if (n > this.end - this.pos) throw HAND_BACK;
    return n;
  }

  /** A map header: its entry count (each entry takes two bytes at least). */
  protected mapLength(): number {
    const h = this.byte();
    if (!isMapHeader(h)) throw HAND_BACK;
    const n = this.containerLength(h);
    if (n > (this.end - this.pos) / 2) throw HAND_BACK;
    return n;
  }

  protected unsignedOf(h: number): number {
    return this.lengthOf(h === 0xcc ? 1 : h === 0xcd ? 2 : 4);
  }

  protected signedOf(h: number): number {
    const bytes = h === 0xd0 ? 1 : h === 0xd1 ? 2 : 4;
    const v = this.lengthOf(bytes);
    return bytes === 1 ? (v << 24) >> 24 : bytes === 2 ? (v << 16) >> 16 : v | 0;
  }

  /**
   * The int whose header byte `h` was just read, into intLo / intHi as its
   * 64-bit two's complement (a u64 hash sent as an i64 keeps its bits); false,
   * with nothing more consumed, when `h` starts no int.
   */
  protected int64(h: number): boolean {
    if (h < 0x80) {
      this.intLo = h;
      this.intHi = 0;
    } else if (h >= 0xe0) {
      this.intLo = (h - 256) >>> 0;
      this.intHi = 0xffff_ffff;
    } else if (h === 0xcc || h === 0xcd || h === 0xce) {
      this.intLo = this.unsignedOf(h);
      this.intHi = 0;
    } else if (h === 0xd0 || h === 0xd1 || h === 0xd2) {
      const v = this.signedOf(h);
      this.intLo = v >>> 0;
      this.intHi = v < 0 ? 0xffff_ffff : 0;
    } else if (h === 0xcf || h === 0xd3) {
      this.need(8);
      const b = this.buf;
      const p = this.pos;
      this.intHi = ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
      this.intLo = ((b[p + 4] << 24) | (b[p + 5] << 16) | (b[p + 6] << 8) | b[p + 7]) >>> 0;
      this.pos += 8;
    } else return false;
    return true;
  }

  /** An int in [min, max] (max < 2^32), from any int format; anything else is handed back. */
  protected uint(min: number, max: number): number {
    const h = this.byte();
    let v: number;
    if (h < 0x80) v = h;
    else if (h === 0xcc || h === 0xcd || h === 0xce) v = this.unsignedOf(h);
    else if (h === 0xd0 || h === 0xd1 || h === 0xd2) v = this.signedOf(h);
    else if (h === 0xcf || h === 0xd3) {
      // 64-bit: the reference reads a bigint and converts; only values under 2^32 are taken here.
      if (this.lengthOf(4) !== 0) throw HAND_BACK;
      v = this.lengthOf(4);
    } else throw HAND_BACK; // negative fixint, floats, anything else
    if (v < min || v > max) throw HAND_BACK;
    return v;
  }

  /** Any number (int or float), skipped. */
  protected number(): void {
    const h = this.byte();
    if (h < 0x80 || h >= 0xe0) return;
    if (h === 0xca || h === 0xcb) {
      this.need(h === 0xca ? 4 : 8);
      this.pos += h === 0xca ? 4 : 8;
      return;
    }
    if (h >= 0xcc && h <= 0xd3) {
      const bytes = 1 << (h & 3);
      this.need(bytes);
      this.pos += bytes;
      return;
    }
    throw HAND_BACK;
  }

  protected nil(): boolean {
    if (this.pos < this.end && this.buf[this.pos] === 0xc0) {
      this.pos++;
      return true;
    }
    return false;
  }

  /** The byte length of a str (header consumed, bytes in bounds and ASCII: other text goes to the reference's UTF-8 decoding). */
  protected strLength(): number {
    const h = this.byte();
    let len: number;
    if (h >= 0xa0 && h <= 0xbf) len = h & 0x1f;
    else if (h === 0xd9 || h === 0xda || h === 0xdb) len = this.lengthOf(h === 0xd9 ? 1 : h === 0xda ? 2 : 4);
    else throw HAND_BACK;
    this.need(len);
    const b = this.buf;
    for (let p = this.pos; p < this.pos + len; p++) if (b[p] > 0x7f) throw HAND_BACK;
    return len;
  }

  /** An ASCII str equal to `want` (true), or another ASCII str (false); both consumed. */
  protected strIs(want: Uint8Array): boolean {
    const len = this.strLength();
    const at = this.pos;
    this.pos += len;
    return this.equals(at, len, want);
  }

  protected equals(at: number, len: number, want: Uint8Array): boolean {
    if (len !== want.length) return false;
    const b = this.buf;
    for (let i = 0; i < len; i++) if (b[at + i] !== want[i]) return false;
    return true;
  }

  protected asciiString(at: number, len: number): string {
    let s = "";
    for (let i = at; i < at + len; i++) s += String.fromCharCode(this.buf[i]);
    return s;
  }

  /** A map key among `keys` (its index), KEY_IGNORED for another str; non-str keys are handed back. */
  protected key(keys: readonly Uint8Array[]): number {
    const len = this.strLength();
    const at = this.pos;
    this.pos += len;
    for (let k = 0; k < keys.length; k++) if (this.equals(at, len, keys[k])) return k;
    // __proto__ and friends: the reference's object would treat them specially.
    if (len >= 2 && this.buf[at] === 0x5f && this.buf[at + 1] === 0x5f) throw HAND_BACK;
    return KEY_IGNORED;
  }

  /**
   * A map entry's key among `keys` (its index), its value still to read; for
   * another key the value is skipped and KEY_IGNORED returned. A key already in
   * `seen` (bit per index) is handed back: the reference keeps the last.
   */
  protected mapKey(keys: readonly Uint8Array[], seen: number): number {
    const key = this.key(keys);
    if (key === KEY_IGNORED) {
      this.skip(SKIP_DEPTH);
      return KEY_IGNORED;
    }
    if (seen & (1 << key)) throw HAND_BACK;
    return key;
  }

  /** Skips a value the reference does not read: scalars, and arrays of them `depth` deep; maps and ext types are handed back. */
  protected skip(depth: number): void {
    const h = this.byte();
    if (h < 0x80 || h >= 0xe0 || h === 0xc0 || h === 0xc2 || h === 0xc3) return;
    if (h >= 0xa0 && h <= 0xbf) return this.advance(h & 0x1f);
    if (isArrayHeader(h)) {
      if (depth === 0) throw HAND_BACK;
      const n = this.containerLength(h);
      if (n > this.end - this.pos) throw HAND_BACK;
      for (let i = 0; i < n; i++) this.skip(depth - 1);
      return;
    }
    switch (h) {
      case 0xcc:
      case 0xd0:
        return this.advance(1);
      case 0xcd:
      case 0xd1:
        return this.advance(2);
      case 0xce:
      case 0xd2:
      case 0xca:
        return this.advance(4);
      case 0xcf:
      case 0xd3:
      case 0xcb:
        return this.advance(8);
      case 0xc4:
      case 0xd9:
        return this.advance(this.lengthOf(1));
      case 0xc5:
      case 0xda:
        return this.advance(this.lengthOf(2));
      case 0xc6:
      case 0xdb:
        return this.advance(this.lengthOf(4));
      default:
        throw HAND_BACK; // maps, ext types, 0xc1
    }
  }

  protected advance(n: number): void {
    this.need(n);
    this.pos += n;
  }
}
