// What kv-router does when the user sets nothing (the CLI and the simulator's
// `kv` policy), against Dynamo's own defaults (lib/kv-router/src/scheduling/
// config.rs). Tuned in the simulator on Mooncake and agentic traces at three
// loads each, then checked on held-out traces (docs/simulation, "Tuned
// defaults"). A Dynamo user's explicit flags keep Dynamo's meaning, and
// --dynamo-defaults restores Dynamo's values for the flags not given.
import type { SessionAffinityMode } from "./sessionAffinity.js";

export interface SchedulingDefaults {
  /** prefill_load_scale: weight of the (cache-credited) prefill load against decode blocks. */
  prefillLoadScale: number;
  /** router_queue_threshold: queue while every worker's prefill exceeds this × its max_num_batched_tokens. */
  routerQueueThreshold: number;
  /** router_predicted_ttl_secs: predict-on-route (event mode only); 0 = off. */
  predictedTtlSecs: number;
  /** router_session_affinity_mode when affinity is on; undefined = kv-router's slack rule (sessionAffinity.ts). */
  sessionAffinityMode?: SessionAffinityMode;
}

/**
 * Dynamo's defaults: prefill_load_scale 1.0, router_queue_threshold Some(16.0), router_predicted_ttl_secs None,
 * --router-session-affinity-mode hard (components/src/dynamo/common/configuration/groups/router_args.py).
 */
export const DYNAMO_DEFAULTS: Readonly<SchedulingDefaults> = { prefillLoadScale: 1, routerQueueThreshold: 16, predictedTtlSecs: 0, sessionAffinityMode: "hard" };

/**
 * kv-router's: a prompt's uncached prefill weighs three times Dynamo's (cache hits
 * matter more than a few decode blocks), and siblings of a new prefix land
 * together before its KV event arrives.
 */
export const KV_ROUTER_DEFAULTS: Readonly<SchedulingDefaults> = { prefillLoadScale: 3, routerQueueThreshold: 16, predictedTtlSecs: 2 };

/**
 * Dynamo's --agentic preset (router-presets.md): more credit per cached block, uncached
 * prompt work and each active request priced higher. It replaces these three weights
 * whatever the individual flags say (and the deprecated overlap weight).
 */
export const AGENTIC_WEIGHTS = { overlapScoreCredit: 2, prefillLoadScale: 4, decodeActiveRequestWeight: 64 } as const;
