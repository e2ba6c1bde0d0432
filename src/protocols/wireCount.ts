// Counts a repeated field from a message's wire bytes, without decoding any
// value: a request can be refused on a list's length before protobuf-es builds
// an object (and a BigInt) for every entry.
//
// It reads what protobuf-es's reader accepts (tags of at most 5 bytes, lengths
// as 32-bit varints of up to 10 bytes, varints of any length, groups nested up
// to 100 deep) and stops at the first thing it cannot read. protobuf-es fails
// at that point too, or earlier, so the entries it would decode are never more
// than the count.

const MAX_GROUP_DEPTH = 100;

/** How many times `field` occurs at the top level of `buf`, up to the first unreadable byte. */
export function countField(buf: Uint8Array, field: number): number {
  const w = new Walker(buf);
  let count = 0;
  while (w.pos < buf.length) {
    const tag = w.tag();
    if (tag < 0) break;
    if (tag >>> 3 === field) count++;
    if (!w.skip(tag & 7, 0)) break;
  }
  return count;
}

class Walker {
  pos = 0;
  constructor(private readonly buf: Uint8Array) {}

  /** A tag (at most 5 bytes, field number > 0, wire type 0-5), or -1. */
  tag(): number {
    const start = this.pos;
    const v = this.varint32();
    const bytes = this.pos - start;
    if (v < 0 || bytes > 5 || (bytes === 5 && this.buf[this.pos - 1] > 0x0f)) return -1;
    return v >>> 3 === 0 || (v & 7) > 5 ? -1 : v;
  }

  /** Skips one value of this wire type; false when it runs past the buffer or is not well formed. */
  skip(wire: number, depth: number): boolean {
    const b = this.buf;
    switch (wire) {
      case 0:
        while (this.pos < b.length && b[this.pos] & 0x80) this.pos++;
        this.pos++;
        break;
      case 1:
        this.pos += 8;
        break;
      case 2: {
        const len = this.varint32();
        if (len < 0) return false;
        this.pos += len;
        break;
      }
      case 3:
        if (depth >= MAX_GROUP_DEPTH) return false;
        for (;;) {
          const tag = this.tag();
          if (tag < 0) return false;
          if ((tag & 7) === 4) break;
          if (!this.skip(tag & 7, depth + 1)) return false;
        }
        break;
      case 5:
        this.pos += 4;
        break;
      default:
        return false; // an end-group tag with no group open
    }
    return this.pos <= b.length;
  }

  /** A varint of up to 10 bytes as an unsigned 32-bit value (the low 32 bits), or -1. */
  private varint32(): number {
    const b = this.buf;
    let v = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= b.length) return -1;
      const c = b[this.pos++];
      if (i < 5) v |= (c & 0x7f) << (7 * i);
      if (c < 0x80) return v >>> 0;
    }
    return -1;
  }
}
