// Turns one decoded engine event into the router's IndexEvent, computing our
// local block hashes from the token ids the engine sent, on the storage tier
// its medium names (Dynamo's StorageTier::from_kv_medium). Events the index
// must not see (an unknown medium, a KV cache group that is not the main
// attention one, a block size that is not the router's) come back as a skip
// reason instead.
import { localBlockHash, localHashSeed } from "../../hashing/blockHash.js";
import type { IndexEvent, StorageTier, StoredBlockData, WorkerKey } from "../../protocols/events.js";
import type { EngineEvent } from "./decode.js";

export const SKIP_REASONS = [
  "block_size_mismatch",
  "token_count_mismatch",
  "unknown_medium",
  "other_group",
  "unknown_spec_kind",
  "lora_id_without_name",
] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

/** Skips that are expected (a hybrid model's other groups, old vLLM's bare LoRA ids): counted, never logged. */
export function isQuietSkip(reason: SkipReason): boolean {
  return reason === "other_group" || reason === "lora_id_without_name";
}

export type Converted = { event: IndexEvent } | { skip: SkipReason; detail: string };

/** Dynamo's StorageTier::from_kv_medium (lib/kv-router/src/protocols.rs); no medium = the GPU. */
export const TIER_OF_MEDIUM: ReadonlyMap<string, StorageTier> = new Map<string, StorageTier>([
  ["GPU", "device"],
  ["DEVICE", "device"],
  ["CPU", "host_pinned"],
  ["CPU_PINNED", "host_pinned"],
  ["CPU_TIER1", "host_pinned"],
  ["CPU_TIER2", "disk"],
  ["DISK", "disk"],
  ["NVME", "disk"],
  ["STORAGE", "disk"],
  ["EXTERNAL", "external"],
  ["NETWORK", "external"],
  ["REMOTE", "external"],
  ["SHARED", "external"],
]);

/** KV cache groups whose blocks hold the whole prefix (Dynamo's is_main_attention). */
export const MAIN_ATTENTION: ReadonlySet<string> = new Set(["full_attention", "mla_attention", "sink_full_attention"]);
export const OTHER_SPEC_KINDS: ReadonlySet<string> = new Set([
  "sliding_window",
  "sliding_window_mla",
  "mamba",
  "chunked_local_attention",
  "encoder_only_attention",
  "cross_attention",
  "unknown",
]);

type Filtered = { tier: StorageTier } | { skip: SkipReason; detail: string };

/**
 * Where the blocks live, or why they are left out. With kv_cache_spec_kind,
 * only the main attention kinds count (whatever the group index); without
 * it, only group 0 (Dynamo's KvCacheEventFilter).
 */
function placeOf(e: { medium: string | undefined; groupIdx: number | undefined; specKind: string | undefined }): Filtered {
  const tier = e.medium === undefined ? "device" : TIER_OF_MEDIUM.get(e.medium);
  if (tier === undefined) return { skip: "unknown_medium", detail: `medium ${JSON.stringify(e.medium)}` };
  if (e.specKind !== undefined) {
    if (MAIN_ATTENTION.has(e.specKind)) return { tier };
    if (OTHER_SPEC_KINDS.has(e.specKind)) return { skip: "other_group", detail: `kv_cache_spec_kind ${e.specKind}` };
    return { skip: "unknown_spec_kind", detail: `kv_cache_spec_kind ${JSON.stringify(e.specKind)}` };
  }
  if ((e.groupIdx ?? 0) !== 0) return { skip: "other_group", detail: `group_idx ${e.groupIdx}` };
  return { tier };
}

/** The tier field of an IndexEvent: absent for the GPU. */
function tierOf(tier: StorageTier): { tier?: StorageTier } {
  return tier === "device" ? {} : { tier };
}

export function toIndexEvent(e: EngineEvent, worker: WorkerKey, eventId: bigint, routerBlockSize: number): Converted {
  const header = { workerId: worker.workerId, dpRank: worker.dpRank, eventId };
  switch (e.type) {
    case "AllBlocksCleared":
      return { event: { ...header, kind: "cleared" } };
    case "BlockRemoved": {
      const place = placeOf(e);
      if ("skip" in place) return place;
      return { event: { ...header, ...tierOf(place.tier), kind: "removed", blockHashes: e.blockHashes } };
    }
    case "BlockStored": {
      const place = placeOf(e);
      if ("skip" in place) return place;
      if (e.blockSize !== routerBlockSize) {
        return {
          skip: "block_size_mismatch",
          detail: `the engine's block_size is ${e.blockSize} but kv-router runs with --block-size ${routerBlockSize}`,
        };
      }
      const n = e.blockHashes.length;
      // Eagle: block i hashes tokens [i*B, i*B + B + 1), so n blocks need n*B + 1 tokens.
      const need = n * e.blockSize + (e.eagle ? 1 : 0);
      if (e.tokenIds.length !== need) {
        return {
          skip: "token_count_mismatch",
          detail: `${n} block hashes of ${e.blockSize} tokens need ${need} token ids${e.eagle ? " (Eagle pairs flattened)" : ""}, got ${e.tokenIds.length}`,
        };
      }
      // Old vLLM sends only an adapter id; without the name the LoRA seed is
      // unknown and hashing as the base model would claim false matches.
      if (e.loraName === undefined && e.loraId !== undefined && e.loraId !== 0) {
        return { skip: "lora_id_without_name", detail: `lora_id ${e.loraId} without lora_name` };
      }
      const seed = localHashSeed(e.loraName ?? "");
      const all = Uint32Array.from(e.tokenIds); // one copy; blocks hash views of it
      const window = e.blockSize + (e.eagle ? 1 : 0);
      const blocks: StoredBlockData[] = e.blockHashes.map((externalHash, i) => ({
        externalHash,
        localHash: localBlockHash(all.subarray(i * e.blockSize, i * e.blockSize + window), seed, e.mmHashes[i]),
      }));
      return { event: { ...header, ...tierOf(place.tier), kind: "stored", parentHash: e.parentHash, blocks } };
    }
  }
}
