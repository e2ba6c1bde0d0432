// The hot path of FindBestWorker's request over gRPC: a 4,096-token prompt is
// ~12 KB of packed varints, and protobuf-es builds a JS array of them that the
// service then copies into a Uint32Array (together ~130 µs, more than the rest
// of the call). This decoder reads token_ids (field 1) straight into a
// Uint32Array and hands every other field, byte for byte and in order, to
// protobuf-es: the message it returns is protobuf-es's own, minus token_ids.
//
// Anything it is not sure of — a wrong wire type, a group, truncation, an
// irregular varint, a field number 0 (protocols/wireReader.ts) — returns undefined and the
// caller decodes the whole message with protobuf-es as before, so results and
// error messages are protobuf-es's by construction
// (test/promptDecoder.property.test.ts compares the two).
import { create, fromBinary } from "@bufbuild/protobuf";
import { type FindBestWorkerRequest, FindBestWorkerRequestSchema } from "../../gen/kvrouter/v1/router_pb.js";
import { MalformedRequest } from "../protocols/grpcGlue.js";
import { WireReader } from "../protocols/wireReader.js";
import { toTokenArray } from "./convert.js";
import { countField } from "../protocols/wireCount.js";

const TOKEN_IDS = 1;

const ALLOWED_WORKERS = 4;
const PREFILL_WORKERS = 12;

/** The refusal of an allowed_workers (or prefill_workers) list longer than the router accepts. */
export function allowedWorkersProblem(entries: number, most: number, field = "allowed_workers"): string {
  return `${field} has ${entries} entries; at most ${most} (--max-worker-ranks) are accepted`;
}

/**
 * FindBestWorker's request decoder for a router that accepts at most `maxAllowedWorkers`
 * allowed_workers. The list is counted on the wire first: a longer one is refused
 * (INVALID_ARGUMENT) before protobuf-es builds an object and a BigInt for each entry
 * (2 M entries took seconds to decode, only to be refused).
 */
export function findBestWorkerDecoder(maxAllowedWorkers: number): (buf: Uint8Array) => FindBestWorkerRequest | MalformedRequest | undefined {
  return (buf) => {
    const entries = countField(buf, ALLOWED_WORKERS);
    if (entries > maxAllowedWorkers) return new MalformedRequest(allowedWorkersProblem(entries, maxAllowedWorkers));
    const prefill = countField(buf, PREFILL_WORKERS);
    if (prefill > maxAllowedWorkers) return new MalformedRequest(allowedWorkersProblem(prefill, maxAllowedWorkers, "prefill_workers"));
    return decodeFindBestWorkerFast(buf);
  };
}

/** Token ids the fast path decoded, by the message it returned (whose own tokenIds is left empty). */
const decodedTokens = new WeakMap<FindBestWorkerRequest, Uint32Array>();

/** A request's prompt: the fast path's array, or the message's own token_ids. */
export function promptTokens(req: FindBestWorkerRequest): Uint32Array {
  return decodedTokens.get(req) ?? toTokenArray(req.tokenIds);
}

/** Reused: the decoder runs to completion before the next call. */
const r = new WireReader();

/** Decodes a FindBestWorkerRequest's wire bytes, or undefined to leave them to protobuf-es. */
export function decodeFindBestWorkerFast(buf: Uint8Array): FindBestWorkerRequest | undefined {
  try {
    return decode(buf);
  } finally {
    r.release();
  }
}

function decode(buf: Uint8Array): FindBestWorkerRequest | undefined {
  r.reset(buf);
  const end = buf.length;
  let tokens: Uint32Array<ArrayBuffer> = new Uint32Array(0);
  let count = 0;
  /** Byte ranges of the other fields, as [start, end) pairs. */
  const rest: number[] = [];
  let restBytes = 0;
  while (r.pos < end) {
    const start = r.pos;
    const tag = r.tag(end);
    if (tag < 0) return undefined;
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === TOKEN_IDS) {
      if (wire === 2) {
        const len = r.length(end);
        if (len < 0) return undefined;
        // Each id takes at least one byte: len bounds the count.
        if (tokens.length - count < len) tokens = grown(tokens, count + len);
        count = r.packedU32(r.pos + len, tokens, count);
        if (count < 0) return undefined;
      } else if (wire === 0) {
        if (!r.varint(end)) return undefined;
        if (count === tokens.length) tokens = grown(tokens, Math.max(16, count * 2));
        tokens[count++] = r.lo;
      } else return undefined;
      continue;
    }
    if (!r.skip(wire, end)) return undefined;
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

function grown(a: Uint32Array, atLeast: number): Uint32Array<ArrayBuffer> {
  const b = new Uint32Array(Math.max(atLeast, a.length * 2));
  b.set(a);
  return b;
}
