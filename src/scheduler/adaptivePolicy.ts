// kv-adaptive: Dynamo's cost in one unit (blocks), with the weight of the
// load terms set by how busy the fleet and each worker are right now, read
// against yardsticks every engine and request carry, so nothing needs tuning
// per fleet:
// - the fleet's prefill queue: mean queued prefill tokens per worker, counted
//   both in engine steps (the worker's max_num_batched_tokens, reported at
//   registration) and in prompts of this request's size, whichever is more.
//   Past one step a new prompt no longer starts in the next step; past one
//   prompt the wait at least doubles its own prefill. Either way the queue
//   is long, and the load terms weigh fully (weight 1); below, the weight
//   falls linearly to 0.1 (idle: load only breaks ties);
// - the wait the fleet's prompts actually meet (third round): per worker, how
//   long its oldest prompt not yet reported prefilled (MarkPrefillCompleted or
//   Free) has been waiting since it was routed; the fleet's median, in seconds
//   of MEASURED_WAIT_FULL_MS, is a floor on the weight. It sees what a token
//   count cannot: engines whose batch or KV is full, slow steps under long
//   decode contexts, any engine whose speed the router does not know;
// - each worker's KV pressure: the share of its KV cache (total_kv_blocks)
//   its requests in flight would hold with this one. A worker short of KV
//   stalls the prompts sent to it until a decode finishes, however short its
//   prefill queue, so its load terms weigh at least that share.
// - local jams (fifth round): the cache credit offsets a worker's queued
//   prefill only up to the fleet's mean queue, and a worker's prefill term is
//   at least the blocks the prompt would recompute there beyond the
//   best-cached worker (jamAwarePrefillBlocks).
// - the fullest batch (sixth round): the largest share of a worker's batch
//   slots (max_num_seqs) its sequences, running and waiting, and this prompt
//   would take is a floor on the fleet's weight. Cached long sessions queue
//   little prefill, so the queue and the measured wait read an idle fleet
//   while the sessions' turns fill one worker's batch and then wait there for
//   a slot (seconds, not steps); the load terms must count before the batch
//   is full, not once it is. The share is the engine's own yardstick: no
//   constant. A worker that reports no slots adds nothing.
// Weight w = max(fleet weight, the worker's KV share). The prefill side uses
// the weights of Dynamo's --agentic preset (a cached block earns twice its
// prefill, uncached prefill weighs four decode blocks); the preset's decode
// blocks and 64 blocks per active request are both scaled by w.
// The first round (docs/simulation/policies.md) counted the queue in prompts
// only and had no KV term: with 25-60 k-token contexts "one prompt per worker"
// is a deep queue, and it piled long sessions on workers whose KV ran out.
// A worker that reports no step size counts in prompts only; one that reports
// no KV size adds no KV pressure.
// The router's own cost weights (flags, per-request overrides) do not apply:
// they belong to the cost policies (`default`, `kv-router`), and a request
// that overrides one is routed by `kv-router` (router.ts, policyFor).
import { type CostParams, creditedPrefillBlocks, pickScore, scoreCandidate } from "./costFunction.js";
import { AGENTIC_WEIGHTS } from "./defaults.js";
import { backedUp } from "./engineBatch.js";
import type { PolicyCandidate, Selection, SelectionInput, WorkerSelectionPolicy } from "./workerSelection.js";

export const ADAPTIVE_POLICY_NAME = "kv-adaptive";

/** Weight of the load terms on an idle fleet: breaks ties between equally cached workers towards the lighter one. */
export const IDLE_LOAD_WEIGHT = 0.1;

/**
 * A fleet whose median worker has had a prompt waiting this long for its first
 * token is busy: the load terms weigh fully. One second is the service level
 * of an interactive first token, a property of the users, not of the fleet
 * (the design runs also tried 0.5 s and 2 s: docs/simulation/policies.md, round 3).
 */
export const MEASURED_WAIT_FULL_MS = 1000;

/** How the fleet's prefill queue is counted: in engine steps, in prompts of this request's size (the first round), or the larger. */
export type QueueUnit = "steps" | "prompts" | "steps-or-prompts";

