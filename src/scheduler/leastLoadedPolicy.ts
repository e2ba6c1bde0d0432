// Fewest active requests (the ones the router tracks), ties at random: Dynamo's
// `--router-mode least-loaded` rule, as a policy of the KV router, so it keeps
// the router's load accounting, queue and session affinity.
import { pickScore, scoreCandidate } from "./costFunction.js";
import type { Selection, SelectionInput, WorkerSelectionPolicy } from "./workerSelection.js";

export const LEAST_LOADED_SELECTOR: WorkerSelectionPolicy = {
  name: "least-loaded",
  keepsSoftBinding: false,
  select({ candidates, params, random }: SelectionInput): Selection {
    // The cost terms stay in the scores for explain; the logit is the load.
    const scores = candidates.map((c) => ({ ...scoreCandidate(c, params), logit: c.load.requests }));
    return { scores, chosen: pickScore(scores, 0, random), reason: "fewest active requests" };
  },
};
