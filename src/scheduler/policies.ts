// The worker-selection policies a router can run, by name: every policy type
// under its own name (with its default parameters), plus the named instances
// of Dynamo's --router-policy-config, which may shadow a type's name with
// their own parameters (Dynamo's docs name the two-tier instance after its type).
import { ADAPTIVE_POLICY_NAME, ADAPTIVE_SELECTOR, type AdaptiveOptions, adaptiveSelector } from "./adaptivePolicy.js";
import { CACHE_GREEDY_SELECTOR } from "./cacheGreedyPolicy.js";
import { DYNAMO_DEFAULT_SELECTOR, KV_ROUTER_SELECTOR } from "./costPolicies.js";
import { LEAST_LOADED_SELECTOR } from "./leastLoadedPolicy.js";
import { TWO_TIER_DEFAULTS, TWO_TIER_POLICY_TYPE, type TwoTierParameters, twoTierPolicy } from "./twoTierPolicy.js";
import type { WorkerSelectionPolicy } from "./workerSelection.js";

/** `default` is Dynamo's reserved name for its built-in selector; `kv-router` is kv-router's cost routing, its default until issue 22's decision. */
export const POLICY_TYPES = ["kv-router", "default", TWO_TIER_POLICY_TYPE, "least-loaded", "cache-greedy", ADAPTIVE_POLICY_NAME] as const;
export type PolicyType = (typeof POLICY_TYPES)[number];

/**
 * What `kv-router serve` and `simulate` run when no flag, DYN_ variable or policy YAML names a
 * policy (cli/defaultPolicy.ts): better than the cost policy on most held-out cells of the
 * simulator, and nothing to tune per fleet (docs/simulation/policies.md, "Default").
 */
export const DEFAULT_POLICY: PolicyType = ADAPTIVE_POLICY_NAME;

/**
 * The policy that honours the router's cost weights, flags and per-request overrides alike. A
 * KvRouter whose settings name no policy runs it (the settings the CLI builds always name one); the
 * simulator's comparison names it `kv-router` (rounds 1-4 of its tables called it `kv`).
 */
export const COST_POLICY: PolicyType = "kv-router";

/** A named policy instance: its type and, for the two-tier and adaptive types, its parameters. */
export interface PolicySpec {
  type: PolicyType;
  twoTier?: TwoTierParameters;
  /** Which load signals a kv-adaptive instance reads (the simulator's comparison with the first round). */
  adaptive?: AdaptiveOptions;
}

function build(name: string, spec: PolicySpec, hostCacheHitWeight: number): WorkerSelectionPolicy {
  switch (spec.type) {
    case "kv-router":
      return name === KV_ROUTER_SELECTOR.name ? KV_ROUTER_SELECTOR : { ...KV_ROUTER_SELECTOR, name };
    case "default":
      return name === DYNAMO_DEFAULT_SELECTOR.name ? DYNAMO_DEFAULT_SELECTOR : { ...DYNAMO_DEFAULT_SELECTOR, name };
    case "least-loaded":
      return name === LEAST_LOADED_SELECTOR.name ? LEAST_LOADED_SELECTOR : { ...LEAST_LOADED_SELECTOR, name };
    case "cache-greedy":
      return name === CACHE_GREEDY_SELECTOR.name ? CACHE_GREEDY_SELECTOR : { ...CACHE_GREEDY_SELECTOR, name };
    case ADAPTIVE_POLICY_NAME:
      if (spec.adaptive !== undefined) return adaptiveSelector(name, spec.adaptive);
      return name === ADAPTIVE_SELECTOR.name ? ADAPTIVE_SELECTOR : { ...ADAPTIVE_SELECTOR, name };
    case TWO_TIER_POLICY_TYPE:
      return twoTierPolicy(name, spec.twoTier ?? TWO_TIER_DEFAULTS, hostCacheHitWeight);
  }
}

export class WorkerSelectionPolicies {
  private readonly byName = new Map<string, WorkerSelectionPolicy>();

  constructor(instances: Readonly<Record<string, PolicySpec>> = {}, hostCacheHitWeight = 0) {
    for (const type of POLICY_TYPES) this.byName.set(type, build(type, { type }, hostCacheHitWeight));
    for (const [name, spec] of Object.entries(instances)) this.byName.set(name, build(name, spec, hostCacheHitWeight));
  }

  get(name: string): WorkerSelectionPolicy | undefined {
    return this.byName.get(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  /** "unknown worker-selection policy ..." naming the known ones. */
  unknown(name: string): string {
    return `unknown worker-selection policy "${name}"; known: ${this.names().join(", ")}`;
  }
}
