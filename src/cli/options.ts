// Command-line flags: Dynamo's router flag set (current and older spellings, with
// Dynamo's meaning; the ones not implemented yet are accepted with a warning, see
// dynamoFlags.ts) plus kv-router's own. Every flag can come from a DYN_<FLAG>
// environment variable; NATS_SERVER and NATS_AUTH_* work as in Dynamo.
import { existsSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import type { Argv } from "yargs";
import { DEFAULT_ETCD_ENDPOINTS, discoveryBackendProblem, parseEtcdEndpoints } from "./discoveryFlags.js";
import { DEFAULT_METRICS_MAX_WORKERS } from "../metrics/metrics.js";
import { DEFAULT_TTFT_DECODE_SLOWDOWN_PER_BLOCK, DYNAMO_DEFAULT_MAX_BATCHED_TOKENS } from "../router/types.js";
import { DEFAULT_ADMISSION_CONFIG } from "../router/admissionQueue.js";
import { DYNAMO_COST_WEIGHTS } from "../scheduler/costFunction.js";
import { DYNAMO_DEFAULTS, KV_ROUTER_DEFAULTS } from "../scheduler/defaults.js";
import { DEFAULT_FLOW_CONTROL_WINDOW, HTTP2_DEFAULT_WINDOW, HTTP2_MAX_WINDOW } from "../server/flowControl.js";
import { SLOT_LIMIT } from "../indexer/compactCore.js";
import { sharedReadsByDefault } from "../indexer/sharedNodes.js";
import { parseZmqWorkerSpec } from "../sources/engineZmq/endpoints.js";
import { DEFAULT_MAX_CONNECTIONS_PER_PORT } from "../util/connectionCap.js";
import { HELP_GROUP, UNSUPPORTED_FLAGS, unsupportedDynamoOptions } from "./dynamoFlags.js";
import { ROUTING_FLAGS, routingFlagProblems } from "./routingFlags.js";
import { disaggAndRetentionProblems } from "./disaggFlags.js";
import { APPROXIMATE_CACHE_POLICIES } from "../indexer/approximateLru.js";
import { otlpEndpointOf, otlpEndpointProblem } from "./tracingFlags.js";
import { KUBERNETES_FLAGS, KUBERNETES_FLAG_NAMES, kubernetesFlagProblems } from "./kubernetesFlags.js";

/**
 * One shard per spare core, and on 2 cores one shard where queries read the
 * shard's memory without waking it (x86-64, `sharedReadsByDefault`): the
 * main thread then only receives, peeks and acknowledges while the shard
 * decodes, hashes and applies (steady gRPC ingest 1.3-1.4x the index in the
 * main thread with token ids, docs/indexer.md). Elsewhere on 2 cores, and on
 * 1, none: each query would pay a cross-thread wake-up (50-100 us measured),
 * more than the whole in-thread lookup.
 */
export function defaultIndexerShards(cores: number, sharedReads = sharedReadsByDefault()): number {
  if (cores >= 3) return cores - 1;
  return cores === 2 && sharedReads ? 1 : 0;
}

/**
 * Where each flag appears in --help: Dynamo's sections first (as its router docs
 * group them), then kv-router's own. Adding a flag? Put its name in one list here.
 */
const HELP_GROUPS: Record<string, string[]> = {
  [HELP_GROUP.dynamoRouter]: ["endpoint", "block-size"],
  [HELP_GROUP.routing]: [
    "router-kv-overlap-score-credit",
    "router-kv-overlap-score-credit-decay",
    "router-prefill-load-scale",
    "dynamo-defaults",
    "router-decode-active-request-weight",
    "kv-overlap-score-weight",
    "load-aware",
    "agentic",
    "router-conditional-disagg",
    "router-conditional-disagg-config",
    "router-worker-selection-policy",
    "router-policy-config",
    "router-session-affinity-mode",
    "router-temperature",
    "router-track-prefill-tokens",
    "router-queue-threshold",
    "router-queue-policy",
  ],
  [HELP_GROUP.events]: ["kv-events", "router-durable-kv-events", "eagle"],
  [HELP_GROUP.tracking]: ["track-active-blocks", "router-assume-kv-reuse", "router-replica-sync", "active-request-ttl"],
  [HELP_GROUP.indexer]: [
    "router-ttl-secs",
    "router-approximate-cache-policy",
    "router-max-tree-size",
    "router-event-threads",
    "router-snapshot-threshold",
    "router-reset-states",
    "indexer-shards",
    "ingest-threads",
    "max-blocks",
  ],
  "Discovery (Dynamo's etcd and file stores, kv-router's NATS bucket):": ["discovery-backend", "etcd-endpoints", "file-kv", "file-kv-ttl-secs"],
  "Kubernetes discovery (pods by label selector or InferencePool):": KUBERNETES_FLAG_NAMES,
  "Scheduling (kv-router):": [
    "router-max-queued",
    "router-max-queue-wait-secs",
    "active-decode-blocks-threshold",
    "active-prefill-tokens-threshold",
    "active-prefill-tokens-threshold-frac",
    "default-max-num-batched-tokens",
    "router-predicted-ttl-secs",
    "session-affinity-ttl-secs",
    "session-affinity-slack",
    "router-cost",
    "router-prefill-tokens-per-sec",
    "router-ttft-decode-slowdown-per-block",
  ],
  "NATS (kv-router):": [
    "nats-url",
    "nats-user",
    "nats-password",
    "nats-token",
    "nats-creds",
    "nats-tls-ca",
    "nats-tls-cert",
    "nats-tls-key",
    "router-id",
    "nats-stream-replicas",
    "nats-event-plane",
    "nats-discovery",
  ],
  "Engine feeds and load (kv-router):": ["zmq-worker", "workers-file", "zmq-replay-timeout", "engine-queue-weight", "engine-kv-usage-weight"],
  "Server and security (kv-router):": [
    "host",
    "grpc-port",
    "metrics-port",
    "otlp-endpoint",
    "max-tokens",
    "seed",
    "worker-lease-ttl",
    "tls-cert",
    "tls-key",
    "tls-client-ca",
    "auth-token",
    "auth-token-file",
    "max-message-bytes",
    "max-concurrent-streams",
    "grpc-flow-control-window",
    "max-connections-per-port",
  ],
};

/** Dynamo's NATS client variables (lib/runtime/src/transports/nats.rs), as defaults of the NATS flags. */
export function natsEnvDefaults(env: NodeJS.ProcessEnv = process.env) {
  const user = env.NATS_AUTH_USERNAME !== undefined && env.NATS_AUTH_PASSWORD !== undefined;
  return {
    url: env.NATS_SERVER || undefined,
    // Dynamo takes the first of: user + password, token, credentials file.
    user: user ? env.NATS_AUTH_USERNAME : undefined,
    password: user ? env.NATS_AUTH_PASSWORD : undefined,
    token: !user ? env.NATS_AUTH_TOKEN : undefined,
    creds: !user && env.NATS_AUTH_TOKEN === undefined ? env.NATS_AUTH_CREDENTIALS_FILE : undefined,
  };
}

export function serveOptions<T>(y: Argv<T>) {
  const nats = natsEnvDefaults();
  const built = unsupportedDynamoOptions(y)
    .option("endpoint", {
      alias: "router-endpoint", // Dynamo's DYN_ROUTER_ENDPOINT
      type: "string",
      default: "dynamo.backend.generate",
      describe: "Where workers register, as namespace.component.endpoint",
    })
    .options(ROUTING_FLAGS)
    // Dynamo's cost terms (lib/kv-router/src/scheduling/selector.rs); see src/scheduler/costFunction.ts.
    // The three weights have no yargs default: set means given, which picks the cost policy (defaultPolicy.ts).
    .option("router-kv-overlap-score-credit", {
      type: "number",
      defaultDescription: String(DYNAMO_COST_WEIGHTS.overlapScoreCredit),
      describe: "Cost policies: credit per device-cached prompt block against the prefill load (0 = ignore the cache); given, it makes kv-router the policy unless one is named",
    })
    .option("router-kv-overlap-score-credit-decay", {
      type: "number",
      defaultDescription: String(DYNAMO_COST_WEIGHTS.overlapScoreCreditDecay),
      describe: "Cost policies: shrinks that credit on workers with more active prefill than the least loaded (1 halves it at one request's worth; 0 = off); given, it makes kv-router the policy unless one is named",
    })
    .option("router-prefill-load-scale", {
      type: "number",
      defaultDescription: `${KV_ROUTER_DEFAULTS.prefillLoadScale} (Dynamo: ${DYNAMO_DEFAULTS.prefillLoadScale})`,
      describe: "Cost policies: weight of the prefill load (after cache credits) against decode blocks; given, it makes kv-router the policy unless one is named",
    })
    .option("dynamo-defaults", {
      type: "boolean",
      default: false,
      describe: `Dynamo's defaults for the flags not given: Dynamo's cost function (policy kv-router with Dynamo's weights) unless a policy is named, --router-prefill-load-scale ${DYNAMO_DEFAULTS.prefillLoadScale}, --router-predicted-ttl-secs ${DYNAMO_DEFAULTS.predictedTtlSecs}, --router-session-affinity-mode ${DYNAMO_DEFAULTS.sessionAffinityMode}`,
    })
    .option("router-decode-active-request-weight", {
      type: "number",
      defaultDescription: String(DYNAMO_COST_WEIGHTS.decodeActiveRequestWeight),
      describe: "Cost policies: cost, in blocks, of each active request on a worker; given, it makes kv-router the policy unless one is named",
    })
    .option("load-aware", {
      alias: "router-load-aware", // DYN_ROUTER_LOAD_AWARE
      type: "boolean",
      default: false,
      describe: "Dynamo's load-only preset: overlap credit 0, no KV events, no KV-reuse assumption, load tracking on; the cost policy kv-router unless a policy is named",
    })
    .option("router-conditional-disagg", {
      type: "boolean",
      default: false,
      describe:
        "Dynamo's conditional disaggregation: a FindBestWorker naming prefill_workers may answer 'prefill on the decode worker' (policy isl_bounding by default: few uncached prompt tokens there); needs KV events",
    })
    .option("router-conditional-disagg-config", {
      type: "string",
      describe:
        "JSON object: policy (isl_bounding|prefill_load|isl_or_load), eff_isl_threshold (2048), eff_isl_ratio_threshold (0.7), prefill_busy_threshold (default: --router-queue-threshold), decode_busy_threshold (off)",
    })
    .option("router-approximate-cache-policy", {
      type: "string",
      choices: APPROXIMATE_CACHE_POLICIES,
      default: "ttl",
      describe:
        "Approximate mode (--no-kv-events) retention: ttl (--router-ttl-secs) or lru (each rank holds what fits its RegisterWorker total_kv_blocks; blocks of active requests are never evicted; ranks of unknown size fall back to ttl)",
    })
    .option("router-track-prefill-tokens", {
      type: "boolean",
      default: DYNAMO_COST_WEIGHTS.trackPrefillTokens,
      describe: "Count prompt tokens as prefill load (--no-router-track-prefill-tokens for decode-only pools)",
    })
    .option("router-host-cache-hit-weight", {
      type: "number",
      default: 0.75,
      describe: "Worth of a prompt block found in a worker's host memory, as a fraction of a GPU hit",
    })
    .option("router-disk-cache-hit-weight", {
      type: "number",
      default: 0.25,
      describe: "Worth of a prompt block found on a worker's disk or external store, as a fraction of a GPU hit",
    })
    .option("eagle", {
      type: "boolean",
      default: false,
      describe:
        "The workers run Eagle speculative decoding (their model card's runtime_config.enable_eagle): hash requests in windows of block-size + 1 tokens, stride block-size, as Dynamo does",
    })
    .option("router-durable-kv-events", {
      alias: "durable-kv-events",
      type: "boolean",
      describe: "Dynamo's JetStream event mode: NATS mode always reads the durable stream (and the event plane), so this changes nothing",
    })
    .option("router-assume-kv-reuse", {
      alias: "assume-kv-reuse",
      type: "boolean",
      default: true,
      describe: "Active requests with a common prefix share its blocks; --no-router-assume-kv-reuse counts each request's blocks apart",
    })
    .option("router-max-tree-size", {
      type: "number",
      default: 2 ** 20,
      describe: "Approximate mode: blocks tracked before pruning to 80%",
    })
    .option("router-event-threads", {
      type: "number",
      describe: "Dynamo's KV indexer threads: when given (and --indexer-shards is not), N > 1 runs N index shard threads, 1 none",
    })
    .option("active-request-ttl", {
      alias: "router-active-request-expiry-secs", // Dynamo's DYN_ROUTER_ACTIVE_REQUEST_EXPIRY_SECS
      type: "number",
      default: 300,
      describe: "Seconds after which a request never freed stops counting as load",
    })
    .option("worker-lease-ttl", {
      type: "number",
      default: 10,
      describe: "Default lease, in seconds, of a registered worker",
    })
    .option("router-replica-sync", {
      type: "boolean",
      default: false,
      describe: "Share active-request load between router replicas over NATS (needs --nats-url)",
    })
    .option("router-snapshot-threshold", {
      type: "number",
      default: 1_000_000,
      describe: "Unsnapshotted event-stream messages before one replica snapshots the index to the NATS object store (0 = never; needs --nats-url)",
    })
    .option("router-reset-states", {
      type: "boolean",
      default: false,
      describe: "Purge the event stream and delete the snapshot at start (needs --nats-url)",
    })
    .option("nats-url", {
      type: "string",
      default: nats.url,
      defaultDescription: "$NATS_SERVER",
      describe: "NATS mode: server URL(s), comma-separated for a cluster (e.g. nats://10.0.0.1:4222,nats://10.0.0.2:4222)",
    })
    .option("nats-user", { type: "string", default: nats.user, defaultDescription: "$NATS_AUTH_USERNAME", describe: "NATS user name (with --nats-password)" })
    .option("nats-password", { type: "string", default: nats.password, defaultDescription: "$NATS_AUTH_PASSWORD", describe: "NATS password" })
    .option("nats-token", { type: "string", default: nats.token, defaultDescription: "$NATS_AUTH_TOKEN", describe: "NATS authentication token" })
    .option("nats-creds", { type: "string", default: nats.creds, defaultDescription: "$NATS_AUTH_CREDENTIALS_FILE", describe: "NATS .creds file (JWT + nkey seed)" })
    .option("nats-tls-ca", { type: "string", describe: "PEM CA bundle that signed the NATS servers' certificates" })
    .option("nats-tls-cert", { type: "string", describe: "PEM client certificate for NATS mutual TLS (with --nats-tls-key)" })
    .option("nats-tls-key", { type: "string", describe: "PEM private key of --nats-tls-cert" })
    .option("router-id", {
      type: "string",
      describe: "This replica's id in NATS mode: names its durable consumer (default kv-router-<host>-<grpc port>)",
    })
    .option("nats-stream-replicas", {
      type: "number",
      default: 1,
      describe: "Replicas of the stream and buckets the router creates (3 on a 3-node NATS cluster)",
    })
    .option("nats-event-plane", {
      type: "boolean",
      default: true,
      describe: "Also read Dynamo's core-NATS MessagePack event plane: KV events (namespace.<ns>.component.<c>[.endpoint.<ep>].kv-events) and the engines' forward-pass metrics (...forward-pass-metrics)",
    })
    .option("nats-discovery", {
      type: "boolean",
      default: true,
      describe: "Watch the endpoint's NATS KV bucket for worker registrations",
    })
    .option("discovery-backend", {
      type: "string",
      describe:
        "Where workers are discovered (DYN_DISCOVERY_BACKEND): etcd (Dynamo's default, also kv_store), file (DYN_FILE_KV), " +
        "nats-kv (the endpoint's NATS KV bucket), kubernetes (Ready pods by --k8s-selector or --k8s-inference-pool), none. " +
        "Default: etcd when ETCD_ENDPOINTS is set, nats-kv with --nats-url, else none",
    })
    .options(KUBERNETES_FLAGS)
    .option("etcd-endpoints", {
      type: "string",
      default: process.env.ETCD_ENDPOINTS ?? DEFAULT_ETCD_ENDPOINTS,
      defaultDescription: "$ETCD_ENDPOINTS or http://localhost:2379",
      describe: "etcd discovery: client URLs, comma-separated (Dynamo's ETCD_ENDPOINTS)",
    })
    .option("file-kv", {
      type: "string",
      default: join(tmpdir(), "dynamo_store_kv"),
      defaultDescription: "$TMPDIR/dynamo_store_kv",
      describe: "file discovery: the directory Dynamo's workers write (DYN_FILE_KV)",
    })
    .option("file-kv-ttl-secs", {
      type: "number",
      default: 10,
      describe: "file discovery: seconds after which a record file not touched by its worker counts as gone (DYN_FILE_KV_TTL_SECS)",
    })
    .option("zmq-worker", {
      type: "string",
      array: true,
      describe:
        "Subscribe to an engine's ZeroMQ KV events (vLLM/SGLang --kv-events-config): " +
        "WORKER_ID=tcp://host:port[,replay=tcp://host:port][,dp_rank=N][,engine=vllm|sglang][,topic=T][,metrics=http://host:port/metrics][,address=ip:port]; repeatable",
    })
    .option("workers-file", {
      type: "string",
      describe: "YAML/JSON list of engine ZeroMQ endpoints (fields as in --zmq-worker), re-read when it changes",
    })
    .option("zmq-replay-timeout", {
      type: "number",
      default: 2,
      describe: "Seconds a replay request may take before the missed KV events count as lost (worker marked stale)",
    })
    .option("engine-queue-weight", {
      type: "number",
      default: 0,
      describe: "Cost, in blocks, per request queued inside an engine (read from the metrics= URL of --zmq-worker; 0 = off)",
    })
    .option("engine-kv-usage-weight", {
      type: "number",
      default: 0,
      describe: "Cost, in blocks, of an engine's full KV cache, scaled by its reported usage (metrics= URL; 0 = off)",
    })
    // Scheduling layer (issue 13): queueing and admission, predict-on-route, session affinity.
    .option("router-max-queue-wait-secs", {
      type: "number",
      default: DEFAULT_ADMISSION_CONFIG.maxWaitMs! / 1000,
      describe: "Longest a call waits in the queue before RESOURCE_EXHAUSTED, whatever its deadline (0 = no limit)",
    })
    .option("active-decode-blocks-threshold", {
      type: "number",
      describe: "Worker busy past this fraction of its total_kv_blocks in active decode blocks; all busy = RESOURCE_EXHAUSTED",
    })
    .option("active-prefill-tokens-threshold", { type: "number", describe: "Worker busy past this many active prefill tokens" })
    .option("active-prefill-tokens-threshold-frac", {
      type: "number",
      describe: "Worker busy past this fraction of its max_num_batched_tokens in active prefill tokens",
    })
    .option("default-max-num-batched-tokens", {
      type: "number",
      default: DYNAMO_DEFAULT_MAX_BATCHED_TOKENS,
      describe: "max_num_batched_tokens assumed for workers that do not report it at registration",
    })
    .option("router-ttft-decode-slowdown-per-block", {
      type: "number",
      default: DEFAULT_TTFT_DECODE_SLOWDOWN_PER_BLOCK,
      describe: "ttft cost: prefill slows by this fraction per active decode block on the worker",
    })
    .option("host", { type: "string", default: "0.0.0.0", describe: "Address to listen on" })
    .option("grpc-port", { type: "number", default: 50051, describe: "gRPC port (0 = pick a free one)" })
    .option("metrics-port", {
      type: "number",
      default: 9090,
      describe: "Prometheus /metrics port (0 = pick a free one, -1 = off)",
    })
    .option("metrics-max-workers", {
      type: "number",
      default: DEFAULT_METRICS_MAX_WORKERS,
      describe: "Most workers given kvrouter_worker_* series on /metrics (the rest are counted in kvrouter_worker_series_omitted; 0 = none)",
    })
    .option("otlp-endpoint", {
      type: "string",
      defaultDescription: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else off",
      describe: "OpenTelemetry collector (OTLP/gRPC, e.g. http://otel-collector:4317): export a span per FindBestWorker, Free, MarkPrefillCompleted and EPP pick",
    })
    .option("http-port", {
      type: "number",
      default: -1,
      describe: "HTTP/JSON port: every unary RPC as Connect JSON, /healthz, /readyz, the scorer API /query (0 = pick a free one, -1 = off)",
    })
    .option("epp-port", {
      type: "number",
      default: -1,
      describe: "Gateway endpoint picker port: Envoy ext_proc (GAIE EPP protocol) + gRPC health (0 = pick a free one, -1 = off)",
    })
    .option("tokenizer", {
      type: "string",
      array: true,
      describe: "[MODEL=]DIR: a Hugging Face model directory (tokenizer.json, tokenizer_config.json with the chat template) the EPP tokenizes prompts with; without MODEL= it serves every model name; repeatable",
    })
    .option("lora-adapter", {
      type: "string",
      array: true,
      describe: "NAME=BASE_MODEL: a LoRA adapter the EPP routes (OpenAI model name NAME, tokenized as BASE_MODEL); repeatable",
    })
    .option("max-body-bytes", { type: "number", default: 16 * 1024 * 1024, describe: "Largest HTTP request body the EPP and the scorer API accept (413 beyond)" })
    .option("epp-max-in-flight", { type: "number", default: 0, describe: "Most EPP requests holding load at once; more are answered 429 (0 = no limit)" })
    .option("epp-max-buffered-bytes", {
      type: "number",
      default: 256 * 1024 * 1024,
      describe: "Most request-body bytes all EPP streams hold at once (each under --max-body-bytes); a body past it is answered 503",
    })
    .option("epp-fallbacks", { type: "number", default: 2, describe: "Endpoints the EPP lists after the chosen one (x-gateway-destination-endpoint), for the proxy's retries" })
    .option("max-tokens", { type: "number", default: 1 << 20, describe: "Most token ids in one request" })
    .option("seed", { type: "number", describe: "Seed for tie-breaks and sampling (reproducible decisions)" })
    .option("tls-cert", { type: "string", describe: "PEM certificate chain: serve gRPC over TLS (with --tls-key)" })
    .option("tls-key", { type: "string", describe: "PEM private key of --tls-cert" })
    .option("tls-client-ca", { type: "string", describe: "PEM CA bundle: require client certificates it signed (mutual TLS)" })
    .option("auth-token", { type: "string", describe: "Shared secret that state-changing calls must send as 'authorization: Bearer <token>'" })
    .option("auth-token-file", { type: "string", describe: "Read --auth-token from this file (keeps it out of ps)" })
    .option("max-message-bytes", { type: "number", default: 64 * 1024 * 1024, describe: "Largest gRPC request message accepted" })
    .option("max-concurrent-streams", { type: "number", default: 1024, describe: "Most concurrent calls per client connection" })
    .option("grpc-flow-control-window", {
      type: "number",
      default: DEFAULT_FLOW_CONTROL_WINDOW,
      describe: "HTTP/2 receive window per stream and per connection, bytes: what a client may send ahead of the router (65535 = HTTP/2's default)",
    })
    .option("indexer-shards", {
      type: "number",
      defaultDescription: "one per spare core (on 2 cores: 1 on x86-64, else 0)",
      describe: "KV index shards on worker threads (0 = in the main thread); with shards (and no --ingest-threads) IngestKvEvents messages are decoded and applied on them",
    })
    .option("ingest-threads", {
      type: "number",
      default: defaultIngestThreads(availableParallelism()),
      describe:
        "Threads decoding and hashing IngestKvEvents messages (0 = in the main thread, or on the index shards when there are some); one that dies is restarted, and past 5 restarts a minute the router exits with code 1",
    })
    .option("max-blocks", {
      type: "number",
      default: 0,
      describe: "Most (block, worker) entries indexed; beyond it the oldest-stored are evicted (0 = unbounded)",
    })
    // Hardening limits (docs/RELIABILITY.md): what one client or fleet may make the router hold.
    .option("max-worker-ranks", {
      type: "number",
      default: 65_536,
      describe: "Most (worker, dp_rank) pairs the index and the registry each hold; more are refused with RESOURCE_EXHAUSTED (up to 1048576)",
    })
    .option("max-dp-ranks", { type: "number", default: 1024, describe: "Most dp_ranks one RegisterWorker may name" })
    .option("max-active-requests", {
      type: "number",
      default: 1_000_000,
      describe: "Most requests routed with a request_id and not yet freed; more are refused with RESOURCE_EXHAUSTED",
    })
    .option("max-active-blocks", {
      type: "number",
      default: 1 << 26,
      describe: "Most prompt blocks held by active requests (decode load) in total; more are refused with RESOURCE_EXHAUSTED",
    })
    .option("max-concurrent-dumps", { type: "number", default: 2, describe: "Most DumpIndex calls streaming at once" })
    .option("max-connections-per-port", {
      type: "number",
      default: DEFAULT_MAX_CONNECTIONS_PER_PORT,
      describe: "Most connections each port (gRPC, metrics, HTTP, EPP) holds; more are closed as they arrive, so idle sockets on one port cannot starve the others",
    })
    .option("auth-reads", {
      type: "boolean",
      default: false,
      describe: "With --auth-token, also require the token for DumpIndex, ListWorkers and FindBestWorker explain",
    })
    .check((argv) => {
      const problems: string[] = [];
      const int = (name: string, v: number, min: number, max: number) => {
        if (!Number.isInteger(v) || v < min || v > max) problems.push(`--${name} must be an integer in [${min}, ${max}], got ${v}`);
      };
      const nonNegative = (name: string, v: number) => {
        if (!Number.isFinite(v) || v < 0) problems.push(`--${name} must be a number >= 0, got ${v}`);
      };
      problems.push(...routingFlagProblems(argv));
      problems.push(...disaggAndRetentionProblems(argv));
      for (const name of ["router-host-cache-hit-weight", "router-disk-cache-hit-weight"]) nonNegative(name, argv[name] as number);
      // Not given: Dynamo's weight (config.ts).
      for (const name of ["router-kv-overlap-score-credit", "router-kv-overlap-score-credit-decay", "router-decode-active-request-weight"]) {
        if (argv[name] !== undefined) nonNegative(name, argv[name] as number);
      }
      if (argv.routerPrefillLoadScale !== undefined) nonNegative("router-prefill-load-scale", argv.routerPrefillLoadScale as number);
      if (argv.routerEventThreads !== undefined) int("router-event-threads", argv.routerEventThreads as number, 1, 64);
      int("grpc-port", argv.grpcPort as number, 0, 65_535);
      int("metrics-port", argv.metricsPort as number, -1, 65_535);
      int("http-port", argv.httpPort as number, -1, 65_535);
      int("epp-port", argv.eppPort as number, -1, 65_535);
      int("max-body-bytes", argv.maxBodyBytes as number, 1024, 2 ** 31 - 1);
      int("epp-max-in-flight", argv.eppMaxInFlight as number, 0, 2 ** 31 - 1);
      int("epp-fallbacks", argv.eppFallbacks as number, 0, 16);
      int("epp-max-buffered-bytes", argv.eppMaxBufferedBytes as number, 1024, Number.MAX_SAFE_INTEGER);
      if ((argv.eppMaxBufferedBytes as number) < (argv.maxBodyBytes as number)) {
        problems.push(`--epp-max-buffered-bytes (${argv.eppMaxBufferedBytes}) must be at least --max-body-bytes (${argv.maxBodyBytes}), or the largest body could never be read`);
      }
      for (const spec of (argv.tokenizer as string[] | undefined) ?? []) {
        const dir = spec.includes("=") ? spec.slice(spec.indexOf("=") + 1) : spec;
        if (!existsSync(dir)) problems.push(`--tokenizer ${spec}: no such directory ${dir}`);
      }
      for (const spec of (argv.loraAdapter as string[] | undefined) ?? []) {
        if (!/^[^=]+=[^=]+$/.test(spec)) problems.push(`--lora-adapter ${JSON.stringify(spec)}: expected NAME=BASE_MODEL`);
      }
      int("max-tokens", argv.maxTokens as number, 1, 1 << 30);
      int("metrics-max-workers", argv.metricsMaxWorkers as number, 0, 100_000);
      const otlp = otlpEndpointOf(argv.otlpEndpoint as string | undefined);
      const otlpProblem = otlp && otlpEndpointProblem(otlp);
      if (otlpProblem) problems.push(otlpProblem);
      int("router-max-tree-size", argv.routerMaxTreeSize as number, 1, 2 ** 40);
      for (const name of ["active-request-ttl", "worker-lease-ttl"] as const) {
        const v = argv[name] as number;
        if (!Number.isFinite(v) || v <= 0) problems.push(`--${name} must be a number > 0, got ${v}`);
      }
      if (!/^[^.\s]+\.[^.\s]+\.[^.\s]+$/.test(argv.endpoint as string)) {
        problems.push(`--endpoint must look like namespace.component.endpoint, got "${argv.endpoint}"`);
      }
      if ((argv.tlsCert === undefined) !== (argv.tlsKey === undefined)) problems.push("--tls-cert and --tls-key go together");
      if (argv.tlsClientCa !== undefined && argv.tlsCert === undefined) problems.push("--tls-client-ca needs --tls-cert and --tls-key");
      if (argv.tlsClientCa !== undefined && (argv.httpPort as number) >= 0) {
        problems.push("--http-port cannot be used with --tls-client-ca: the HTTP port is plain HTTP and asks for no client certificate, so it would bypass mutual TLS; leave --http-port off (-1)");
      }
      if (argv.authToken !== undefined && argv.authTokenFile !== undefined) problems.push("give --auth-token or --auth-token-file, not both");
      for (const name of ["tls-cert", "tls-key", "tls-client-ca", "auth-token-file"]) {
        const file = argv[name] as string | undefined;
        if (file !== undefined && !existsSync(file)) problems.push(`--${name}: no such file ${file}`);
      }
      int("max-message-bytes", argv.maxMessageBytes as number, 1024, 2 ** 31 - 1);
      int("max-concurrent-streams", argv.maxConcurrentStreams as number, 1, 2 ** 31 - 1);
      int("grpc-flow-control-window", argv.grpcFlowControlWindow as number, HTTP2_DEFAULT_WINDOW, HTTP2_MAX_WINDOW);
      if (argv.indexerShards !== undefined) int("indexer-shards", argv.indexerShards as number, 0, 64);
      int("max-blocks", argv.maxBlocks as number, 0, 2 ** 31 - 1);
      int("ingest-threads", argv.ingestThreads as number, 0, 64);
      int("max-worker-ranks", argv.maxWorkerRanks as number, 1, SLOT_LIMIT);
      int("max-dp-ranks", argv.maxDpRanks as number, 1, 1 << 20);
      int("max-active-requests", argv.maxActiveRequests as number, 1, 2 ** 31 - 1);
      int("max-active-blocks", argv.maxActiveBlocks as number, 1, 2 ** 40);
      int("max-concurrent-dumps", argv.maxConcurrentDumps as number, 1, 1024);
      int("max-connections-per-port", argv.maxConnectionsPerPort as number, 1, 1 << 20);
      if (argv.authReads && argv.authToken === undefined && argv.authTokenFile === undefined) {
        problems.push("--auth-reads needs --auth-token or --auth-token-file");
      }
      int("router-snapshot-threshold", argv.routerSnapshotThreshold as number, 0, 2 ** 40);
      int("nats-stream-replicas", argv.natsStreamReplicas as number, 1, 5);
      if (argv.natsUrl !== undefined && !/^(nats|tls):\/\/[^,\s]+(,\s*(nats|tls):\/\/[^,\s]+)*$/.test(argv.natsUrl as string)) {
        const from = argv.natsUrl === process.env.NATS_SERVER ? " (from NATS_SERVER)" : "";
        problems.push(`--nats-url must be nats://host:port URLs separated by commas, got "${argv.natsUrl}"${from}`);
      }
      if ((argv.natsTlsCert === undefined) !== (argv.natsTlsKey === undefined)) problems.push("--nats-tls-cert and --nats-tls-key go together");
      for (const name of ["nats-creds", "nats-tls-ca", "nats-tls-cert", "nats-tls-key"]) {
        const file = argv[name] as string | undefined;
        if (file !== undefined && !existsSync(file)) problems.push(`--${name}: no such file ${file}`);
      }
      for (const spec of (argv.zmqWorker as string[] | undefined) ?? []) {
        try {
          parseZmqWorkerSpec(spec);
        } catch (err) {
          problems.push((err as Error).message);
        }
      }
      if (argv.workersFile !== undefined && !existsSync(argv.workersFile as string)) problems.push(`--workers-file: no such file ${argv.workersFile}`);
      nonNegative("zmq-replay-timeout", argv.zmqReplayTimeout as number);
      nonNegative("engine-queue-weight", argv.engineQueueWeight as number);
      nonNegative("engine-kv-usage-weight", argv.engineKvUsageWeight as number);
      for (const name of [
        "active-decode-blocks-threshold",
        "active-prefill-tokens-threshold",
        "active-prefill-tokens-threshold-frac",
        "router-max-queue-wait-secs",
        "router-ttft-decode-slowdown-per-block",
      ]) {
        const v = argv[name] as number | undefined;
        if (v !== undefined) nonNegative(name, v);
      }
      int("default-max-num-batched-tokens", argv.defaultMaxNumBatchedTokens as number, 1, 2 ** 40);
      if (!argv.kvEvents && (argv.zmqWorker !== undefined || argv.workersFile !== undefined)) {
        problems.push("--zmq-worker and --workers-file feed KV events; they cannot be used with --no-kv-events");
      }
      const backendProblem = discoveryBackendProblem(argv.discoveryBackend as string | undefined);
      if (backendProblem) problems.push(backendProblem);
      if (argv.discoveryBackend === "nats-kv" && argv.natsUrl === undefined) problems.push("--discovery-backend nats-kv needs --nats-url");
      problems.push(...kubernetesFlagProblems(argv as Parameters<typeof kubernetesFlagProblems>[0]));
      for (const url of parseEtcdEndpoints(argv.etcdEndpoints as string)) {
        if (!/^https?:\/\/[^\s/]+$/.test(url)) problems.push(`--etcd-endpoints / ETCD_ENDPOINTS: "${url}" is not an http(s)://host:port URL`);
      }
      const ttl = argv.fileKvTtlSecs as number;
      if (!Number.isFinite(ttl) || ttl < 1) problems.push(`--file-kv-ttl-secs / DYN_FILE_KV_TTL_SECS must be a number >= 1, got ${ttl}`);
      if (problems.length > 0) throw new Error(problems.join("\n"));
      return true;
    });
  for (const [group, flags] of Object.entries(HELP_GROUPS)) built.group(flags, group);
  for (const u of UNSUPPORTED_FLAGS) built.group([u.flag], u.group);
  return built;
}

export type ServeArgs = Awaited<ReturnType<ReturnType<typeof serveOptions>["parse"]>>;

/**
 * IngestKvEvents decoder threads: none. Below 3 cores a thread measured
 * slower than decoding on the main thread (docs/indexer.md); from 3 cores up
 * the index has shard threads, and each decodes the messages of its own
 * workers (raw messages), which spreads decoding over every shard where one
 * decoder thread would cap it. Decoder threads still help a relay that
 * publishes workers of several shards in one message (those are decoded on
 * the main thread otherwise).
 */
export function defaultIngestThreads(_cores: number): number {
  return 0;
}