/** Which load signals the policy reads: the current ones, or the first round's for comparison. */
export interface AdaptiveOptions {
  queue: QueueUnit;
  /** Raise a worker's load weight to the share of its KV cache its requests in flight would hold. */
  kvPressure: boolean;
  /** Floor the fleet's weight by the median worker's measured prefill wait (third round). */
  measuredWait?: boolean;
  /** Charge a backed-up worker (batch slots full, requests waiting) the wait its prompts meet, as prefill blocks (fourth round). */
  backedUpWait?: boolean;
  /**
   * Fifth round: the credit offsets a worker's queued prefill only up to the fleet's mean queue (the
   * queue above it is charged in full), and a worker's prefill term is at least the blocks a move
   * there recomputes beyond the best-cached worker.
   */
  localJams?: boolean;
  /**
   * Sixth round: floor the fleet's weight by the fullest batch, the largest share of a worker's batch slots its
   * sequences (running, waiting and this prompt) would take.
   */
  fullestBatch?: boolean;
}

export const ADAPTIVE_DEFAULTS: Readonly<AdaptiveOptions> = { queue: "steps-or-prompts", kvPressure: true, measuredWait: true, backedUpWait: true, localJams: true, fullestBatch: true };
/**
 * The seventh round's candidate, not the default: the sixth round's signals without the fourth round's
 * slot-wait charge. Since the fullest batch floors the load weight, sessions spread before a batch fills,
 * and on the design seeds the charge fired mostly where every batch was full behind rag's bursts of shared
 * documents: there the waiting prompts are the prefill queue the prefill term already charges, and the
 * decode time it is priced from stretches with every prefill chunk, so it pushed prompts off their cached
 * workers. On held-out seeds 19-21 it was no better than the sixth round and lost one long-session tail
 * (docs/simulation/policies.md, round 7).
 */
export const ADAPTIVE_SEVENTH_ROUND: Readonly<AdaptiveOptions> = { ...ADAPTIVE_DEFAULTS, backedUpWait: false };
/** The fifth round's signals (slot wait estimated from decode time): kept to compare against. */
export const ADAPTIVE_FIFTH_ROUND: Readonly<AdaptiveOptions> = { queue: "steps-or-prompts", kvPressure: true, measuredWait: true, backedUpWait: true, localJams: true };
/** The fourth round's signals (--agentic's prefill term as Dynamo clamps it): kept to compare against. */
export const ADAPTIVE_FOURTH_ROUND: Readonly<AdaptiveOptions> = { queue: "steps-or-prompts", kvPressure: true, measuredWait: true, backedUpWait: true, localJams: false };
/** The third round's signals (no batch state): kept to compare against. */
export const ADAPTIVE_THIRD_ROUND: Readonly<AdaptiveOptions> = { queue: "steps-or-prompts", kvPressure: true, measuredWait: true, backedUpWait: false };
/** The first round's signals (prompts queued per worker, no KV term): kept to compare against. */
export const ADAPTIVE_FIRST_ROUND: Readonly<AdaptiveOptions> = { queue: "prompts", kvPressure: false };
/** The second round's signals (queue in steps or prompts, KV term, no measured wait): kept to compare against. */
export const ADAPTIVE_SECOND_ROUND: Readonly<AdaptiveOptions> = { queue: "steps-or-prompts", kvPressure: true, measuredWait: false };

/** What the policy needs of a worker to read the fleet's queue. */
export interface QueueView {
  prefillTokens: number;
  /** The worker's max_num_batched_tokens; 0 = not reported. */
  stepTokens: number;
}

/**
 * Mean prefill queued per worker, in engine steps (its max_num_batched_tokens), in prompts
 * of `isl` tokens, or the larger of the two per worker; a worker that reports no step size counts in prompts.
 */
