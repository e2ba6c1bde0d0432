// Checks and settings of Dynamo's conditional disaggregation and approximate
// retention flags (kv_router_args.py, frontend_args.py): a bad value stops
// start-up naming the flag, as Dynamo's argparse and validate() do.
import { conditionalDisaggFrom, type ConditionalDisaggSettings } from "../scheduler/conditionalDisagg.js";
import { DYNAMO_DEFAULTS, KV_ROUTER_DEFAULTS } from "../scheduler/defaults.js";

interface DisaggArgs {
  routerConditionalDisagg?: boolean;
  routerConditionalDisaggConfig?: string;
  routerApproximateCachePolicy?: string;
  routerQueueThreshold?: number;
  kvEvents?: boolean;
  loadAware?: boolean;
  dynamoDefaults?: boolean;
  agentic?: boolean;
}

/** The queue threshold the router will run with (the load policies' default prefill busy line). */
function queueThresholdOf(argv: DisaggArgs): number {
  const defaults = argv.dynamoDefaults || argv.loadAware || argv.agentic ? DYNAMO_DEFAULTS : KV_ROUTER_DEFAULTS;
  return argv.routerQueueThreshold ?? defaults.routerQueueThreshold;
}

/** Events are on unless --no-kv-events or the --load-aware preset turned them off. */
const usesKvEvents = (argv: DisaggArgs) => argv.kvEvents !== false && !argv.loadAware;

export function conditionalDisaggSettingsOf(argv: DisaggArgs): ConditionalDisaggSettings {
  return conditionalDisaggFrom(argv.routerConditionalDisagg === true, argv.routerConditionalDisaggConfig, queueThresholdOf(argv));
}

export function disaggAndRetentionProblems(argv: Record<string, unknown>): string[] {
  const a = argv as DisaggArgs;
  const problems: string[] = [];
  try {
    conditionalDisaggSettingsOf(a);
  } catch (err) {
    problems.push((err as Error).message);
  }
  if (a.routerConditionalDisagg && !usesKvEvents(a)) problems.push("--router-conditional-disagg requires KV events (as in Dynamo); drop --no-kv-events / --load-aware");
  if (a.routerApproximateCachePolicy === "lru" && usesKvEvents(a)) {
    problems.push("--router-approximate-cache-policy lru requires --no-kv-events (as in Dynamo: the predict-on-route side index is TTL-only)");
  }
  return problems;
}
