// Flags to settings: turns the parsed flag table (options.ts) into the router's
// configuration, the server's options and the event sources the flags ask for.
import { readFileSync } from "node:fs";
import type { ArgumentsCamelCase, InferredOptionTypes } from "yargs";
import { availableParallelism } from "node:os";
import { dynamoDiscoverySources, parseEtcdEndpoints, resolveDiscoveryBackend } from "./discoveryFlags.js";
import { NatsEventSource, defaultRouterId } from "../sources/nats/natsSource.js";
import { connectOptionsFromFlags } from "../nats/connection.js";
import { modelSpecFrom } from "../gateway/modelSpec.js";
import { DEFAULT_ROUTER_CONFIG, type QueuePolicy, type RouterConfig, type RouterCost } from "../router/types.js";
import { DYNAMO_COST_WEIGHTS, applyDeprecatedOverlapScoreWeight } from "../scheduler/costFunction.js";
import { AGENTIC_WEIGHTS, DYNAMO_DEFAULTS, KV_ROUTER_DEFAULTS, type SchedulingDefaults } from "../scheduler/defaults.js";
import type { SessionAffinityMode } from "../scheduler/sessionAffinity.js";
import { DEFAULT_POLICY } from "../scheduler/policies.js";
import type { ServerOptions } from "../app/startServer.js";
import { parseZmqWorkerSpec } from "../sources/engineZmq/endpoints.js";
import { ZmqEventSource } from "../sources/engineZmq/zmqEventSource.js";
import { givenAs, unsupportedFlagWarnings } from "./dynamoFlags.js";
import { conditionalDisaggSettingsOf } from "./disaggFlags.js";
import type { ApproximateCachePolicy } from "../indexer/approximateLru.js";

import { type ServeArgs, defaultIndexerShards } from "./options.js";
import { DYNAMO_BLOCK_SIZE, type ROUTING_FLAGS, selectedPolicyName } from "./routingFlags.js";
import { unnamedPolicy } from "./defaultPolicy.js";
import { type PolicyConfig, PolicyConfigError, readPolicyConfig } from "./policyConfig.js";
import { CliError } from "./errors.js";
import { otlpProtocolWarning, tracingSettingsFrom } from "./tracingFlags.js";
import { kubernetesDiscoveryFrom } from "./kubernetesFlags.js";

/** The parsed values of ROUTING_FLAGS (routingFlags.ts), as `serve` and `simulate` both have them. */
export type RoutingArgs = ArgumentsCamelCase<InferredOptionTypes<typeof ROUTING_FLAGS>>;

/**
 * The settings ROUTING_FLAGS make, over `base`, with Dynamo's meaning: flags not
 * given take `defaults` (kv-router's tuned values, or Dynamo's), then the
 * deprecated overlap weight applies (kv_router_args.py order), then the
 * --agentic preset, which wins over both.
 */
export function routingSettingsFrom(argv: RoutingArgs, base: RouterConfig, defaults: Readonly<SchedulingDefaults> = KV_ROUTER_DEFAULTS): RouterConfig {
  const policies = policyConfigOf(argv);
  const router: RouterConfig = {
    ...base,
    blockSize: argv.blockSize,
    temperature: argv.routerTemperature,
    useKvEvents: argv.kvEvents,
    trackActiveBlocks: argv.trackActiveBlocks,
    approxTtlMs: argv.routerTtlSecs * 1000,
    queueThreshold: argv.routerQueueThreshold ?? defaults.routerQueueThreshold,
    queuePolicy: (argv.routerQueuePolicy ?? "fcfs") as QueuePolicy,
    // Dynamo predicts only in event mode (router_predicted_ttl_secs requires use_kv_events).
    predictedTtlMs: (argv.routerPredictedTtlSecs ?? (argv.kvEvents ? defaults.predictedTtlSecs : 0)) * 1000,
    sessionAffinityTtlMs: argv.sessionAffinityTtlSecs * 1000,
    sessionAffinitySlack: argv.sessionAffinitySlack,
    sessionAffinityMode: (argv.routerSessionAffinityMode as SessionAffinityMode | undefined) ?? defaults.sessionAffinityMode,
    routerCost: argv.routerCost as RouterCost,
    prefillTokensPerSec: argv.routerPrefillTokensPerSec,
    // DYN_ROUTER_WORKER_SELECTION_POLICY (this flag's variable) wins over the YAML's selection, as in Dynamo;
    // with neither, kv-adaptive, or the cost policy for a command line that sets the cost (defaultPolicy.ts).
    workerSelectionPolicy: selectedPolicyName(argv.routerWorkerSelectionPolicy) ?? policies.selected ?? unnamedPolicy(argv).name,
    policyInstances: policies.instances,
  };
  if (argv.agentic) return { ...router, ...AGENTIC_WEIGHTS };
  return argv.kvOverlapScoreWeight === undefined ? router : applyDeprecatedOverlapScoreWeight(router, argv.kvOverlapScoreWeight);
}

