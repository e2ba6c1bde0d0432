// kv-adaptive: Dynamo's cost in one unit (blocks), with the weight of the
// load terms set by how busy the fleet is right now, so nothing needs tuning
// per fleet. The signal is the prefill work queued per worker, counted in
// prompts of this request's size (scale-free: it reads the same on any model,
// hardware or prompt length):
// - queues short (under one such prompt per worker): decode blocks and active
//   requests barely weigh, and the request follows its cached prefix unless
//   the prefill queued there costs more than the hit saves;
// - queues of a prompt or more per worker: the load terms weigh fully and
//   the fleet balances.
// In between the weight rises linearly. The prefill side uses the weights of
// Dynamo's --agentic preset (a cached block earns twice its prefill, uncached
// prefill weighs four decode blocks), which the comparison found best on the
// families it was designed on (docs/simulation/policies.md); the preset's
// fixed 64 blocks per active request become 64 × the load weight.
// The router's own cost weights (flags, per-request overrides) do not apply:
// they belong to the cost policies (`default`, `kv-router`).
import { pickScore, scoreCandidate } from "./costFunction.js";
import { AGENTIC_WEIGHTS } from "./defaults.js";
import type { Selection, SelectionInput, WorkerSelectionPolicy } from "./workerSelection.js";

export const ADAPTIVE_POLICY_NAME = "kv-adaptive";

/** Weight of the load terms on an idle fleet: breaks ties between equally cached workers towards the lighter one. */
export const IDLE_LOAD_WEIGHT = 0.1;

/** Prefill tokens queued per worker, in prompts of `isl` tokens: the fleet's load as this request sees it. */
export function queuedPrompts(prefillTokens: readonly number[], isl: number): number {
  if (prefillTokens.length === 0) return 0;
  const mean = prefillTokens.reduce((a, b) => a + b, 0) / prefillTokens.length;
  return mean / Math.max(1, isl);
}

/** The load terms' weight: IDLE_LOAD_WEIGHT on an idle fleet, rising linearly to 1 at one prompt queued per worker. */
export function loadWeight(queued: number): number {
  return Math.min(1, Math.max(IDLE_LOAD_WEIGHT, queued));
}

export const ADAPTIVE_SELECTOR: WorkerSelectionPolicy = {
  name: ADAPTIVE_POLICY_NAME,
  keepsSoftBinding: true,
  select({ candidates, params, temperature, random }: SelectionInput): Selection {
    const queued = queuedPrompts(
      candidates.map((c) => c.load.prefillTokens),
      params.isl,
    );
    const weight = loadWeight(queued);
    const p = { ...params, overlapScoreCredit: AGENTIC_WEIGHTS.overlapScoreCredit, prefillLoadScale: AGENTIC_WEIGHTS.prefillLoadScale };
    const perRequest = AGENTIC_WEIGHTS.decodeActiveRequestWeight * weight;
    const scores = candidates.map((c) => {
      const s = scoreCandidate(c, p);
      s.logit = p.prefillLoadScale * s.prefillBlocks + weight * s.decodeBlocks + perRequest * c.load.requests + c.extraCost;
      return s;
    });
    const reason = `lowest cost at load weight ${weight.toFixed(2)} (${queued.toFixed(2)} prompts queued per worker)`;
    return { scores, chosen: pickScore(scores, temperature, random), reason };
  },
};
