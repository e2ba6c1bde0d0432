// Dynamo's conditional disaggregation rule (--router-conditional-disagg): for a
// request that could prefill on a prefill worker, decide whether the decode
// worker the router would pick should prefill it itself instead. Dynamo's
// policies (lib/kv-router/src/conditional_disagg.rs, upstream main):
// - isl_bounding: the prompt's tokens not cached on the decode worker ("effective
//   ISL") are below eff_isl_threshold AND below eff_isl_ratio_threshold of the prompt;
// - prefill_load: the prefill worker the router would pick is past the prefill busy
//   line (active prefill tokens > prefill_busy_threshold x max_num_batched_tokens);
// - isl_or_load: either.
// A decode busy gate (decode_busy_threshold, a fraction of the decode worker's KV
// blocks) then vetoes a local prefill on a busy decode worker, and, when set,
// also one whose decode worker's size is unknown (the PrefillRouter call site,
// lib/llm/src/kv_router/prefill_router/conditional_bypass.rs).

export const CONDITIONAL_DISAGG_POLICIES = ["isl_bounding", "prefill_load", "isl_or_load"] as const;
export type ConditionalDisaggPolicy = (typeof CONDITIONAL_DISAGG_POLICIES)[number];

export interface ConditionalDisaggSettings {
  enabled: boolean;
  policy: ConditionalDisaggPolicy;
  /** Tokens; local prefill only below it (Dynamo default 2048). */
  effIslThreshold: number;
  /** Fraction of the prompt; local prefill only below it (Dynamo default 0.7). */
  effIslRatioThreshold: number;
  /** Fraction of the prefill worker's max_num_batched_tokens; undefined: no load signal. */
  prefillBusyThreshold?: number;
  /** Fraction of the decode worker's total KV blocks; undefined: no decode gate. */
  decodeBusyThreshold?: number;
}

export const DEFAULT_CONDITIONAL_DISAGG: ConditionalDisaggSettings = {
  enabled: false,
  policy: "isl_bounding",
  effIslThreshold: 2048,
  effIslRatioThreshold: 0.7,
};

/** What the rule reads about one request. */
export interface DisaggInput {
  promptTokens: number;
  /** Prompt tokens cached on the decode worker the router would pick. */
  decodeCachedTokens: number;
  /** That prefill worker past its busy line; undefined: signal not read. */
  prefillBusy?: boolean;
  /** The decode worker's KV blocks once this request runs there, and its size (0 = unknown). */
  decodePotentialBlocks: number;
  decodeTotalKvBlocks: number;
}

export interface DisaggVerdict {
  prefillLocally: boolean;
  netNewTokens: number;
  decodeBusy?: boolean;
  reason: string;
}

/** Whether the policy reads the prefill worker's load (Dynamo skips that peek otherwise). */
export function needsPrefillBusy(s: ConditionalDisaggSettings): boolean {
  return s.enabled && s.policy !== "isl_bounding";
}

export function decideDisagg(s: ConditionalDisaggSettings, input: DisaggInput): DisaggVerdict {
  const netNewTokens = Math.max(0, input.promptTokens - Math.min(input.decodeCachedTokens, input.promptTokens));
  if (!s.enabled) return { prefillLocally: false, netNewTokens, reason: "conditional disaggregation is off (--router-conditional-disagg): prefill remotely" };
  const isl = islBounding(s, netNewTokens, input.promptTokens);
  const load = input.prefillBusy === true
    ? { bypass: true, why: "the prefill worker is past its busy threshold" }
    : { bypass: false, why: input.prefillBusy === false ? "the prefill worker is not busy" : "no prefill load signal" };
  const chosen = s.policy === "isl_bounding" ? isl : s.policy === "prefill_load" ? load : isl.bypass ? isl : load.bypass ? load : { bypass: false, why: `${isl.why}; ${load.why}` };
  const policySays = `${s.policy}: ${chosen.why}`;
  if (!chosen.bypass) return { prefillLocally: false, netNewTokens, reason: `${policySays}: prefill remotely` };
  if (s.decodeBusyThreshold === undefined) return { prefillLocally: true, netNewTokens, reason: `${policySays}: prefill on the decode worker` };
  if (input.decodeTotalKvBlocks <= 0) {
    return { prefillLocally: false, netNewTokens, reason: `${policySays}, but the decode worker's KV size is unknown (decode_busy_threshold set): prefill remotely` };
  }
  const decodeBusy = input.decodePotentialBlocks > s.decodeBusyThreshold * input.decodeTotalKvBlocks;
  const gate = `${input.decodePotentialBlocks} decode blocks ${decodeBusy ? ">" : "<="} ${s.decodeBusyThreshold} x ${input.decodeTotalKvBlocks}`;
  return decodeBusy
    ? { prefillLocally: false, netNewTokens, decodeBusy, reason: `${policySays}, but the decode worker is busy (${gate}): prefill remotely` }
    : { prefillLocally: true, netNewTokens, decodeBusy, reason: `${policySays}; decode worker not busy (${gate}): prefill on the decode worker` };
}

