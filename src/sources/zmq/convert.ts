// Turns one decoded engine event into the router's IndexEvent, computing our
// local block hashes from the token ids the engine sent. Events the index
// must not see (another storage tier, another KV cache group, a block size
// that is not the router's) come back as a skip reason instead.
import { localBlockHash, localHashSeed } from "../../hashing/blockHash.js";
import type { IndexEvent, StoredBlockData, WorkerKey } from "../../indexer/types.js";
import type { EngineEvent } from "./decode.js";

export const SKIP_REASONS = ["block_size_mismatch", "token_count_mismatch", "other_medium", "other_group", "lora_id_without_name"] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

export type Converted = { event: IndexEvent } | { skip: SkipReason; detail: string };

/** The GPU tier; offload tiers (vLLM "CPU"/"STORAGE", SGLang "CPU_PINNED"/"DISK"/...) are not routable cache. */
function onGpu(medium: string | undefined): boolean {
  return medium === undefined || medium.toUpperCase() === "GPU";
}

export function toIndexEvent(e: EngineEvent, worker: WorkerKey, eventId: bigint, routerBlockSize: number): Converted {
  const header = { workerId: worker.workerId, dpRank: worker.dpRank, eventId };
  switch (e.type) {
    case "AllBlocksCleared":
      return { event: { ...header, kind: "cleared" } };
    case "BlockRemoved":
      if (!onGpu(e.medium)) return { skip: "other_medium", detail: `medium ${e.medium}` };
      if ((e.groupIdx ?? 0) !== 0) return { skip: "other_group", detail: `group_idx ${e.groupIdx}` };
      return { event: { ...header, kind: "removed", blockHashes: e.blockHashes } };
    case "BlockStored": {
      if (!onGpu(e.medium)) return { skip: "other_medium", detail: `medium ${e.medium}` };
      if ((e.groupIdx ?? 0) !== 0) return { skip: "other_group", detail: `group_idx ${e.groupIdx}` };
      if (e.blockSize !== routerBlockSize) {
        return {
          skip: "block_size_mismatch",
          detail: `the engine's block_size is ${e.blockSize} but kv-router runs with --block-size ${routerBlockSize}`,
        };
      }
      const n = e.blockHashes.length;
      if (e.tokenIds.length !== n * e.blockSize) {
        return {
          skip: "token_count_mismatch",
          detail: `${n} block hashes of ${e.blockSize} tokens need ${n * e.blockSize} token ids, got ${e.tokenIds.length}`,
        };
      }
      // Old vLLM sends only an adapter id; without the name the LoRA seed is
      // unknown and hashing as the base model would claim false matches.
      if (e.loraName === undefined && e.loraId !== undefined && e.loraId !== 0) {
        return { skip: "lora_id_without_name", detail: `lora_id ${e.loraId} without lora_name` };
      }
      const seed = localHashSeed(e.loraName ?? "");
      const all = Uint32Array.from(e.tokenIds); // one copy; blocks hash views of it
      const blocks: StoredBlockData[] = e.blockHashes.map((externalHash, i) => ({
        externalHash,
        localHash: localBlockHash(all.subarray(i * e.blockSize, (i + 1) * e.blockSize), seed, e.mmHashes[i]),
      }));
      return { event: { ...header, kind: "stored", parentHash: e.parentHash, blocks } };
    }
  }
}