/** The --router-policy-config file, read (none: no instances, no selection). */
export function policyConfigOf(argv: Pick<RoutingArgs, "routerPolicyConfig">): PolicyConfig {
  if (argv.routerPolicyConfig === undefined) return { instances: {}, warnings: [] };
  try {
    return readPolicyConfig(argv.routerPolicyConfig);
  } catch (err) {
    throw err instanceof PolicyConfigError ? new CliError(err.message) : err;
  }
}

/** The router's settings: the routing flags, then the --load-aware preset (kv_router_args.py order). */
export function routerConfigFrom(argv: ServeArgs): RouterConfig {
  // Flags not given take kv-router's tuned defaults, or Dynamo's with --dynamo-defaults or a Dynamo preset.
  const defaults = argv.dynamoDefaults || argv.loadAware || argv.agentic ? DYNAMO_DEFAULTS : KV_ROUTER_DEFAULTS;
  const base: RouterConfig = {
    ...DEFAULT_ROUTER_CONFIG,
    // Unset (not given) means Dynamo's weight; given, it also picks the cost policy (defaultPolicy.ts).
    overlapScoreCredit: argv.routerKvOverlapScoreCredit ?? DYNAMO_COST_WEIGHTS.overlapScoreCredit,
    overlapScoreCreditDecay: argv.routerKvOverlapScoreCreditDecay ?? DYNAMO_COST_WEIGHTS.overlapScoreCreditDecay,
    prefillLoadScale: argv.routerPrefillLoadScale ?? defaults.prefillLoadScale,
    decodeActiveRequestWeight: argv.routerDecodeActiveRequestWeight ?? DYNAMO_COST_WEIGHTS.decodeActiveRequestWeight,
    trackPrefillTokens: argv.routerTrackPrefillTokens,
    assumeKvReuse: argv.routerAssumeKvReuse,
    eagle: argv.eagle,
    activeRequestTtlMs: argv.activeRequestTtl * 1000,
    workerLeaseTtlMs: argv.workerLeaseTtl * 1000,
    approxMaxBlocks: argv.routerMaxTreeSize,
    hostCacheHitWeight: argv.routerHostCacheHitWeight,
    diskCacheHitWeight: argv.routerDiskCacheHitWeight,
    lowerTierMaxBlocks: argv.maxBlocks,
    maxDpRanks: argv.maxDpRanks,
    maxActiveRequests: argv.maxActiveRequests,
    maxActiveBlocks: argv.maxActiveBlocks,
    defaultMaxNumBatchedTokens: argv.defaultMaxNumBatchedTokens,
    ttftDecodeSlowdownPerBlock: argv.routerTtftDecodeSlowdownPerBlock,
  };
  const router: RouterConfig = {
    ...routingSettingsFrom(argv, base, defaults),
    approxCachePolicy: argv.routerApproximateCachePolicy as ApproximateCachePolicy,
    conditionalDisagg: conditionalDisaggSettingsOf(argv),
  };
  if (!argv.loadAware) return router;
  // _LOAD_AWARE_KWARG_OVERRIDES (kv_router_args.py), predict-on-route (router_predicted_ttl_secs None) included.
  return { ...router, overlapScoreCredit: 0, useKvEvents: false, trackActiveBlocks: true, assumeKvReuse: false, trackPrefillTokens: true, predictedTtlMs: 0 };
}

/** --indexer-shards, else Dynamo's --router-event-threads (1 = single-threaded), else one per spare core. */
function indexerShardsFrom(argv: ServeArgs): number {
  if (argv.indexerShards !== undefined) return argv.indexerShards;
  if (argv.routerEventThreads !== undefined) return argv.routerEventThreads > 1 ? argv.routerEventThreads : 0;
  return defaultIndexerShards(availableParallelism());
}

