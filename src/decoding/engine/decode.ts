// Decodes what vLLM's and SGLang's ZmqEventPublisher send: three frames
// [topic, seq (u64 big-endian), msgpack payload]; the payload is an event
// batch [ts, events, dp_rank] (or, in newer vLLM, the same fields as a map);
// each event is a tagged positional array ["BlockStored", ...] or (vLLM since
// mid-2026, SGLang's map encoding) a map whose "type" key holds the tag.
// Field-by-field details and the engines' differences: docs/vllm.md.
import { decode } from "@msgpack/msgpack";
import { MAX_NESTING_DEPTH, valueDepth } from "../../util/nesting.js";

export type EngineKind = "vllm" | "sglang";

export interface EngineStored {
  type: "BlockStored";
  blockHashes: bigint[];
  parentHash: bigint | undefined;
  /** Flattened as Dynamo does when the engine sent Eagle token pairs (then eagle is true). */
  tokenIds: number[];
  /** Token ids came as (token, next token) pairs: blocks hash block_size + 1 tokens. */
  eagle: boolean;
  blockSize: number;
  loraId: number | undefined;
  loraName: string | undefined;
  medium: string | undefined;
  /** Per block, the multimodal object hashes found in extra_keys (empty: none). */
  mmHashes: bigint[][];
  groupIdx: number | undefined;
  /** vLLM's KVCacheSpecKind of the block's KV cache group (hybrid models), e.g. "full_attention". */
  specKind: string | undefined;
}

export interface EngineRemoved {
  type: "BlockRemoved";
  blockHashes: bigint[];
  medium: string | undefined;
  groupIdx: number | undefined;
  specKind: string | undefined;
}

export interface EngineCleared {
  type: "AllBlocksCleared";
}

export type EngineEvent = EngineStored | EngineRemoved | EngineCleared;

/** An event that could not be decoded; the rest of its batch still applies. */
export interface BadEvent {
  type: "bad";
  tag: string;
  reason: string;
}

export interface EngineBatch {
  ts: number;
  /** The publisher's data-parallel rank, when the batch carries one. */
  dpRank: number | undefined;
  events: (EngineEvent | BadEvent)[];
}

export interface Frames {
  topic: string;
  seq: bigint;
  payload: Uint8Array;
}

export class DecodeError extends Error {}

const U64 = 64;
/** The replay socket's end-of-range marker: (-1) as 8 signed big-endian bytes. */
export const END_SEQ = (1n << 64n) - 1n;

/** Reads the seq frame: exactly 8 bytes, big-endian unsigned. */
export function decodeSeq(frame: Uint8Array): bigint {
  if (frame.length !== 8) throw new DecodeError(`seq frame has ${frame.length} bytes; 8 (u64 big-endian) expected`);
  return Buffer.from(frame.buffer, frame.byteOffset, 8).readBigUInt64BE(0);
}

export function encodeSeq(seq: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(U64, seq));
  return b;
}

/** Splits a live PUB message: [topic, seq, payload]. */
export function decodeFrames(frames: readonly Uint8Array[]): Frames {
  if (frames.length !== 3) throw new DecodeError(`message has ${frames.length} frames; 3 (topic, seq, payload) expected`);
  return { topic: Buffer.from(frames[0]).toString("utf8"), seq: decodeSeq(frames[1]), payload: frames[2] };
}

/**
 * A u64 block hash as it may arrive: a msgpack int (positive, or negative
 * when the producer used i64), a bigint (64-bit formats), or bytes (vLLM
 * without VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES; those become their last 8
 * bytes big-endian, exactly what vLLM's own int conversion keeps).
 */
export function toU64(v: unknown, what: string): bigint {
  if (typeof v === "bigint") return BigInt.asUintN(U64, v);
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new DecodeError(`${what} is ${v}; an integer hash expected`);
    return BigInt.asUintN(U64, BigInt(v));
  }
  if (v instanceof Uint8Array) {
    if (v.length === 0) throw new DecodeError(`${what} is empty bytes`);
    const tail = v.subarray(Math.max(0, v.length - 8));
    let x = 0n;
    for (const byte of tail) x = (x << 8n) | BigInt(byte);
    return x;
  }
  throw new DecodeError(`${what} is ${describe(v)}; an int or bytes hash expected`);
}

