// Per-request cost settings, as Dynamo's router_config_override
// (RouterConfigOverride in lib/kv-router/src/scheduling/config.rs): each one
// set replaces the router's value for that request only.
export interface CostOverride {
  overlapScoreCredit?: number;
  prefillLoadScale?: number;
  temperature?: number;
  assumeKvReuse?: boolean;
  trackPrefillTokens?: boolean;
}

/** Dynamo's wire form also takes the deprecated overlap_score_weight, mapped as the flag is. */
export interface WireCostOverride extends CostOverride {
  overlapScoreWeight?: number;
}

/** Folds the deprecated weight in: it becomes the scale, and 0 also zeroes the credit (Dynamo's TryFrom). */
export function fromWire(o: WireCostOverride): CostOverride {
  const { overlapScoreWeight, ...rest } = o;
  if (overlapScoreWeight === undefined) return rest;
  return { ...rest, prefillLoadScale: overlapScoreWeight, overlapScoreCredit: overlapScoreWeight === 0 ? 0 : rest.overlapScoreCredit };
}

/** What is wrong with an override (Dynamo's RouterConfigOverride::validate bounds), naming the wire field; undefined if nothing. */
export function costOverrideProblem(o: CostOverride): string | undefined {
  const fields: [keyof CostOverride, string][] = [
    ["overlapScoreCredit", "overlap_score_credit"],
    ["prefillLoadScale", "prefill_load_scale"],
    ["temperature", "router_temperature"],
  ];
  for (const [field, wire] of fields) {
    const v = o[field] as number | undefined;
    if (v !== undefined && !(Number.isFinite(v) && v >= 0)) return `router_config_override.${wire} is ${v}; it must be a finite number >= 0`;
  }
  return undefined;
}
