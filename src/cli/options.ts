// Command-line flags. Both of Dynamo's spellings are accepted (the seed's
// `--kv-overlap-score-weight` and the newer `--router-kv-overlap-score-weight`),
// and every flag can come from a DYN_<FLAG> environment variable.
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import type { Argv } from "yargs";
import { NatsEventSource, defaultRouterId } from "../sources/nats/natsSource.js";
import { connectOptionsFromFlags } from "../nats/connection.js";
import type { RouterConfig } from "../router/router.js";
import type { ServerOptions } from "../server/server.js";
import { parseZmqWorkerSpec } from "../sources/zmq/endpoints.js";
import { ZmqEventSource } from "../sources/zmq/zmqEventSource.js";

/**
 * One shard per spare core, but none below 3 cores: each synchronous query
 * pays a cross-thread wake-up (50-100 µs measured on 2 cores), more than the
 * whole in-thread lookup costs, and a single shard thread parallelises nothing.
 */
export function defaultIndexerShards(cores: number): number {
  return cores >= 3 ? cores - 1 : 0;
}

export function serveOptions<T>(y: Argv<T>) {
  return y
    .option("endpoint", {
      alias: "router-endpoint", // Dynamo's DYN_ROUTER_ENDPOINT
      type: "string",
      default: "dynamo.backend.generate",
      describe: "Where workers register, as namespace.component.endpoint",
    })
    .option("block-size", {
      alias: ["router-block-size", "kv-cache-block-size"], // DYN_ROUTER_BLOCK_SIZE, the frontend's DYN_KV_CACHE_BLOCK_SIZE
      type: "number",
      demandOption: "set it to the KV block size of your engines (e.g. vLLM --block-size)",
      describe: "Tokens per KV block; must match the engines' block size",
    })
    .option("kv-overlap-score-weight", {
      alias: "router-kv-overlap-score-weight",
      type: "number",
      default: 1.0,
      describe: "Weight of prefill cost against decode load (0 = pure load balancing)",
    })
    .option("router-temperature", {
      type: "number",
      default: 0.0,
      describe: "Softmax temperature for sampling workers (0 = always the lowest cost)",
    })
    .option("kv-events", {
      alias: ["router-kv-events", "router-use-kv-events"], // Dynamo's variable is DYN_ROUTER_USE_KV_EVENTS
      type: "boolean",
      default: true,
      describe: "Use workers' KV events; --no-kv-events predicts caches from routing decisions",
    })
    .option("track-active-blocks", {
      alias: "router-track-active-blocks",
      type: "boolean",
      default: true,
      describe: "Count active requests' KV blocks as decode load (--no-track-active-blocks for prefill-only pools)",
    })
    .option("router-ttl-secs", {
      type: "number",
      default: 120,
      describe: "Approximate mode: seconds a routed prompt's blocks are assumed cached",
    })
    .option("router-max-tree-size", {
      type: "number",
      default: 2 ** 20,
      describe: "Approximate mode: blocks tracked before pruning to 80%",
    })
    .option("active-request-ttl", {
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
      describe: "NATS mode: server URL(s), comma-separated for a cluster (e.g. nats://10.0.0.1:4222,nats://10.0.0.2:4222)",
    })
    .option("nats-user", { type: "string", describe: "NATS user name (with --nats-password)" })
    .option("nats-password", { type: "string", describe: "NATS password" })
    .option("nats-token", { type: "string", describe: "NATS authentication token" })
    .option("nats-creds", { type: "string", describe: "NATS .creds file (JWT + nkey seed)" })
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
      describe: "Also read Dynamo's core-NATS MessagePack event plane (namespace.<ns>.component.<c>.kv-events)",
    })
    .option("nats-discovery", {
      type: "boolean",
      default: true,
      describe: "Watch the endpoint's NATS KV bucket for worker registrations",
    })
    .option("zmq-worker", {
      type: "string",
      array: true,
      describe:
        "Subscribe to an engine's ZeroMQ KV events (vLLM/SGLang --kv-events-config): " +
        "WORKER_ID=tcp://host:port[,replay=tcp://host:port][,dp_rank=N][,engine=vllm|sglang][,topic=T][,metrics=http://host:port/metrics]; repeatable",
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
    .option("host", { type: "string", default: "0.0.0.0", describe: "Address to listen on" })
    .option("grpc-port", { type: "number", default: 50051, describe: "gRPC port (0 = pick a free one)" })
    .option("metrics-port", {
      type: "number",
      default: 9090,
      describe: "Prometheus /metrics port (0 = pick a free one, -1 = off)",
    })
    .option("max-tokens", { type: "number", default: 1 << 20, describe: "Most token ids in one request" })
    .option("seed", { type: "number", describe: "Seed for tie-breaks and sampling (reproducible decisions)" })
    .option("tls-cert", { type: "string", describe: "PEM certificate chain: serve gRPC over TLS (with --tls-key)" })
    .option("tls-key", { type: "string", describe: "PEM private key of --tls-cert" })
    .option("tls-client-ca", { type: "string", describe: "PEM CA bundle: require client certificates it signed (mutual TLS)" })
    .option("auth-token", { type: "string", describe: "Shared secret that state-changing calls must send as 'authorization: Bearer <token>'" })
    .option("auth-token-file", { type: "string", describe: "Read --auth-token from this file (keeps it out of ps)" })
    .option("max-message-bytes", { type: "number", default: 64 * 1024 * 1024, describe: "Largest gRPC request message accepted" })
    .option("max-concurrent-streams", { type: "number", default: 1024, describe: "Most concurrent calls per client connection" })
    .option("indexer-shards", {
      type: "number",
      default: defaultIndexerShards(availableParallelism()),
      describe: "KV index shards on worker threads (default: one per spare core from 3 cores up; 0 = in the main thread)",
    })
    .option("max-blocks", {
      type: "number",
      default: 0,
      describe: "Most (block, worker) entries indexed; beyond it the oldest-stored are evicted (0 = unbounded)",
    })
    .check((argv) => {
      const problems: string[] = [];
      const int = (name: string, v: number, min: number, max: number) => {
        if (!Number.isInteger(v) || v < min || v > max) problems.push(`--${name} must be an integer in [${min}, ${max}], got ${v}`);
      };
      const nonNegative = (name: string, v: number) => {
        if (!Number.isFinite(v) || v < 0) problems.push(`--${name} must be a number >= 0, got ${v}`);
      };
      int("block-size", argv.blockSize as number, 1, 65_536);
      nonNegative("kv-overlap-score-weight", argv.kvOverlapScoreWeight as number);
      nonNegative("router-temperature", argv.routerTemperature as number);
      int("grpc-port", argv.grpcPort as number, 0, 65_535);
      int("metrics-port", argv.metricsPort as number, -1, 65_535);
      int("max-tokens", argv.maxTokens as number, 1, 1 << 30);
      int("router-max-tree-size", argv.routerMaxTreeSize as number, 1, 2 ** 40);
      for (const name of ["router-ttl-secs", "active-request-ttl", "worker-lease-ttl"] as const) {
        const v = argv[name] as number;
        if (!Number.isFinite(v) || v <= 0) problems.push(`--${name} must be a number > 0, got ${v}`);
      }
      if (!/^[^.\s]+\.[^.\s]+\.[^.\s]+$/.test(argv.endpoint as string)) {
        problems.push(`--endpoint must look like namespace.component.endpoint, got "${argv.endpoint}"`);
      }
      if ((argv.tlsCert === undefined) !== (argv.tlsKey === undefined)) problems.push("--tls-cert and --tls-key go together");
      if (argv.tlsClientCa !== undefined && argv.tlsCert === undefined) problems.push("--tls-client-ca needs --tls-cert and --tls-key");
      if (argv.authToken !== undefined && argv.authTokenFile !== undefined) problems.push("give --auth-token or --auth-token-file, not both");
      for (const name of ["tls-cert", "tls-key", "tls-client-ca", "auth-token-file"]) {
        const file = argv[name] as string | undefined;
        if (file !== undefined && !existsSync(file)) problems.push(`--${name}: no such file ${file}`);
      }
      int("max-message-bytes", argv.maxMessageBytes as number, 1024, 2 ** 31 - 1);
      int("max-concurrent-streams", argv.maxConcurrentStreams as number, 1, 2 ** 31 - 1);
      int("indexer-shards", argv.indexerShards as number, 0, 64);
      int("max-blocks", argv.maxBlocks as number, 0, 2 ** 31 - 1);
      int("router-snapshot-threshold", argv.routerSnapshotThreshold as number, 0, 2 ** 40);
      int("nats-stream-replicas", argv.natsStreamReplicas as number, 1, 5);
      if (argv.natsUrl !== undefined && !/^(nats|tls):\/\/[^,\s]+(,\s*(nats|tls):\/\/[^,\s]+)*$/.test(argv.natsUrl as string)) {
        problems.push(`--nats-url must be nats://host:port URLs separated by commas, got "${argv.natsUrl}"`);
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
      if (!argv.kvEvents && (argv.zmqWorker !== undefined || argv.workersFile !== undefined)) {
        problems.push("--zmq-worker and --workers-file feed KV events; they cannot be used with --no-kv-events");
      }
      if (problems.length > 0) throw new Error(problems.join("\n"));
      return true;
    });
}

export type ServeArgs = Awaited<ReturnType<ReturnType<typeof serveOptions>["parse"]>>;

export function serverOptionsFrom(argv: ServeArgs): ServerOptions {
  const router: RouterConfig = {
    blockSize: argv.blockSize,
    overlapScoreWeight: argv.kvOverlapScoreWeight,
    temperature: argv.routerTemperature,
    useKvEvents: argv.kvEvents,
    trackActiveBlocks: argv.trackActiveBlocks,
    activeRequestTtlMs: argv.activeRequestTtl * 1000,
    workerLeaseTtlMs: argv.workerLeaseTtl * 1000,
    approxTtlMs: argv.routerTtlSecs * 1000,
    approxMaxBlocks: argv.routerMaxTreeSize,
  };
  return {
    router,
    host: argv.host,
    grpcPort: argv.grpcPort,
    metricsPort: argv.metricsPort < 0 ? undefined : argv.metricsPort,
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
    eventSources: [...(argv.natsUrl ? [natsSourceFrom(argv)] : []), ...zmqSourceFrom(argv)],
  };
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
    discovery: argv.natsDiscovery,
  });
}
