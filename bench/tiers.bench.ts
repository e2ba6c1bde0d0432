// Lower tiers on the FindBestWorker path: the GPU index lookup alone (the
// baseline, measured in the same run) against the lookup plus the walk down
// the host / disk tiers (src/indexer/lowerTiers.ts), on the same workload
// with every stored chain also offloaded to one lower tier.
import { hashPromptFast } from "../src/hashing/prompt.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { LowerTiers } from "../src/indexer/lowerTiers.js";
import type { IndexEvent, LowerTier } from "../src/protocols/events.js";
import { type Latency, latency, usSince } from "./stats.js";
import { BLOCK, type Workload } from "./workload.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";

export interface TierBenchResult {
  /** GPU index lookup only (prompt hashed first in both). */
  deviceOnly: Latency;
  /** The same lookup followed by the lower-tier walk. */
  withLowerTiers: Latency;
  lowerTierEntries: number;
  /** Lower-tier stored blocks applied per second. */
  lowerTierIngestBlocksPerSec: number;
}

export async function runTierBench(w: Workload, queries: number): Promise<TierBenchResult> {
  const index = CompactIndex.local({ maxBlocks: w.storedBlocks });
  for (let i = 0; i < w.events.length; i += 16) index.applyBatch(toEventBatch(w.events.slice(i, i + 16)));
  const tiers = new LowerTiers();
  const order: LowerTier[] = ["host_pinned", "disk"];
  let blocks = 0;
  const t0 = process.hrtime.bigint();
  for (const e of w.events) {
    if (e.kind !== "stored") continue;
    const tier = order[Number(e.workerId % 2n)];
    tiers.apply({ ...(e as IndexEvent & { kind: "stored" }), tier });
    blocks += e.blocks.length;
  }
  const ingestUs = usSince(t0);
  const prompts = w.prompts(8192, queries);
  const device: number[] = [];
  const walked: number[] = [];
  // One unrecorded pass first, so both variants are measured warm (JIT compiled).
  for (const p of prompts) {
    const seqs = hashPromptFast(p, BLOCK).sequence;
    tiers.continueMatches(seqs, index.findMatches(seqs));
  }
  for (const p of prompts) {
    const seqs = hashPromptFast(p, BLOCK).sequence;
    let t = process.hrtime.bigint();
    index.findMatches(seqs);
    device.push(usSince(t));
    t = process.hrtime.bigint();
    tiers.continueMatches(seqs, index.findMatches(seqs));
    walked.push(usSince(t));
  }
  await index.close();
  return {
    deviceOnly: latency(device),
    withLowerTiers: latency(walked),
    lowerTierEntries: tiers.size(),
    lowerTierIngestBlocksPerSec: blocks / (ingestUs / 1e6),
  };
}
