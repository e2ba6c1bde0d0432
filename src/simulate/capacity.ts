// A fleet's capacity for a trace, measured in the simulator: the arrival rate
// (as a speedup of the trace's own timestamps) at which a reference policy's
// mean time to first token reaches KNEE_FACTOR times its light-load mean. Past
// that knee queues grow faster than the load; "100% load" is that rate, and
// the comparison's 50% and 80% are fractions of it (docs/simulation/families.md).
import type { PolicyName } from "./policies.js";
import { type SimOptions, simulate } from "./run.js";
import type { TraceRequest } from "./trace.js";

/** Mean TTFT at capacity over mean TTFT at light load. */
export const KNEE_FACTOR = 5;
/** Light load: the trace's prompt tokens arrive at this fraction of the fleet's cacheless prefill rate. */
export const LIGHT_FRACTION = 0.1;
/** Bisection steps on log(speedup): the answer is within 2^(range / 2^steps). */
const STEPS = 9;

export interface Capacity {
  reference: PolicyName;
  /** Speedup of the light-load run, and its mean TTFT. */
  lightSpeedup: number;
  lightTtftMs: number;
  /** The speedup at which the reference's mean TTFT reaches KNEE_FACTOR × the light-load mean. */
  speedup: number;
  /** Every run the search made: speedup → mean TTFT (ms). */
  probes: { speedup: number; ttftMeanMs: number }[];
}

/** Prompt tokens per ms the trace offers at speedup 1. */
function offeredTokensPerMs(trace: readonly TraceRequest[]): number {
  const span = Math.max(1, trace[trace.length - 1].timestampMs - trace[0].timestampMs);
  return trace.reduce((a, r) => a + r.inputLength, 0) / span;
}

export function measureCapacity(trace: readonly TraceRequest[], base: SimOptions, reference: PolicyName = "dynamo-2026"): Capacity {
  const probes: Capacity["probes"] = [];
  const ttft = (speedup: number) => {
    const r = simulate(trace, { ...base, policies: [reference], speedup }).policies[0].result;
    probes.push({ speedup, ttftMeanMs: r.ttft_mean_ms });
    return r.ttft_mean_ms;
  };
  const fleetTokensPerMs = base.workers / base.engine.prefillMsPerToken;
  const lightSpeedup = (LIGHT_FRACTION * fleetTokensPerMs) / offeredTokensPerMs(trace);
  const lightTtftMs = ttft(lightSpeedup);
  const target = KNEE_FACTOR * lightTtftMs;
  // The load never needs to exceed the fleet's cacheless prefill rate by more than the cache can save (64×).
  let lo = Math.log(lightSpeedup);
  let hi = Math.log(lightSpeedup * 640);
  for (let i = 0; i < STEPS; i++) {
    const mid = (lo + hi) / 2;
    if (ttft(Math.exp(mid)) < target) lo = mid;
    else hi = mid;
  }
  return { reference, lightSpeedup, lightTtftMs, speedup: Math.exp((lo + hi) / 2), probes };
}