/** The flags --agentic overrides, with their spellings. */
const AGENTIC_OVERRIDES = [
  ["router-kv-overlap-score-credit"],
  ["router-prefill-load-scale"],
  ["router-decode-active-request-weight"],
  ["kv-overlap-score-weight", "router-kv-overlap-score-weight", "overlap-score-weight"],
];

/** Start-up warnings for settings given with no effect, or with Dynamo's deprecations. */
export function startupWarnings(argv: ServeArgs, cliArgs: readonly string[] = process.argv.slice(2), env = process.env): string[] {
  const warnings = unsupportedFlagWarnings(argv, cliArgs, env);
  if (givenAs(["block-size", "router-block-size", "kv-cache-block-size"], cliArgs, env) === undefined) {
    warnings.push(`no --block-size given: using Dynamo's default ${DYNAMO_BLOCK_SIZE}; it must equal the engines' KV block size or no prefix will match`);
  }
  warnings.push(...policyConfigOf(argv).warnings);
  if (argv.agentic) {
    const overridden = AGENTIC_OVERRIDES.map((names) => givenAs(names, cliArgs, env)).filter((as) => as !== undefined);
    if (overridden.length > 0) warnings.push(`--agentic sets the overlap credit, prefill load scale and decode active-request weight; ${overridden.join(", ")} ignored (as in Dynamo)`);
  }
  if (argv.routerSessionAffinityMode !== undefined && argv.sessionAffinityTtlSecs === 0) {
    warnings.push("--router-session-affinity-mode has no effect without --router-session-affinity-ttl-secs (affinity is off)");
  }
  if (argv.kvOverlapScoreWeight !== undefined && !argv.agentic) {
    const as = givenAs(["kv-overlap-score-weight", "router-kv-overlap-score-weight", "overlap-score-weight"], cliArgs, env) ?? "--kv-overlap-score-weight";
    warnings.push(`${as} is deprecated (as in Dynamo): it sets --router-prefill-load-scale${argv.kvOverlapScoreWeight === 0 ? " and, being 0, --router-kv-overlap-score-credit 0" : ""}`);
  }
  const costPolicy = costPolicyWarning(argv);
  if (costPolicy) warnings.push(costPolicy);
  const protocolWarning = tracingSettingsFrom(argv.otlpEndpoint, env) && otlpProtocolWarning(env);
  if (protocolWarning) warnings.push(protocolWarning);
  return warnings;
}

/** Dynamo's presets and --dynamo-defaults mean Dynamo's cost function anyway; only a weight or the TTFT cost moving the default is news. */
const COST_PRESETS = ["--dynamo-defaults", "--agentic", "--load-aware"];

/**
 * Says when a cost flag, with no policy named, made the cost policy run
 * instead of the default; or, with kv-adaptive named, that the flag does not
 * move it (it sets its own weights).
 */
function costPolicyWarning(argv: ServeArgs): string | undefined {
  const named = selectedPolicyName(argv.routerWorkerSelectionPolicy) ?? policyConfigOf(argv).selected;
  if (named === DEFAULT_POLICY) {
    const { askedBy } = unnamedPolicy(argv);
    if (askedBy === undefined) return undefined;
    return `${askedBy} sets the cost function's weights, which ${DEFAULT_POLICY} does not use (it sets its own); it applies to requests that override a weight, which the cost policy routes`;
  }
  if (named !== undefined) return undefined;
  const { name, askedBy } = unnamedPolicy(argv);
  if (askedBy === undefined || COST_PRESETS.includes(askedBy)) return undefined;
  return `${askedBy} sets the cost function, so the cost policy ${name} routes instead of the default ${DEFAULT_POLICY} (which sets its own weights); --router-worker-selection-policy names a policy`;
}

