// Cache-greedy: the worker that caches the longest prefix of the prompt, the
// fewest active requests among equals, then at random. It never weighs load
// against hits: the simple rule that wins when queues are short and loses
// when a popular prefix piles every request on one worker.
import { pickScore, scoreCandidate } from "./costFunction.js";
import type { Selection, SelectionInput, WorkerSelectionPolicy } from "./workerSelection.js";

export const CACHE_GREEDY_SELECTOR: WorkerSelectionPolicy = {
  name: "cache-greedy",
  keepsSoftBinding: false,
  select({ candidates, params, random }: SelectionInput): Selection {
    const maxLoad = Math.max(...candidates.map((c) => c.load.requests));
    // Rank by overlap first, load second: one more block outweighs any load difference.
    const scores = candidates.map((c) => ({ ...scoreCandidate(c, params), logit: -c.overlapBlocks * (maxLoad + 1) + c.load.requests }));
    return { scores, chosen: pickScore(scores, 0, random), reason: "longest cached prefix, then fewest active requests" };
  },
};
