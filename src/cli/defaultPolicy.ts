// The worker-selection policy `serve` and `simulate` run when no flag, DYN_
// variable or --router-policy-config names one: kv-adaptive (issue 22,
// docs/simulation/policies.md "Default"), unless the command line asks for the
// cost function itself. kv-adaptive sets its own weights, so a Dynamo command
// line that sets the cost's weights, picks a Dynamo preset or --dynamo-defaults
// would lose its meaning under it: those run the cost policy `kv-router`, which
// with none of kv-router's own terms on is Dynamo's cost function exactly. A
// request that overrides a weight is routed the same way (router.ts, policyFor).
import { COST_POLICY, DEFAULT_POLICY, type PolicyType } from "../scheduler/policies.js";

/** Flags that ask for the cost function, by yargs key: set (a switch: on) means asked. */
const COST_FLAGS: readonly (readonly [flag: string, key: string])[] = [
  ["--dynamo-defaults", "dynamoDefaults"],
  ["--agentic", "agentic"],
  ["--load-aware", "loadAware"],
  ["--router-kv-overlap-score-credit", "routerKvOverlapScoreCredit"],
  ["--router-kv-overlap-score-credit-decay", "routerKvOverlapScoreCreditDecay"],
  ["--router-prefill-load-scale", "routerPrefillLoadScale"],
  ["--router-decode-active-request-weight", "routerDecodeActiveRequestWeight"],
  ["--kv-overlap-score-weight", "kvOverlapScoreWeight"],
];

export interface UnnamedPolicy {
  name: PolicyType;
  /** The flag that asked for the cost function; undefined when the default runs. */
  askedBy?: string;
}

/** The policy for a command line that names none (flags `simulate` lacks are simply absent). */
export function unnamedPolicy(argv: Readonly<Record<string, unknown>>): UnnamedPolicy {
  // The TTFT estimate is a term of the cost policy alone.
  if (argv.routerCost === "ttft") return { name: COST_POLICY, askedBy: "--router-cost ttft" };
  for (const [flag, key] of COST_FLAGS) {
    const value = argv[key];
    if (value !== undefined && value !== false) return { name: COST_POLICY, askedBy: flag };
  }
  return { name: DEFAULT_POLICY };
}
