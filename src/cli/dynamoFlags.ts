// Dynamo router flags kv-router accepts but does not implement yet. A Dynamo
// deployment's command line (or its DYN_* variables) must start kv-router, so
// each is parsed and validated like Dynamo's argparse does, and a start-up
// warning names every one that was given. docs/dynamo.md ("Flags and cost")
// lists every Dynamo router flag with its status and Dynamo source file.
import type { Argv, Options } from "yargs";

export const KV_ROUTER_ARGS = "components/src/dynamo/common/configuration/groups/kv_router_args.py";
const ROUTER_ARGS = "components/src/dynamo/router/args.py";
const AIC_ARGS = "components/src/dynamo/common/configuration/groups/ais_perf_args.py";

/** --help sections, named as in Dynamo's router docs (configuration-and-tuning.md) and argparse groups. */
export const HELP_GROUP = {
  dynamoRouter: "Dynamo Router Options:",
  routing: "Routing Behavior:",
  events: "KV Event Transport:",
  tracking: "Block Tracking:",
  indexer: "KV Indexer / Approx KV Indexer:",
  aic: "AIC Perf Model Options:",
} as const;

export interface UnsupportedFlag {
  flag: string;
  option: Options;
  group: string;
  /** Dynamo source defining it. */
  source: string;
}

const bool = (describe: string): Options => ({ type: "boolean", describe });
const num = (describe: string): Options => ({ type: "number", describe });
const str = (describe: string, choices?: string[]): Options => ({ type: "string", describe, ...(choices ? { choices } : {}) });

const AIC_FIELDS: [string, Options][] = [
  ["backend", str("AIC backend family (e.g. vllm)")],
  ["system", str("AIC system (e.g. h200_sxm)")],
  ["backend-version", str("AIC database version")],
  ["tp-size", num("tensor-parallel size to model")],
  ["model-path", str("model for the AIC lookup")],
  ["moe-tp-size", num("MoE tensor-parallel size")],
  ["moe-ep-size", num("MoE expert-parallel size")],
  ["attention-dp-size", num("attention data-parallel size")],
  ["nextn", num("speculative draft tokens")],
  ["nextn-accept-rates", str("comma-separated draft acceptance rates")],
  ["mtp-seed", num("MTP seed")],
];

