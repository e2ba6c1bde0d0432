// Builders for wire KV events, so tests read as "worker 1 stored these blocks".
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { KvEventSchema, StorageTier } from "../../gen/kvrouter/v1/router_pb.js";

export type EventInit = MessageInitShape<typeof KvEventSchema>;

/** A stored event: consecutive blocks of `blockSize` tokens from `tokenIds`, external hashes from `firstHash`. */
export function stored(
  workerId: number,
  eventId: number,
  tokenIds: number[],
  blockSize: number,
  firstHash: bigint,
  opts: { parent?: bigint; dpRank?: number; loraName?: string; cacheNamespace?: string; storageTier?: StorageTier } = {},
): EventInit {
  const blocks = [];
  for (let i = 0; i + blockSize <= tokenIds.length; i += blockSize) {
    blocks.push({ blockHash: firstHash + BigInt(i / blockSize), tokenIds: tokenIds.slice(i, i + blockSize) });
  }
  return {
    workerId: BigInt(workerId),
    dpRank: opts.dpRank ?? 0,
    eventId: BigInt(eventId),
    storageTier: opts.storageTier,
    data: {
      case: "stored",
      value: { parentBlockHash: opts.parent, blocks, loraName: opts.loraName ?? "", cacheNamespace: opts.cacheNamespace ?? "" },
    },
  };
}

export function removed(workerId: number, eventId: number, hashes: bigint[], dpRank = 0): EventInit {
  return {
    workerId: BigInt(workerId),
    dpRank,
    eventId: BigInt(eventId),
    data: { case: "removed", value: { blockHashes: hashes } },
  };
}

export function cleared(workerId: number, eventId: number, dpRank = 0): EventInit {
  return { workerId: BigInt(workerId), dpRank, eventId: BigInt(eventId), data: { case: "cleared", value: {} } };
}
