// A routing decision as span attributes: the chosen worker, its overlap and
// its cost breakdown, so a trace shows why this worker was picked.
import type { Attributes } from "@opentelemetry/api";
import { workerKeyString } from "../protocols/events.js";
import type { RouteDecision } from "../router/types.js";
import { KV } from "./names.js";

export function decisionAttributes(decision: RouteDecision, queuedMs: number): Attributes {
  const { worker } = decision;
  const out: Attributes = {
    [KV.workerId]: worker.workerId.toString(),
    [KV.dpRank]: worker.dpRank,
    [KV.overlapBlocks]: decision.overlapBlocks,
    [KV.promptBlocks]: decision.promptBlocks,
    [KV.predictedBlocks]: decision.predictedBlocks,
    [KV.queueWaitMs]: queuedMs,
    [KV.candidates]: decision.scores.length,
  };
  // Scores are best first, but sampling (--router-temperature) or session affinity may pick another.
  const chosen = decision.scores.find((s) => s.worker.workerId === worker.workerId && s.worker.dpRank === worker.dpRank);
  if (chosen !== undefined) {
    out[KV.costLogit] = chosen.logit;
    out[KV.costPrefillBlocks] = chosen.prefillBlocks;
    out[KV.costDecodeBlocks] = chosen.decodeBlocks;
  }
  const tiers = decision.tierOverlaps.get(workerKeyString(worker));
  if (tiers !== undefined) {
    out[KV.hostOverlapBlocks] = tiers.host_pinned;
    out[KV.diskOverlapBlocks] = tiers.disk;
    out[KV.externalOverlapBlocks] = tiers.external;
  }
  return out;
}