function islBounding(s: ConditionalDisaggSettings, netNew: number, prompt: number): { bypass: boolean; why: string } {
  if (netNew >= s.effIslThreshold) return { bypass: false, why: `${netNew} net-new tokens >= ${s.effIslThreshold}` };
  const ratio = netNew / Math.max(prompt, 1);
  const shown = Math.round(ratio * 100) / 100;
  return ratio < s.effIslRatioThreshold
    ? { bypass: true, why: `${netNew} net-new tokens < ${s.effIslThreshold} and ${shown} of the prompt < ${s.effIslRatioThreshold}` }
    : { bypass: false, why: `${shown} of the prompt is net-new, not < ${s.effIslRatioThreshold}` };
}

/** Dynamo's --router-conditional-disagg-config fields (JSON keys) by setting. */
const CONFIG_FIELDS = ["policy", "eff_isl_threshold", "eff_isl_ratio_threshold", "prefill_busy_threshold", "decode_busy_threshold"];

/**
 * Settings from the flag, the JSON of --router-conditional-disagg-config and the
 * queue threshold, checked as Dynamo's kv_router_args.py and frontend_args.py do;
 * throws a message naming the flag and field.
 */
export function conditionalDisaggFrom(enabled: boolean, json: string | undefined, queueThreshold: number | undefined): ConditionalDisaggSettings {
  const flag = "--router-conditional-disagg-config";
  const s: ConditionalDisaggSettings = { ...DEFAULT_CONDITIONAL_DISAGG, enabled };
  if (json !== undefined) {
    if (!enabled) throw new Error(`${flag} requires --router-conditional-disagg`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch {
      throw new Error(`${flag} must be a JSON object`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error(`${flag} must be a JSON object`);
    const o = parsed as Record<string, unknown>;
    const unknown = Object.keys(o).filter((k) => !CONFIG_FIELDS.includes(k)).sort();
    if (unknown.length > 0) throw new Error(`${flag} has unknown field(s): ${unknown.join(", ")} (known: ${CONFIG_FIELDS.join(", ")})`);
    if (o.policy !== undefined) {
      if (!CONDITIONAL_DISAGG_POLICIES.includes(o.policy as ConditionalDisaggPolicy)) {
        throw new Error(`${flag} policy must be one of ${CONDITIONAL_DISAGG_POLICIES.map((p) => `'${p}'`).join(", ")}`);
      }
      s.policy = o.policy as ConditionalDisaggPolicy;
    }
    if (o.eff_isl_threshold !== undefined) {
      if (!Number.isInteger(o.eff_isl_threshold) || (o.eff_isl_threshold as number) < 0) throw new Error(`${flag} eff_isl_threshold must be an integer >= 0`);
      s.effIslThreshold = o.eff_isl_threshold as number;
    }
    if (o.eff_isl_ratio_threshold !== undefined) {
      const r = o.eff_isl_ratio_threshold;
      if (typeof r !== "number" || !(r >= 0 && r <= 1)) throw new Error(`${flag} eff_isl_ratio_threshold must be a number in [0.0, 1.0]`);
      s.effIslRatioThreshold = r;
    }
    for (const [field, key] of [["prefill_busy_threshold", "prefillBusyThreshold"], ["decode_busy_threshold", "decodeBusyThreshold"]] as const) {
      const v = o[field];
      if (v === undefined || v === null) continue;
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new Error(`${flag} ${field} must be a number >= 0`);
      s[key] = v;
    }
  }
  // The load policies need a prefill busy line: by default the queue threshold's (as in Dynamo).
  if (needsPrefillBusy(s) && s.prefillBusyThreshold === undefined) {
    if (queueThreshold === undefined) {
      throw new Error(`conditional_disagg policy '${s.policy}' needs prefill_busy_threshold, but neither prefill_busy_threshold nor --router-queue-threshold is set`);
    }
    s.prefillBusyThreshold = queueThreshold;
  }
  return s;
}