export const UNSUPPORTED_FLAGS: readonly UnsupportedFlag[] = [
  { flag: "serve-indexer", option: bool("serve this router's KV index over Dynamo's request plane"), group: HELP_GROUP.indexer, source: ROUTER_ARGS },
  { flag: "router-conditional-prefill", option: bool("conditional prefill (older releases)"), group: HELP_GROUP.routing, source: KV_ROUTER_ARGS },
  { flag: "router-conditional-prefill-max-new-tokens", option: num("conditional prefill token cap (older releases)"), group: HELP_GROUP.routing, source: KV_ROUTER_ARGS },
  { flag: "router-prefill-continue", option: bool("let a prefill worker decode when the decode pool is full"), group: HELP_GROUP.routing, source: "docs/.../router/configuration-and-tuning.md" },
  { flag: "router-prefill-continue-config", option: str("prefill-continue settings"), group: HELP_GROUP.routing, source: "docs/.../router/configuration-and-tuning.md" },
  { flag: "router-prefill-load-model", option: str("prompt-side load model", ["none", "aic"]), group: HELP_GROUP.routing, source: KV_ROUTER_ARGS },
  { flag: "router-prefill-policy", option: str("named worker-selection instance for prefill workers"), group: HELP_GROUP.routing, source: KV_ROUTER_ARGS },
  { flag: "router-decode-policy", option: str("named worker-selection instance for decode workers"), group: HELP_GROUP.routing, source: KV_ROUTER_ARGS },
  { flag: "router-min-initial-workers", option: num("workers to wait for before routing (Dynamo: env DYN_ROUTER_MIN_INITIAL_WORKERS only)"), group: HELP_GROUP.routing, source: "lib/kv-router/src/scheduling/config.rs" },
  {
    flag: "router-track-output-blocks",
    option: { ...bool("count generated tokens' blocks as decode load"), alias: "track-output-blocks" },
    group: HELP_GROUP.tracking,
    source: KV_ROUTER_ARGS,
  },
  { flag: "router-tracking-hash", option: str("hash of active-sequence identities", ["public-xxh3-v1", "keyed-xxh3-v1"]), group: HELP_GROUP.tracking, source: KV_ROUTER_ARGS },
  { flag: "router-tracking-key-file", option: str("32-byte key for keyed-xxh3-v1"), group: HELP_GROUP.tracking, source: KV_ROUTER_ARGS },
  { flag: "router-tracking-key-id", option: str("key epoch for keyed-xxh3-v1"), group: HELP_GROUP.tracking, source: KV_ROUTER_ARGS },
  { flag: "router-prune-target-ratio", option: num("approximate-mode prune target (older releases; kv-router prunes to 0.8)"), group: HELP_GROUP.indexer, source: KV_ROUTER_ARGS },
  { flag: "use-remote-indexer", option: bool("query a remote KV indexer instead of a local one"), group: HELP_GROUP.indexer, source: KV_ROUTER_ARGS },
  { flag: "enable-session-prefix-index", option: bool("per-session block lineage index"), group: HELP_GROUP.indexer, source: KV_ROUTER_ARGS },
  { flag: "shared-cache-multiplier", option: num("credit of a shared-cache hit"), group: HELP_GROUP.indexer, source: KV_ROUTER_ARGS },
  { flag: "shared-cache-type", option: str("external shared KV cache", ["none", "hicache"]), group: HELP_GROUP.indexer, source: KV_ROUTER_ARGS },
  { flag: "ais-perf-config", option: str("AISimulate perf model (JSON or file)"), group: HELP_GROUP.aic, source: AIC_ARGS },
  // Dynamo spells these --aic-* and --ais-* (DYN_AIC_* / DYN_AIS_*).
  ...AIC_FIELDS.map(([field, option]) => ({
    flag: `aic-${field}`,
    option: { ...option, alias: `ais-${field}` },
    group: HELP_GROUP.aic,
    source: AIC_ARGS,
  })),
];

/** Registers every accepted-but-unsupported Dynamo flag (no defaults: "given" means set). */
export function unsupportedDynamoOptions<T>(y: Argv<T>): Argv<T> {
  for (const u of UNSUPPORTED_FLAGS) {
    y = y.option(u.flag, { ...u.option, describe: `[not supported yet] ${u.option.describe}` });
  }
  return y;
}

const camel = (flag: string) => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
const envName = (flag: string) => `DYN_${flag.toUpperCase().replace(/-/g, "_")}`;

/** How a flag (or one of its aliases) was given: its command-line spelling, else its DYN_ variable; undefined if neither. */
export function givenAs(names: readonly string[], cliArgs: readonly string[], env: NodeJS.ProcessEnv): string | undefined {
  for (const n of names) {
    if (cliArgs.some((a) => new RegExp(`^--(no-)?${n}(=|$)`).test(a))) return `--${n}`;
  }
  return names.map(envName).find((v) => env[v] !== undefined);
}

export function notSupportedYet(givenAs: string, source: string): string {
  return `${givenAs} is a Dynamo router setting kv-router accepts but does not support yet; it has no effect (Dynamo: ${source})`;
}

/** One line per Dynamo flag that was given but has no effect yet. */
export function unsupportedFlagWarnings(
  argv: Record<string, unknown>,
  cliArgs: readonly string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  const out: string[] = [];
  for (const u of UNSUPPORTED_FLAGS) {
    if (argv[camel(u.flag)] === undefined) continue;
    const aliases = u.option.alias === undefined ? [] : ([] as string[]).concat(u.option.alias);
    out.push(notSupportedYet(givenAs([u.flag, ...aliases], cliArgs, env) ?? `--${u.flag}`, u.source));
  }
  return out;
}
