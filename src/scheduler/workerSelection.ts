// Worker selection as interchangeable policies (issue 22): the router gathers
// each candidate's overlaps and load, a policy scores them and picks one.
// Policies are pure: no router state, randomness only through `random`, so
// the same input always explains the same choice.
import type { Candidate, CostParams, Score } from "./costFunction.js";
import type { EngineBatch } from "./engineBatch.js";

/** A candidate as a policy sees it: the cost function's inputs plus kv-router's own terms. */
export interface PolicyCandidate extends Candidate {
  /** kv-router's engine-load terms (--engine-queue-weight, --engine-kv-usage-weight), in blocks. */
  extraCost: number;
  /** Estimated ms to first token, set when the router runs the ttft cost (--router-cost ttft). */
  ttftMs?: number;
  /** What the worker reported at registration: its max_num_batched_tokens and KV cache size in blocks (0 or absent: not reported). */
  stepTokens?: number;
  kvBlocks?: number;
  /** Ms the worker's oldest prompt not yet reported prefilled has waited since it was routed (0: none). */
  prefillWaitMs?: number;
  /** The engine's batch: its slots (reported at registration), running and waiting (reported by the engine, else projected). */
  batch?: EngineBatch;
  /** The fleet's measured prefill time per prompt token (ms; 0 = not yet measured). */
  prefillMsPerToken?: number;
  /** The fleet's measured time from first token to Free (ms; 0 = not yet measured): how long a sequence holds its batch slot. */
  decodeMs?: number;
}

export interface SelectionInput {
  /** Eligible candidates, at least one. */
  candidates: readonly PolicyCandidate[];
  /** The cost function's weights for this request (per-request overrides applied). */
  params: CostParams;
  /** Softmax temperature of cost-based policies (0 = lowest cost, ties at random). */
  temperature: number;
  /** The prompt's blocks, ceil(isl / block size): Dynamo's request_blocks. */
  requestBlocks: number;
  random: () => number;
}

export interface Selection {
  /** Every candidate's score, in the candidates' order; `logit` is the policy's cost (lower wins). */
  scores: Score[];
  chosen: Score;
  /** Which of the policy's rules decided, for explain and logs. */
  reason: string;
}

export interface WorkerSelectionPolicy {
  /** The name requests and flags select it by. */
  readonly name: string;
  /**
   * Dynamo's soft session affinity: its built-in selector keeps a session on its
   * bound worker while that worker is eligible, other policies choose freely.
   */
  readonly keepsSoftBinding: boolean;
  /**
   * True when the policy sets its own cost weights and ignores the router's
   * (flags and per-request router_config_override): a request that overrides
   * a weight is then routed by the `kv-router` cost policy, so it keeps Dynamo's meaning.
   */
  readonly ownWeights?: boolean;
  select(input: SelectionInput): Selection;
}
