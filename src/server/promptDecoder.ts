// The hot path of FindBestWorker's request over gRPC: a 4,096-token prompt is
// ~12 KB of packed varints, and protobuf-es builds a JS array of them that the
// service then copies into a Uint32Array (together ~130 µs, more than the rest
// of the call). This decoder reads token_ids (field 1) straight into a
// Uint32Array and hands every other field, byte for byte and in order, to
// protobuf-es: the message it returns is protobuf-es's own, minus token_ids.
//
// Anything it is not sure of — a wrong wire type, a group, truncation, a
// varint longer than a u32 needs, a field number 0 — returns undefined and the
// caller decodes the whole message with protobuf-es as before, so results and
// error messages are protobuf-es's by construction
// (test/promptDecoder.property.test.ts compares the two).
import { create, fromBinary } from "@bufbuild/protobuf";
import { type FindBestWorkerRequest, FindBestWorkerRequestSchema } from "../../gen/kvrouter/v1/router_pb.js";
import { toTokenArray } from "./convert.js";

const TOKEN_IDS = 1;

/** Token ids the fast path decoded, by the message it returned (whose own tokenIds is left empty). */
const decodedTokens = new WeakMap<FindBestWorkerRequest, Uint32Array>();

/** A request's prompt: the fast path's array, or the message's own token_ids. */
export function promptTokens(req: FindBestWorkerRequest): Uint32Array {
  return decodedTokens.get(req) ?? toTokenArray(req.tokenIds);
}

/** Decodes a FindBestWorkerRequest's wire bytes, or undefined to leave them to protobuf-es. */
export function decodeFindBestWorkerFast(buf: Uint8Array): FindBestWorkerRequest | undefined {
  const r = new Reader(buf);
  let tokens: Uint32Array<ArrayBuffer> = new Uint32Array(0);
  let count = 0;
  /** Byte ranges of the other fields, as [start, end) pairs. */
  const rest: number[] = [];
  let restBytes = 0;
  while (r.pos < buf.length) {
    const start = r.pos;
    const tag = r.u32();
    if (tag < 0) return undefined;
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 0) return undefined;
    if (field === TOKEN_IDS) {
      if (wire === 2) {
        const len = r.u32();
        if (len < 0 || len > buf.length - r.pos) return undefined;
        const end = r.pos + len;
        // Each id takes at least one byte: len bounds the count.
        if (tokens.length - count < len) tokens = grown(tokens, count + len);
        count = packedTokens(buf, r, end, tokens, count);
        if (count < 0) return undefined;
      } else if (wire === 0) {
        const v = r.token();
        if (v < 0) return undefined;
        if (count === tokens.length) tokens = grown(tokens, Math.max(16, count * 2));
        tokens[count++] = v;
      } else return undefined;
      continue;
    }
    if (!r.skip(wire)) return undefined;
    rest.push(start, r.pos);
    restBytes += r.pos - start;
  }
  let msg: FindBestWorkerRequest;
  if (restBytes === 0) msg = create(FindBestWorkerRequestSchema);
  else {
    const others = new Uint8Array(restBytes);
    for (let i = 0, o = 0; i < rest.length; i += 2) {
      others.set(buf.subarray(rest[i], rest[i + 1]), o);
      o += rest[i + 1] - rest[i];
    }
    try {
      msg = fromBinary(FindBestWorkerRequestSchema, others);
    } catch {
      return undefined;
    }
  }
  decodedTokens.set(msg, tokens.subarray(0, count));
  return msg;
}

/**
 * Decodes a packed run [r.pos, end) into tokens from index `count`; returns
 * the new count, or -1 if a varint crosses `end` or is invalid. The common
 * 1-4 byte varints are read inline; longer ones, and any that reach past the
 * buffer (a read there gives undefined, which never ends a varint), go
 * through Reader.token(), which checks bounds.
 */
function packedTokens(b: Uint8Array, r: Reader, end: number, tokens: Uint32Array, count: number): number {
  let p = r.pos;
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
            r.pos = p;
            v = r.token();
            if (v < 0) return -1;
            p = r.pos;
          }
        }
      }
    }
    tokens[count++] = v;
  }
  if (p > end) return -1;
  r.pos = p;
  return count;
}

function grown(a: Uint32Array, atLeast: number): Uint32Array<ArrayBuffer> {
  const b = new Uint32Array(Math.max(atLeast, a.length * 2));
  b.set(a);
  return b;
}

/** Reads tags and lengths that fit a u32 (at most 5 bytes, the 5th at most 0x0f), token ids, and skips fields; -1 / false on anything else. */
class Reader {
  pos = 0;
  constructor(private readonly buf: Uint8Array) {}

  u32(): number {
    const b = this.buf;
    let p = this.pos;
    let v = 0;
    for (let i = 0; i < 5; i++) {
      if (p >= b.length) return -1;
      const c = b[p++];
      if (i === 4 && c > 0x0f) return -1; // past 32 bits, or a 6th byte
      v |= (c & 0x7f) << (7 * i);
      if (c < 0x80) {
        this.pos = p;
        return v >>> 0;
      }
    }
    return -1;
  }

  /**
   * A uint32 field's value as protobuf-es reads it: a varint of up to 10
   * bytes of which the low 32 bits count; -1 when it runs past 10 bytes or
   * the buffer.
   */
  token(): number {
    const b = this.buf;
    const start = this.pos;
    const v = this.u32();
    if (v >= 0) return v;
    // Longer than a plain u32 varint: low 32 bits of the first five bytes, the rest skipped.
    if (b.length - start < 5) return -1;
    let p = start;
    let w = 0;
    for (let i = 0; i < 4; i++) {
      const c = b[p++];
      if ((c & 0x80) === 0) return -1; // a short varint u32() refused: only truncation does that
      w |= (c & 0x7f) << (7 * i);
    }
    let c = b[p++];
    w = (w | ((c & 0x0f) << 28)) >>> 0;
    for (let read = 5; (c & 0x80) !== 0; read++) {
      if (read === 10 || p >= b.length) return -1;
      c = b[p++];
    }
    this.pos = p;
    return w;
  }

  /** Skips one field's value of this wire type (varint, 64-bit, length-delimited, 32-bit). */
  skip(wire: number): boolean {
    const b = this.buf;
    switch (wire) {
      case 0: {
        // Any varint up to 10 bytes (int64, bool, enum...): protobuf-es validates the value.
        for (let i = 0; i < 10; i++) {
          if (this.pos >= b.length) return false;
          if ((b[this.pos++] & 0x80) === 0) return true;
        }
        return false;
      }
      case 1:
        this.pos += 8;
        return this.pos <= b.length;
      case 2: {
        const len = this.u32();
        if (len < 0 || len > b.length - this.pos) return false;
        this.pos += len;
        return true;
      }
      case 5:
        this.pos += 4;
        return this.pos <= b.length;
      default:
        return false; // groups and invalid wire types
    }
  }
}
