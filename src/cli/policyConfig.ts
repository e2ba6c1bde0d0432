// Dynamo's --router-policy-config YAML, read as Dynamo reads it
// (lib/kv-router/src/scheduling/policy_config.rs and worker_selection_config.rs,
// serde deny_unknown_fields at every level): kv-router applies its
// worker_selection section; the policy-class queue profiles and the `router`
// section are checked and accepted with a warning. Unknown keys and invalid
// values stop start-up, naming the key and the file.
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { POLICY_TYPES, type PolicySpec, type PolicyType } from "../scheduler/policies.js";
import { TWO_TIER_POLICY_TYPE, parseTwoTierParameters } from "../scheduler/twoTierPolicy.js";

const FLAG = "--router-policy-config";
/** Queue profiles (RawRouterPolicyConfig). */
const PROFILE_KEYS = ["default_policy_family", "policy_classes", "uncached_isl_buckets", "models"];
/** The shared router settings a `router` section may set (kv_router_args.py, _ROUTER_SETTINGS). */
const ROUTER_SETTINGS = [
  "host_cache_hit_weight",
  "disk_cache_hit_weight",
  "use_kv_events",
  "router_replica_sync",
  "router_track_active_blocks",
  "router_track_output_blocks",
  "router_assume_kv_reuse",
  "router_track_prefill_tokens",
  "router_tracking_hash",
  "router_tracking_key_file",
  "router_tracking_key_id",
  "router_prefill_load_model",
  "router_ttl_secs",
  "router_approximate_cache_policy",
  "router_event_threads",
  "use_remote_indexer",
  "serve_indexer",
  "enable_session_prefix_index",
  "shared_cache_type",
  "router_predicted_ttl_secs",
];
const TOP_KEYS = ["worker_selection", ...PROFILE_KEYS, "router"];
const STAGES = ["aggregated", "prefill", "decode", "encode"];
const SELECTION_KEYS = [...STAGES, "instances"];
const INSTANCE_KEYS = ["name", "type", "parameters"];
/** Dynamo's validate_identifier. */
const IDENTIFIER = /^[A-Za-z0-9_.-]+$/;

export class PolicyConfigError extends Error {}

export interface PolicyConfig {
  /** worker_selection.instances by name. */
  instances: Record<string, PolicySpec>;
  /** worker_selection.aggregated: what this router's pool runs ("default" = Dynamo's built-in selector). */
  selected?: string;
  /** Sections accepted without effect, one line each. */
  warnings: string[];
}

type Mapping = Record<string, unknown>;
const isMapping = (v: unknown): v is Mapping => typeof v === "object" && v !== null && !Array.isArray(v);

export function readPolicyConfig(path: string): PolicyConfig {
  const fail: (what: string) => never = (what) => {
    throw new PolicyConfigError(`${FLAG} ${path}: ${what}`);
  };
  const onlyKeys = (m: Mapping, known: string[], where: string) => {
    for (const key of Object.keys(m)) if (!known.includes(key)) fail(`unknown key "${where}${key}" (known: ${known.join(", ")})`);
  };
  let doc: unknown;
  try {
    doc = parse(readFileSync(path, "utf8"));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    fail(e.code ? `cannot read it (${e.code})` : `not YAML: ${e.message.split("\n")[0]}`);
  }
  if (!isMapping(doc)) return fail("must be a YAML mapping (worker_selection, policy-class queue profiles)");
  onlyKeys(doc, TOP_KEYS, "");
  const warnings: string[] = [];
  const profiles = PROFILE_KEYS.filter((k) => k in doc);
  if (profiles.length > 0) {
    warnings.push(`${FLAG} ${path}: policy-class queues (${profiles.join(", ")}) are not supported yet; the queue follows --router-queue-threshold and --router-queue-policy`);
  }
  if (doc.router !== undefined) {
    if (!isMapping(doc.router)) fail("router must be a mapping of router settings");
    onlyKeys(doc.router as Mapping, ROUTER_SETTINGS, "router.");
    warnings.push(`${FLAG} ${path}: the router section is not applied yet; give those settings as flags`);
  }
  if (doc.worker_selection === undefined) {
    if (profiles.length === 0 && doc.router === undefined) fail("defines nothing: give worker_selection or a policy-class queue profile");
    return { instances: {}, warnings };
  }
  const ws = doc.worker_selection;
  if (!isMapping(ws)) return fail("worker_selection must be a mapping (aggregated, prefill, decode, encode, instances)");
  onlyKeys(ws, SELECTION_KEYS, "worker_selection.");
  if (Object.keys(ws).length === 0) fail("worker_selection must define an instance or an aggregated, prefill, decode or encode selection");
  const instances = readInstances(ws.instances ?? [], fail, onlyKeys);
  for (const stage of STAGES) {
    const selected = ws[stage];
    if (selected === undefined) continue;
    if (typeof selected !== "string") fail(`worker_selection.${stage} must be an instance name, got ${JSON.stringify(selected)}`);
    if (selected !== "default" && !(selected in instances)) {
      fail(`worker_selection.${stage} "${selected}" does not name a configured instance (instances: ${Object.keys(instances).join(", ") || "none"})`);
    }
    if (stage !== "aggregated") {
      warnings.push(`${FLAG} ${path}: worker_selection.${stage} has no effect; kv-router routes one pool and applies worker_selection.aggregated`);
    }
  }
  return { instances, selected: ws.aggregated as string | undefined, warnings };
}

function readInstances(
  raw: unknown,
  fail: (what: string) => never,
  onlyKeys: (m: Mapping, known: string[], where: string) => void,
): Record<string, PolicySpec> {
  if (!Array.isArray(raw)) return fail("worker_selection.instances must be a list of {name, type, parameters}");
  const out: Record<string, PolicySpec> = {};
  raw.forEach((item: unknown, i) => {
    const at = `worker_selection.instances[${i}]`;
    if (!isMapping(item)) fail(`${at} must be a mapping (name, type, parameters)`);
    const m = item as Mapping;
    onlyKeys(m, INSTANCE_KEYS, `${at}.`);
    const { name, type } = m;
    if (typeof name !== "string" || !IDENTIFIER.test(name)) fail(`${at}.name must match [A-Za-z0-9_.-]+, got ${JSON.stringify(name)}`);
    if (name === "default") fail(`${at}.name "default" is reserved for Dynamo's built-in selector`);
    if (typeof type !== "string" || !(POLICY_TYPES as readonly string[]).includes(type)) {
      fail(`${at}.type ${JSON.stringify(type)} is not a policy type kv-router has (${POLICY_TYPES.join(", ")})`);
    }
    const parameters = m.parameters ?? {};
    if (!isMapping(parameters)) fail(`${at}.parameters must be a YAML mapping`);
    if ((name as string) in out) fail(`worker_selection has two instances named "${name}"`);
    out[name as string] = specOf(type as PolicyType, parameters as Mapping, (what) => fail(`${at}.parameters: ${what}`));
  });
  return out;
}

function specOf(type: PolicyType, parameters: Mapping, fail: (what: string) => never): PolicySpec {
  if (type !== TWO_TIER_POLICY_TYPE) {
    const key = Object.keys(parameters)[0];
    if (key !== undefined) fail(`unknown parameter "${key}"; ${type} takes none`);
    return { type };
  }
  try {
    return { type, twoTier: parseTwoTierParameters(parameters) };
  } catch (err) {
    return fail((err as Error).message);
  }
}
