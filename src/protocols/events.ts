// The plain data every layer speaks: worker keys and the KV cache events a
// worker publishes (stored / removed / cleared), as the event planes decode
// them and the index applies them. Hashes are u64 as bigint.

/** A (worker_id, dp_rank) pair: the unit a request is routed to. */
export interface WorkerKey {
  workerId: bigint;
  dpRank: number;
}

export interface StoredBlockData {
  /** The engine's id for the block: used only to find parents and apply removals. */
  externalHash: bigint;
  /** Our local hash of the block's tokens. */
  localHash: bigint;
  /**
   * The block's sequence hash, as a dump states it. Honoured only when
   * restoring (and only when every block of the event has one): the entry is
   * placed there directly, without resolving its parent, so a block whose
   * parent was removed (or stored again later) is rebuilt exactly.
   */
  sequenceHash?: bigint;
}

/** Where a block lives on its worker, as Dynamo's RouterEvent.storage_tier names it. */
export type StorageTier = "device" | "host_pinned" | "disk" | "external";
export const LOWER_TIERS = ["host_pinned", "disk", "external"] as const;
export type LowerTier = (typeof LOWER_TIERS)[number];

interface EventHeader extends WorkerKey {
  eventId: bigint;
  /** Absent: "device" (the GPU), which the primary index holds; lower tiers have their own. */
  tier?: StorageTier;
}

/**
 * What a "cleared" wipes on its (worker_id, dp_rank): "all" (no residency_domain
 * given) and "worker" drop every tier; "cache_owner" drops only cache-owner
 * residency, which kv-router does not hold, so it leaves everything alone.
 */
export type ClearScope = "all" | "worker" | "cache_owner";

export type IndexEvent =
  | (EventHeader & { kind: "stored"; parentHash?: bigint; blocks: StoredBlockData[] })
  | (EventHeader & { kind: "removed"; blockHashes: bigint[] })
  | (EventHeader & { kind: "cleared"; scope?: ClearScope });

export function workerKeyString(w: WorkerKey): string {
  return `${w.workerId}:${w.dpRank}`;
}

export function parseWorkerKey(key: string): WorkerKey {
  const [id, rank] = key.split(":");
  return { workerId: BigInt(id), dpRank: Number(rank) };
}
