// The two cost-function policies. Both score with Dynamo's worker logit
// (costFunction.ts) and pick the lowest (or sample at temperature T):
// - `default`: Dynamo's built-in selector, that logit and nothing else;
// - `kv-router`: kv-router's routing as it was before policies existed (the
//   default): the same logit, or the ttft estimate with --router-cost ttft,
//   plus the engine-load terms the load feeds report.
import { pickScore, scoreCandidate } from "./costFunction.js";
import type { Selection, SelectionInput, WorkerSelectionPolicy } from "./workerSelection.js";

function reasonOf(temperature: number): string {
  return temperature > 0 ? "sampled by cost" : "lowest cost";
}

export const DYNAMO_DEFAULT_SELECTOR: WorkerSelectionPolicy = {
  name: "default",
  keepsSoftBinding: true,
  select({ candidates, params, temperature, random }: SelectionInput): Selection {
    const scores = candidates.map((c) => scoreCandidate(c, params));
    return { scores, chosen: pickScore(scores, temperature, random), reason: reasonOf(temperature) };
  },
};

export const KV_ROUTER_SELECTOR: WorkerSelectionPolicy = {
  name: "kv-router",
  keepsSoftBinding: true,
  select({ candidates, params, temperature, random }: SelectionInput): Selection {
    const scores = candidates.map((c) => {
      const score = scoreCandidate(c, params);
      if (c.ttftMs !== undefined) score.logit = c.ttftMs;
      score.logit += c.extraCost;
      return score;
    });
    return { scores, chosen: pickScore(scores, temperature, random), reason: reasonOf(temperature) };
  },
};