export function serverOptionsFrom(argv: ServeArgs): ServerOptions {
  const router = routerConfigFrom(argv);
  return {
    router,
    admission: {
      thresholds: {
        routerQueueThreshold: router.queueThreshold,
        activeDecodeBlocksThreshold: argv.activeDecodeBlocksThreshold,
        activePrefillTokensThreshold: argv.activePrefillTokensThreshold,
        activePrefillTokensThresholdFrac: argv.activePrefillTokensThresholdFrac,
      },
      queuePolicy: router.queuePolicy,
      maxQueued: argv.routerMaxQueued,
      maxWaitMs: argv.routerMaxQueueWaitSecs > 0 ? argv.routerMaxQueueWaitSecs * 1000 : undefined,
    },
    host: argv.host,
    grpcPort: argv.grpcPort,
    metricsPort: argv.metricsPort < 0 ? undefined : argv.metricsPort,
    httpPort: argv.httpPort < 0 ? undefined : argv.httpPort,
    eppPort: argv.eppPort < 0 ? undefined : argv.eppPort,
    models: modelSpecFrom(argv.tokenizer ?? [], argv.loraAdapter ?? []),
    maxBodyBytes: argv.maxBodyBytes,
    eppMaxInFlight: argv.eppMaxInFlight,
    eppFallbacks: argv.eppFallbacks,
    eppMaxBufferedBytes: argv.eppMaxBufferedBytes,
    maxTokens: argv.maxTokens,
    seed: argv.seed,
    tls:
      argv.tlsCert && argv.tlsKey
        ? {
            cert: readFileSync(argv.tlsCert),
            key: readFileSync(argv.tlsKey),
            clientCa: argv.tlsClientCa ? readFileSync(argv.tlsClientCa) : undefined,
          }
        : undefined,
    authToken: argv.authTokenFile ? readFileSync(argv.authTokenFile, "utf8").trim() : argv.authToken,
    maxMessageBytes: argv.maxMessageBytes,
    maxConcurrentStreams: argv.maxConcurrentStreams,
    flowControlWindow: argv.grpcFlowControlWindow,
    metricsMaxWorkers: argv.metricsMaxWorkers,
    indexerShards: indexerShardsFrom(argv),
    maxBlocks: argv.maxBlocks,
    ingestThreads: argv.ingestThreads,
    maxWorkerRanks: argv.maxWorkerRanks,
    maxConcurrentDumps: argv.maxConcurrentDumps,
    maxConnectionsPerPort: argv.maxConnectionsPerPort,
    authReads: argv.authReads,
    tracing: tracingSettingsFrom(argv.otlpEndpoint),
    eventSources: [...(argv.natsUrl ? [natsSourceFrom(argv)] : []), ...zmqSourceFrom(argv), ...discoverySourcesFrom(argv)],
  };
}

function discoveryBackendOf(argv: ServeArgs) {
  return resolveDiscoveryBackend(argv.discoveryBackend, {
    etcdEndpointsSet: process.env.ETCD_ENDPOINTS !== undefined,
    natsMode: argv.natsUrl !== undefined,
    natsDiscovery: argv.natsDiscovery,
  });
}

/** Dynamo's etcd or file discovery (and the ZMQ event plane its publishers announce there), or Kubernetes pods. */
function discoverySourcesFrom(argv: ServeArgs) {
  const backend = discoveryBackendOf(argv);
  if (backend === "kubernetes") return [kubernetesDiscoveryFrom(argv, argv.workerLeaseTtl * 1000)];
  if (backend !== "etcd" && backend !== "file") return [];
  return dynamoDiscoverySources({
    backend,
    endpoint: argv.endpoint,
    etcdEndpoints: parseEtcdEndpoints(argv.etcdEndpoints),
    fileKvRoot: argv.fileKv,
    fileKvTtlMs: argv.fileKvTtlSecs * 1000,
    workerLeaseMs: argv.workerLeaseTtl * 1000,
    zmqEventPlane: argv.kvEvents,
  });
}

/** The ZeroMQ engine feed: --zmq-worker, --workers-file, and workers registering a zmq_endpoint. */
function zmqSourceFrom(argv: ServeArgs): ZmqEventSource[] {
  const endpoints = (argv.zmqWorker ?? []).map(parseZmqWorkerSpec);
  if (!argv.kvEvents) return [];
  return [
    new ZmqEventSource({
      endpoints,
      workersFile: argv.workersFile,
      replayTimeoutMs: argv.zmqReplayTimeout * 1000,
      loadWeights: { queue: argv.engineQueueWeight, kvUsage: argv.engineKvUsageWeight },
    }),
  ];
}

function natsSourceFrom(argv: ServeArgs): NatsEventSource {
  return new NatsEventSource({
    connect: connectOptionsFromFlags(argv),
    endpoint: argv.endpoint,
    routerId: argv.routerId ?? defaultRouterId(argv.grpcPort),
    replicaSync: argv.routerReplicaSync,
    snapshotThreshold: argv.routerSnapshotThreshold,
    resetStates: argv.routerResetStates,
    streamReplicas: argv.natsStreamReplicas,
    eventPlane: argv.natsEventPlane,
    discovery: discoveryBackendOf(argv) === "nats-kv",
  });
}
