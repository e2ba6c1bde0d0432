// Entry point for stored blocks (an event's token ids -> local hash, LoRA seed) and
// the native reference every faster hasher in src/hashing/ is checked against.
// Block hashing, bit-exact with NVIDIA Dynamo's router:
// - local hash    = XXH3-64(seed) over the block's token ids as little-endian u32
// - sequence hash = local hash for block 0, else XXH3-64(1337) over
//                   parent sequence hash (u64 LE) ++ local hash (u64 LE)
// - LoRA adapters shift the local-hash seed by XXH3-64(seed 0) of the name,
//   cache namespaces (tenants) by XXH3-64(seed 1) of theirs; the sequence
//   chain stays seeded with 1337.
import { xxh3 } from "@node-rs/xxhash";

export const KV_HASH_SEED = 1337n;
const U64_MASK = (1n << 64n) - 1n;

/**
 * Seed for local block hashes of a prompt run with `loraName` (empty = base
 * model) in `cacheNamespace` (empty = none): Dynamo's compute_salt_hash
 * (lib/kv-hashing/src/salt.rs), 1337 + XXH3(lora, 0) + XXH3(namespace, 1), wrapping.
 */
export function localHashSeed(loraName = "", cacheNamespace = ""): bigint {
  let seed = KV_HASH_SEED;
  if (loraName !== "") seed += xxh3.xxh64(Buffer.from(loraName, "utf8"), 0n);
  if (cacheNamespace !== "") seed += xxh3.xxh64(Buffer.from(cacheNamespace, "utf8"), 1n);
  return seed & U64_MASK;
}

/** Little-endian u32 bytes of `tokens`, without copying when already a Uint32Array. */
function tokenBytes(tokens: ArrayLike<number>): Buffer {
  const u32 = tokens instanceof Uint32Array ? tokens : Uint32Array.from(tokens);
  // Node runs on little-endian hosts only (x86-64, arm64), so the view is already LE.
  return Buffer.from(u32.buffer, u32.byteOffset, u32.byteLength);
}

/** Local hash of one block of tokens, with optional multimodal object hashes appended. */
export function localBlockHash(
  tokens: ArrayLike<number>,
  seed: bigint = KV_HASH_SEED,
  mmHashes: readonly bigint[] = [],
): bigint {
  if (mmHashes.length === 0) return xxh3.xxh64(tokenBytes(tokens), seed);
  const sorted = [...mmHashes].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const buf = Buffer.alloc(tokens.length * 4 + sorted.length * 8);
  tokenBytes(tokens).copy(buf, 0);
  sorted.forEach((h, i) => buf.writeBigUInt64LE(h, tokens.length * 4 + i * 8));
  return xxh3.xxh64(buf, seed);
}

const pairBuf = Buffer.alloc(16);
/** Sequence hash of a block given its parent's sequence hash (undefined for block 0). */
export function sequenceHash(parent: bigint | undefined, local: bigint): bigint {
  if (parent === undefined) return local;
  pairBuf.writeBigUInt64LE(parent, 0);
  pairBuf.writeBigUInt64LE(local, 8);
  return xxh3.xxh64(pairBuf, KV_HASH_SEED);
}

export interface PromptHashes {
  /** Local hash per full block. */
  local: bigint[];
  /** Sequence hash per full block (identifies the block and its whole prefix). */
  sequence: bigint[];
}

/**
 * Hashes a prompt for workers running Eagle speculative decoding, as Dynamo
 * does (lib/kv-router/src/protocols.rs, for_each_block_hash_for_seq_with_seed
 * with is_eagle): block i hashes the window of block_size + 1 tokens from
 * i * block_size, so n blocks need n * block_size + 1 tokens.
 */
export function hashPromptEagle(tokens: ArrayLike<number>, blockSize: number, loraName = "", cacheNamespace = ""): PromptHashes {
  const u32 = tokens instanceof Uint32Array ? tokens : Uint32Array.from(tokens);
  const seed = localHashSeed(loraName, cacheNamespace);
  const blocks = u32.length === 0 ? 0 : Math.floor((u32.length - 1) / blockSize);
  const local = new Array<bigint>(blocks);
  const sequence = new Array<bigint>(blocks);
  let parent: bigint | undefined;
  for (let i = 0; i < blocks; i++) {
    local[i] = xxh3.xxh64(tokenBytes(u32.subarray(i * blockSize, (i + 1) * blockSize + 1)), seed);
    parent = sequence[i] = sequenceHash(parent, local[i]);
  }
  return { local, sequence };
}

/** Hashes every full block of a prompt; a trailing partial block is ignored. */
export function hashPrompt(tokens: ArrayLike<number>, blockSize: number, loraName = "", cacheNamespace = ""): PromptHashes {
  const u32 = tokens instanceof Uint32Array ? tokens : Uint32Array.from(tokens);
  const seed = localHashSeed(loraName, cacheNamespace);
  const blocks = Math.floor(u32.length / blockSize);
  const local = new Array<bigint>(blocks);
  const sequence = new Array<bigint>(blocks);
  let parent: bigint | undefined;
  for (let i = 0; i < blocks; i++) {
    local[i] = xxh3.xxh64(tokenBytes(u32.subarray(i * blockSize, (i + 1) * blockSize)), seed);
    parent = sequence[i] = sequenceHash(parent, local[i]);
  }
  return { local, sequence };
}