export function queuedSteps(workers: readonly QueueView[], isl: number, unit: QueueUnit = ADAPTIVE_DEFAULTS.queue): number {
  if (workers.length === 0) return 0;
  let sum = 0;
  for (const w of workers) {
    const prompts = w.prefillTokens / Math.max(1, isl);
    const steps = w.stepTokens > 0 ? w.prefillTokens / w.stepTokens : prompts;
    sum += unit === "prompts" ? prompts : unit === "steps" ? steps : Math.max(steps, prompts);
  }
  return sum / workers.length;
}

/** The fleet's load weight: IDLE_LOAD_WEIGHT on an idle fleet, rising linearly to 1 at a queue of one (step or prompt) per worker. */
export function loadWeight(queued: number): number {
  return Math.min(1, Math.max(IDLE_LOAD_WEIGHT, queued));
}

/**
 * The upper median of the workers' values (0 for none): the measured prefill wait (ms) half the
 * fleet's workers have their oldest prompt past, and the batch-slot wait (blocks) charged only above it.
 */
export function upperMedian(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * The wait a new prompt meets on a backed-up worker (every batch slot taken, requests
 * waiting), in ms: it starts when `waiting + 1` running sequences have finished, and a full
 * batch frees a slot about every (decode time / slots) ms, the decode time being the fleet's
 * measured time from first token to Free. 0 when the worker is not backed up, reports no
 * slots, or no decode has been timed yet.
 */
export function backedUpWaitMs(c: PolicyCandidate): number {
  const b = c.batch;
  if (b === undefined || !backedUp(b) || !((c.decodeMs ?? 0) > 0)) return 0;
  return ((b.waiting + 1) * c.decodeMs!) / b.slots;
}

/**
 * That wait in the cost's unit: the prompt blocks the fleet prefills in that time (the
 * measured prefill time per token, times the block size), weighed as uncached prefill is
 * (prefill_load_scale), so a ms of waiting counts as a ms of recomputing elsewhere. 0 until
 * the fleet's prefill speed is measured.
 */
export function waitBlocks(waitMs: number, c: PolicyCandidate, blockSize: number, prefillLoadScale: number): number {
  const msPerToken = c.prefillMsPerToken ?? 0;
  return msPerToken > 0 ? (prefillLoadScale * waitMs) / (msPerToken * blockSize) : 0;
}

/** Share of the worker's KV cache (`kvBlocks`) that `decodeBlocks` fill, at most 1; 0 when the size is unknown. */
export function kvShare(decodeBlocks: number, kvBlocks: number): number {
  return kvBlocks > 0 ? Math.min(1, decodeBlocks / kvBlocks) : 0;
}

/**
 * Share of the worker's batch slots its sequences (running and waiting, as the engine reports them or
 * the router projects them) and this prompt would take, at most 1; 0 when it reports no slots.
 */
export function slotShare(c: PolicyCandidate): number {
  const b = c.batch;
  return b !== undefined && b.slots > 0 ? Math.min(1, (b.running + b.waiting + 1) / b.slots) : 0;
}

/**
 * The prefill term (blocks, before prefill_load_scale) with two corrections to --agentic's
 * `max(0, queued + prompt - 2 x cached)` (fifth round, docs/simulation/policies.md):
 * - the credit offsets the worker's queued prefill only up to the fleet's mean queue: the part
 *   above it is a local jam (in the design runs' slowest 1%, one 25-50 k-token recompute with batch
 *   slots free), which this prompt waits behind in full however much of it is cached there;
 * - the term is at least the blocks this prompt would recompute on the worker beyond what the
 *   best-cached candidate holds: with a credit of 2 the clamp at zero let a worker holding half
 *   of a long context look as cheap as one holding all of it, so sessions moved for a recompute of
 *   25-50 k tokens (2.5-5 s of prefill) that also stalled everyone queued behind it.
 * Both yardsticks are the fleet's own (its mean queue) and the prompt's own (its blocks): no constant.
 */
export function jamAwarePrefillBlocks(c: PolicyCandidate, p: CostParams, meanQueueTokens: number, bestOverlap: number): number {
  const excess = Math.max(0, c.load.prefillTokens - meanQueueTokens) / p.blockSize;
  const credited = Math.max(0, creditedPrefillBlocks(c, p) - excess) + excess;
  return Math.max(credited, bestOverlap - c.overlapBlocks);
}

export function adaptiveSelector(name: string, options: Readonly<AdaptiveOptions> = ADAPTIVE_DEFAULTS): WorkerSelectionPolicy {
  return {
    name,
    keepsSoftBinding: true,
    ownWeights: true,
    select({ candidates, params, temperature, random }: SelectionInput): Selection {
      const view = candidates.map((c: PolicyCandidate) => ({ prefillTokens: c.load.prefillTokens, stepTokens: c.stepTokens ?? 0 }));
      const queued = queuedSteps(view, params.isl, options.queue);
      const waitMs = options.measuredWait ? upperMedian(candidates.map((c) => c.prefillWaitMs ?? 0)) : 0;
      const fullest = options.fullestBatch ? candidates.reduce((a, c) => Math.max(a, slotShare(c)), 0) : 0;
      const fleet = Math.max(loadWeight(queued), Math.min(1, waitMs / MEASURED_WAIT_FULL_MS), fullest);
      const p = { ...params, overlapScoreCredit: AGENTIC_WEIGHTS.overlapScoreCredit, prefillLoadScale: AGENTIC_WEIGHTS.prefillLoadScale };
      let pressed = 0;
      let backed = 0;
      let jammed = 0;
      // Only a wait above the fleet's median is charged: where most workers are backed up the prompt
      // waits wherever it goes, and moving it buys a recompute, not a slot.
      const waits = candidates.map((c) => (options.backedUpWait ? waitBlocks(backedUpWaitMs(c), c, p.blockSize, p.prefillLoadScale) : 0));
      const usual = upperMedian(waits);
      const meanQueue = candidates.reduce((a, c) => a + c.load.prefillTokens, 0) / candidates.length;
      const bestOverlap = candidates.reduce((a, c) => Math.max(a, c.overlapBlocks), 0);
      const scores = candidates.map((c, i) => {
        const s = scoreCandidate(c, p);
        const kv = options.kvPressure ? kvShare(s.decodeBlocks, c.kvBlocks ?? 0) : 0;
        if (kv > fleet) pressed++;
        const w = Math.max(fleet, kv);
        const wait = Math.max(0, waits[i] - usual);
        if (wait > 0) backed++;
        if (options.localJams) {
          const prefill = jamAwarePrefillBlocks(c, p, meanQueue, bestOverlap);
          if (prefill > s.prefillBlocks) jammed++;
          s.prefillBlocks = prefill;
        }
        s.logit = p.prefillLoadScale * s.prefillBlocks + w * (s.decodeBlocks + AGENTIC_WEIGHTS.decodeActiveRequestWeight * c.load.requests) + wait + c.extraCost;
        return s;
      });
      const unit = { steps: "engine steps", prompts: "prompts", "steps-or-prompts": "steps or prompts" }[options.queue];
      const kvNote = pressed > 0 ? `; ${pressed} worker${pressed === 1 ? "" : "s"} weighted up by KV pressure` : "";
      const waitNote = (options.measuredWait ? `, median prefill wait ${Math.round(waitMs)} ms` : "") + (fullest > 0 ? `, fullest batch ${Math.round(fullest * 100)}% of its slots` : "");
      const backedNote = backed > 0 ? `; ${backed} backed-up worker${backed === 1 ? "" : "s"} charged their wait for a batch slot` : "";
      const jamNote = jammed > 0 ? `; ${jammed} worker${jammed === 1 ? "" : "s"} charged a queue above the fleet's mean or a recompute in full` : "";
      const reason = `lowest cost at load weight ${fleet.toFixed(2)} (${queued.toFixed(2)} ${unit} of prefill queued per worker${waitNote}${kvNote}${backedNote}${jamNote})`;
      return { scores, chosen: pickScore(scores, temperature, random), reason };
    },
  };
}

export const ADAPTIVE_SELECTOR: WorkerSelectionPolicy = adaptiveSelector(ADAPTIVE_POLICY_NAME);