export function decodeBatch(payload: Uint8Array, engine: EngineKind): EngineBatch {
  let raw: unknown;
  try {
    raw = decode(payload, { useBigInt64: true });
  } catch (err) {
    throw new DecodeError(`payload is not MessagePack: ${(err as Error).message}`);
  }
  // The decoder is iterative; what walks the value afterwards may not be.
  if (valueDepth(raw) > MAX_NESTING_DEPTH) throw new DecodeError(`payload is nested deeper than ${MAX_NESTING_DEPTH} levels`);
  let ts: unknown;
  let events: unknown;
  let dpRank: unknown;
  if (Array.isArray(raw)) {
    if (raw.length < 2) throw new DecodeError(`batch array has ${raw.length} items; [ts, events, dp_rank] expected`);
    [ts, events, dpRank] = raw;
  } else if (isMap(raw)) {
    ts = raw.ts;
    events = raw.events;
    dpRank = raw.data_parallel_rank ?? raw.attn_dp_rank ?? raw.dp_rank;
  } else {
    throw new DecodeError(`batch is ${describe(raw)}; an array [ts, events, dp_rank] expected`);
  }
  if (typeof ts !== "number" && typeof ts !== "bigint") throw new DecodeError(`batch ts is ${describe(ts)}; a number expected`);
  if (!Array.isArray(events)) throw new DecodeError(`batch events is ${describe(events)}; an array expected`);
  return {
    ts: Number(ts),
    dpRank: optionalInt(dpRank, "batch dp_rank", 0, 0xffff_ffff),
    events: events.map((e) => decodeEventSafe(e, engine)),
  };
}

function decodeEventSafe(raw: unknown, engine: EngineKind): EngineEvent | BadEvent {
  const fields = Array.isArray(raw) ? positional(raw, engine) : isMap(raw) ? raw : undefined;
  const tag = fields && typeof fields.type === "string" ? fields.type : "unknown";
  try {
    if (fields === undefined) throw new DecodeError(`event is ${describe(raw)}; a tagged array or map expected`);
    return decodeEvent(tag, fields);
  } catch (err) {
    if (!(err instanceof DecodeError)) throw err;
    return { type: "bad", tag, reason: err.message };
  }
}

// Positional field order after the tag. vLLM and SGLang agree up to medium;
// after it vLLM has lora_name, extra_keys, group_idx, ... while SGLang has
// cache_salt (which we leave out of the hash, see docs/vllm.md).
export const STORED_FIELDS: Record<EngineKind, readonly string[]> = {
  vllm: [
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
    "extra_keys",
    "group_idx",
    "kv_cache_spec_kind",
  ],
  sglang: ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "cache_salt"],
};
export const REMOVED_FIELDS: Record<EngineKind, readonly string[]> = {
  vllm: ["block_hashes", "medium", "group_idx"],
  sglang: ["block_hashes", "medium"],
};

/** Names the items of a positional event; trailing fields may be absent, extra ones are ignored. */
function positional(raw: unknown[], engine: EngineKind): Record<string, unknown> {
  const [tag, ...rest] = raw;
  const names = tag === "BlockStored" ? STORED_FIELDS[engine] : tag === "BlockRemoved" ? REMOVED_FIELDS[engine] : [];
  const fields: Record<string, unknown> = { type: tag };
  names.forEach((name, i) => {
    if (i < rest.length) fields[name] = rest[i];
  });
  return fields;
}

function decodeEvent(tag: string, f: Record<string, unknown>): EngineEvent {
  switch (tag) {
    case "BlockStored": {
      const blockHashes = hashList(f.block_hashes, "block_hashes");
      if (blockHashes.length === 0) throw new DecodeError("block_hashes is empty");
      const blockSize = optionalInt(f.block_size, "block_size", 1, 1 << 20);
      if (blockSize === undefined) throw new DecodeError("block_size is missing");
      const { tokenIds, eagle } = tokenList(f.token_ids);
      return {
        type: "BlockStored",
        blockHashes,
        parentHash: f.parent_block_hash == null ? undefined : toU64(f.parent_block_hash, "parent_block_hash"),
        tokenIds,
        eagle,
        blockSize,
        loraId: optionalInt(f.lora_id, "lora_id", 0, Number.MAX_SAFE_INTEGER),
        loraName: optionalString(f.lora_name, "lora_name"),
        medium: optionalString(f.medium, "medium"),
        mmHashes: mmHashesPerBlock(f.extra_keys, blockHashes.length),
        groupIdx: optionalInt(f.group_idx, "group_idx", 0, 0xffff_ffff),
        specKind: optionalString(f.kv_cache_spec_kind, "kv_cache_spec_kind"),
      };
    }
    case "BlockRemoved":
      return {
        type: "BlockRemoved",
        blockHashes: hashList(f.block_hashes, "block_hashes"),
        medium: optionalString(f.medium, "medium"),
        groupIdx: optionalInt(f.group_idx, "group_idx", 0, 0xffff_ffff),
        specKind: optionalString(f.kv_cache_spec_kind, "kv_cache_spec_kind"),
      };
    case "AllBlocksCleared":
      return { type: "AllBlocksCleared" };
    default:
      throw new DecodeError(`unknown event type ${typeof tag === "string" ? JSON.stringify(tag) : describe(tag)}`);
  }
}

