// Protobuf wire primitives for the hot-path decoders (decoding/ingestDecoder.ts
// for IngestKvEvents, server/promptDecoder.ts for FindBestWorker): a cursor
// over the bytes and the last varint as (lo, hi) u32 halves, so reading needs
// no allocation and no bigint.
//
// Every read is strict and reports failure instead of guessing: a varint over
// 10 bytes (or whose 10th byte is over 1), a tag or length that does not fit a
// u32, a field number 0, a group, anything that runs past `end`. The decoders
// then hand the whole message to protobuf-es, whose answer is the reference.

const EMPTY = new Uint8Array(0);

export class WireReader {
  buf: Uint8Array = EMPTY;
  pos = 0;
  /** Low and high 32 bits of the last varint read. */
  lo = 0;
  hi = 0;

  reset(buf: Uint8Array): void {
    // A plain view of a Buffer (grpc-js hands those): its subarray() then makes no FastBuffer
    // (profiled: 0.1-0.2 us a block on the main thread), and every read sees one array kind.
    this.buf = buf.constructor === Uint8Array ? buf : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = 0;
  }

  /** Drops the reference to the last message's bytes, so a reused reader does not keep them alive. */
  release(): void {
    this.reset(EMPTY);
  }

  /** A varint ending before `end` into lo/hi; false (cursor unmoved) when irregular. */
  varint(end: number): boolean {
    const b = this.buf;
    let p = this.pos;
    let lo = 0;
    let hi = 0;
    for (let i = 0; ; i++) {
      if (p >= end || i === 10) return false;
      const x = b[p++];
      if (i < 4) lo |= (x & 0x7f) << (7 * i);
      else if (i === 4) {
        lo |= (x & 0x0f) << 28;
        hi = (x & 0x70) >> 4;
      } else {
        if (i === 9 && x > 1) return false;
        hi |= (x & 0x7f) << (7 * i - 32);
      }
      if (x < 0x80) break;
    }
    this.pos = p;
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
    return true;
  }

  /** A tag of at most 5 bytes that fits a u32, field number >= 1; -1 otherwise. */
  tag(end: number): number {
    const start = this.pos;
    if (!this.varint(end)) return -1;
    if (this.hi !== 0 || this.pos - start > 5 || this.lo >>> 3 === 0) return -1;
    return this.lo;
  }

  /** A length that stays inside `end`; -1 otherwise. */
  length(end: number): number {
    if (!this.varint(end) || this.hi !== 0 || this.lo > end - this.pos) return -1;
    return this.lo;
  }

  /** Skips one value of this wire type (varint, 64-bit, length-delimited, 32-bit); false for groups and anything irregular. */
  skip(wire: number, end: number): boolean {
    switch (wire) {
      case 0:
        return this.varint(end);
      case 1:
      case 5: {
        const p = this.pos + (wire === 1 ? 8 : 4);
        if (p > end) return false;
        this.pos = p;
        return true;
      }
      case 2: {
        const len = this.length(end);
        if (len < 0) return false;
        this.pos += len;
        return true;
      }
      default:
        return false;
    }
  }

  /**
   * Packed varints [pos, end) into out[n..], the low 32 bits of each (as
   * protobuf-es reads a uint32); returns the new n, or -1 when a varint is
   * irregular or crosses `end`. `out` must have room for end - pos more values
   * (each takes at least a byte), else -1 before reading: no check per value.
   * The common 1-4 byte varints are read inline (a read past the buffer gives
   * undefined, which never ends a varint, and the final check refuses it):
   * this is the inner loop of ingest and of FindBestWorker.
   */
  packedU32(end: number, out: Uint32Array, n: number): number {
    const b = this.buf;
    let p = this.pos;
    if (n + (end - p) > out.length) return -1;
    while (p < end) {
      let c = b[p];
      let v = c & 0x7f;
      if (c < 0x80) p += 1;
      else {
        c = b[p + 1];
        v |= (c & 0x7f) << 7;
        if (c < 0x80) p += 2;
        else {
          c = b[p + 2];
          v |= (c & 0x7f) << 14;
          if (c < 0x80) p += 3;
          else {
            c = b[p + 3];
            v |= (c & 0x7f) << 21;
            if (c < 0x80) p += 4;
            else {
              this.pos = p;
              if (!this.varint(end)) return -1;
              v = this.lo;
              p = this.pos;
            }
          }
        }
      }
      out[n++] = v;
    }
    if (p > end) return -1;
    this.pos = p;
    return n;
  }
}
