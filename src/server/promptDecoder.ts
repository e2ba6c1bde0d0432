// The hot path of FindBestWorker's request over gRPC: a 4,096-token prompt is
// ~12 KB of packed varints, and protobuf-es builds a JS array of them that the
// service then copies into a Uint32Array (together ~130 µs, more than the rest
// of the call). This decoder reads token_ids (field 1) straight into a
// Uint32Array and hands every other field, byte for byte and in order, to
// protobuf-es: the message it returns is protobuf-es's own, minus token_ids.
//
// With a block size (a router without --eagle), the token ids are decoded
// straight into a WebAssembly hasher's memory (packed ones by the module
// itself, about twice as fast as the JavaScript loop) and hashed there, once the other
// fields (the LoRA name and cache namespace, which pick the seed) are known:
// the request then carries a HashedPrompt (its token count and sequence hashes
// as u32 words) and no token array. Nothing else reads the tokens of a gRPC
// request, and the hashes are copied out, so a request the admission queue
// holds keeps them while later requests reuse the hasher's memory.
//
// Anything it is not sure of — a wrong wire type, a group, truncation, an
// irregular varint, a field number 0 (protocols/wireReader.ts) — returns undefined and the
// caller decodes the whole message with protobuf-es as before, so results and
// error messages are protobuf-es's by construction
// (test/promptDecoder.property.test.ts compares the two).
import { grown } from "../util/typedArrays.js";
import { create, fromBinary } from "@bufbuild/protobuf";
import { type FindBestWorkerRequest, FindBestWorkerRequestSchema } from "../../gen/kvrouter/v1/router_pb.js";
import { MalformedRequest } from "../protocols/grpcGlue.js";
import { WireReader } from "../protocols/wireReader.js";
import { toTokenArray } from "./convert.js";
import { countField } from "../protocols/wireCount.js";
import { localHashSeed } from "../hashing/blockHash.js";
import { createPromptSpace } from "../hashing/prompt.js";
import { HashedPrompt, SequenceHashes } from "../hashing/sequenceHashes.js";
import type { WasmHasher } from "../hashing/wasmXxh3.js";

const TOKEN_IDS = 1;

const ALLOWED_WORKERS = 4;
const PREFILL_WORKERS = 12;

/** The refusal of an allowed_workers (or prefill_workers) list longer than the router accepts. */
export function allowedWorkersProblem(entries: number, most: number, field = "allowed_workers"): string {
  return `${field} has ${entries} entries; at most ${most} (--max-worker-ranks) are accepted`;
}

/** Where a decoder hashes prompts: a hasher of its own, the router's block size, and --max-tokens. */
export interface PromptSpace {
  hasher: WasmHasher;
  blockSize: number;
  /**
   * Token ids the space takes, 5 per token the router accepts (a u32 varint has
   * at most 5 bytes): every acceptable prompt fits, and the hasher's memory stays
   * within 20 bytes per --max-tokens token however large a message is. A larger
   * prompt goes to protobuf-es, and the service refuses it.
   */
  maxTokens: number;
}

/** A PromptSpace for a router hashing blocks of `blockSize` (undefined where WebAssembly cannot load). */
export function promptSpace(blockSize: number, maxTokens: number): PromptSpace | undefined {
  const hasher = createPromptSpace();
  return hasher && { hasher, blockSize, maxTokens: 5 * maxTokens };
}

/**
 * FindBestWorker's request decoder for a router that accepts at most `maxAllowedWorkers`
 * allowed_workers. The list is counted on the wire first: a longer one is refused
 * (INVALID_ARGUMENT) before protobuf-es builds an object and a BigInt for each entry
 * (2 M entries took seconds to decode, only to be refused). With `hashing` (give it
 * unless the router hashes Eagle windows) the prompt is hashed as it is decoded.
 */
export function findBestWorkerDecoder(
  maxAllowedWorkers: number,
  hashing?: { blockSize: number; maxTokens: number },
): (buf: Uint8Array) => FindBestWorkerRequest | MalformedRequest | undefined {
  const space = hashing === undefined ? undefined : promptSpace(hashing.blockSize, hashing.maxTokens);
  return (buf) => {
    const entries = countField(buf, ALLOWED_WORKERS);
    if (entries > maxAllowedWorkers) return new MalformedRequest(allowedWorkersProblem(entries, maxAllowedWorkers));
    const prefill = countField(buf, PREFILL_WORKERS);
    if (prefill > maxAllowedWorkers) return new MalformedRequest(allowedWorkersProblem(prefill, maxAllowedWorkers, "prefill_workers"));
    return decodeFindBestWorkerFast(buf, space);
  };
}

/** The prompt the fast path decoded, by the message it returned (whose own tokenIds is left empty). */
const decodedPrompts = new WeakMap<FindBestWorkerRequest, Uint32Array | HashedPrompt>();

/** A request's prompt: what the fast path decoded (token ids, or the hashed prompt), or the message's own token_ids. */
export function promptTokens(req: FindBestWorkerRequest): Uint32Array | HashedPrompt {
  return decodedPrompts.get(req) ?? toTokenArray(req.tokenIds);
}

/** Reused: the decoder runs to completion before the next call. */
const r = new WireReader();

/**
 * Decodes a FindBestWorkerRequest's wire bytes, or undefined to leave them to protobuf-es.
 * With a `space`, the prompt is decoded into its hasher's memory and hashed (a HashedPrompt).
 */
export function decodeFindBestWorkerFast(buf: Uint8Array, space?: PromptSpace): FindBestWorkerRequest | undefined {
  try {
    return decode(buf, space);
  } finally {
    r.release();
  }
}

function decode(buf: Uint8Array, space: PromptSpace | undefined): FindBestWorkerRequest | undefined {
  r.reset(buf);
  const end = buf.length;
  // Each token id takes at least one byte: the message's length bounds the count, so the space never grows.
  let tokens: Uint32Array = space ? space.hasher.tokenSpace(Math.min(end, space.maxTokens), space.blockSize) : new Uint32Array(0);
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
        if (space) {
          // Decoded in WebAssembly, straight into the space (the same reading rules; -1 where it may not fit).
          count = space.hasher.packedTokens(buf, r.pos, r.pos + len, count);
          if (count < 0) return undefined;
          r.pos += len;
          continue;
        }
        if (tokens.length - count < len) tokens = grown(tokens, Math.max(count + len, tokens.length * 2));
        count = r.packedU32(r.pos + len, tokens, count);
        if (count < 0) return undefined;
      } else if (wire === 0) {
        if (!r.varint(end)) return undefined;
        if (count === tokens.length) {
          if (space) return undefined;
          tokens = grown(tokens, Math.max(16, count * 2, tokens.length * 2));
        }
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
  if (space === undefined) decodedPrompts.set(msg, tokens.subarray(0, count));
  else {
    const { hasher, blockSize } = space;
    const words = hasher.sequenceWordsInPlace(count, blockSize, localHashSeed(msg.loraName, msg.cacheNamespace));
    decodedPrompts.set(msg, new HashedPrompt(count, blockSize, msg.loraName, msg.cacheNamespace, new SequenceHashes(words)));
  }
  return msg;
}