function hashList(v: unknown, what: string): bigint[] {
  if (!Array.isArray(v)) throw new DecodeError(`${what} is ${describe(v)}; an array expected`);
  return v.map((h, i) => toU64(h, `${what}[${i}]`));
}

function isTokenId(t: unknown): t is number {
  return typeof t === "number" && Number.isInteger(t) && t >= 0 && t <= 0xffff_ffff;
}

/**
 * Token ids, or Eagle's (token, next token) pairs flattened as Dynamo does
 * (lib/llm/src/kv_router/publisher: normalize_token_ids): every pair's first
 * token, then the last pair's second, so n pairs give n + 1 tokens.
 */
function tokenList(v: unknown): { tokenIds: number[]; eagle: boolean } {
  if (!Array.isArray(v)) throw new DecodeError(`token_ids is ${describe(v)}; an array expected`);
  if (v.length > 0 && Array.isArray(v[0])) {
    const flat: number[] = [];
    for (let i = 0; i < v.length; i++) {
      const pair = v[i];
      if (!Array.isArray(pair) || pair.length !== 2 || !isTokenId(pair[0]) || !isTokenId(pair[1])) {
        throw new DecodeError(`token_ids[${i}] is ${describe(pair)}; a pair of u32 token ids expected (Eagle)`);
      }
      flat.push(pair[0]);
    }
    flat.push((v[v.length - 1] as number[])[1]);
    return { tokenIds: flat, eagle: true };
  }
  for (let i = 0; i < v.length; i++) {
    if (!isTokenId(v[i])) throw new DecodeError(`token_ids[${i}] is ${describe(v[i])}; a u32 token id expected`);
  }
  return { tokenIds: v as number[], eagle: false };
}

/**
 * Multimodal object hashes from vLLM's per-block extra_keys. extra_keys mixes
 * MM identifiers (64-hex-digit digests, alone or as [digest, offset] pairs)
 * with LoRA names, cache salts and prompt-embedding bytes; only the digests
 * count, each reduced to its first 16 hex digits as a u64 (Dynamo's rule).
 */
function mmHashesPerBlock(v: unknown, blocks: number): bigint[][] {
  const none = Array.from({ length: blocks }, () => [] as bigint[]);
  if (v == null) return none;
  if (!Array.isArray(v)) throw new DecodeError(`extra_keys is ${describe(v)}; an array (one entry per block) expected`);
  return none.map((_, i) => {
    const keys = v[i];
    if (!Array.isArray(keys)) return [];
    const found: bigint[] = [];
    for (const key of keys) {
      const digest = Array.isArray(key) ? key[0] : key;
      if (typeof digest === "string" && /^[0-9a-fA-F]{64}$/.test(digest)) found.push(BigInt(`0x${digest.slice(0, 16)}`));
    }
    return found;
  });
}

function optionalInt(v: unknown, what: string, min: number, max: number): number | undefined {
  if (v == null) return undefined;
  const n = typeof v === "bigint" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    throw new DecodeError(`${what} is ${describe(v)}; an integer in [${min}, ${max}] expected`);
  }
  return n;
}

function optionalString(v: unknown, what: string): string | undefined {
  if (v == null) return undefined;
  if (typeof v !== "string") throw new DecodeError(`${what} is ${describe(v)}; a string expected`);
  return v;
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return "missing";
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (typeof v === "object") return "a map";
  const s = String(v);
  return `${typeof v} ${s.length > 40 ? `${s.slice(0, 40)}…` : s}`;
}
