// Assembles and runs one kv-router: index (+ metrics wrapper), router, gRPC
// server with reflection and health, Prometheus endpoint, upkeep timer.
import type { Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { Worker } from "node:worker_threads";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.js";
import { KvRouterService, file_kvrouter_v1_router } from "../../gen/kvrouter/v1/router_pb.js";
import { CompactIndex, type CompactIndexOptions } from "../indexer/compactIndex.js";
import { IndexShardDownError } from "../indexer/types.js";
import { MeteredIndex } from "../metrics/meteredIndex.js";
import { RouterMetrics } from "../metrics/metrics.js";
import { KvRouter } from "../router/router.js";
import type { RouterConfig } from "../router/types.js";
import { type AdmissionConfig, AdmissionQueue, DEFAULT_ADMISSION_CONFIG } from "../router/admissionQueue.js";
import type { EventSource } from "../router/eventSource.js";
import { log } from "../util/log.js";
import { seededRandom } from "../util/random.js";
import { fileDescriptorSet, serviceDefinition } from "../protocols/grpcGlue.js";
import { IngestPool } from "../server/ingestPool.js";
import { requireToken, tokenRefusal } from "../server/auth.js";
import { kvRouterHandlers } from "../server/kvRouterService.js";
import { kvRouterMethods } from "../server/unaryMethods.js";
import { DEFAULT_FLOW_CONTROL_WINDOW, raiseReceiveWindows } from "../server/flowControl.js";
import { findBestWorkerDecoder } from "../server/promptDecoder.js";
import { GRPC_IDLE_CONNECTION_MS, capGrpcConnections } from "../server/grpcListeners.js";
import { type ConnectionLimits, DEFAULT_MAX_CONNECTIONS_PER_PORT } from "../util/connectionCap.js";
import { ListenError, SourceStartError } from "./startupErrors.js";
import type { RunningHttpApi } from "../http/httpServer.js";
import { metricsServer } from "../http/metricsServer.js";
import type { RunningEpp } from "../gateway/eppServer.js";
import { GatewayMetrics } from "../gateway/metrics.js";
import type { ModelSpec } from "../gateway/modelSpec.js";
import type { TracingSettings } from "../tracing/setup.js";
import type { Tracing } from "../tracing/tracing.js";

export interface ServerOptions {
  router: RouterConfig;
  /** Queue and busy thresholds; default: no thresholds (every call routed at once). */
  admission?: AdmissionConfig;
  host: string;
  /** 0 picks a free port. */
  grpcPort: number;
  /** Prometheus endpoint port; undefined disables it, 0 picks a free one. */
  metricsPort?: number;
  /** HTTP/JSON port (Connect API, /healthz, /readyz, scorer API); undefined disables it, 0 picks a free one. */
  httpPort?: number;
  /** Gateway endpoint picker (Envoy ext_proc) port; undefined disables it, 0 picks a free one. */
  eppPort?: number;
  /** Models the gateway routes and their tokenizers (loaded at start). */
  models?: ModelSpec;
  /** Largest HTTP request body (EPP and scorer API), in bytes. */
  maxBodyBytes?: number;
  /** Most EPP requests holding load at once; more are shed with 429 (0/undefined = no limit). */
  eppMaxInFlight?: number;
  /** Endpoints the EPP lists after the chosen one, for the proxy's retries. */
  eppFallbacks?: number;
  /** Request-body bytes all EPP streams may hold at once; a body past it is answered 503 (default 256 MiB). */
  eppMaxBufferedBytes?: number;
  maxTokens: number;
  /** Seed for tie-breaks and sampling; undefined = unseeded. */
  seed?: number;
  /** The router's clock (tests drive it by hand); default Date.now. */
  now?: () => number;
  /** Upkeep period (lease and request expiry). */
  tickMs?: number;
  /** Leave out Node's process metrics (several routers in one process). */
  processMetrics?: boolean;
  /** Event feeds besides the IngestKvEvents stream (NATS, ZeroMQ, ...). */
  eventSources?: EventSource[];
  /** Serve TLS; with clientCa, require client certificates signed by it (mutual TLS). */
  tls?: { cert: Buffer; key: Buffer; clientCa?: Buffer };
  /** Shared secret that state-changing calls must present as `authorization: Bearer <token>`. */
  authToken?: string;
  /** Largest request message accepted, in bytes. */
  maxMessageBytes?: number;
  /** Most concurrent streams (calls) per client connection. */
  maxConcurrentStreams?: number;
  /** HTTP/2 receive window per stream and per connection, bytes (default 4 MiB; 65,535 = HTTP/2's own). */
  flowControlWindow?: number;
  /** Most connections each port (gRPC, metrics, HTTP, EPP) holds; more are closed as they arrive (default 1,024). */
  maxConnectionsPerPort?: number;
  /** Index shards on worker threads; 0 or undefined = the index runs in this thread. */
  indexerShards?: number;
  /** Most (block, worker) entries the index holds before evicting the oldest; undefined/0 = unbounded. */
  maxBlocks?: number;
  /** Most workers exported in the per-worker kvrouter_worker_* gauges (default 256; 0 = none). */
  metricsMaxWorkers?: number;
  /** Threads decoding IngestKvEvents messages; 0 or undefined = the main thread. */
  ingestThreads?: number;
  /**
   * With index shard threads, IngestKvEvents queues each message's batch to
   * the shards and goes on (default true); false waits for each batch, as
   * before (the benchmark's baseline).
   */
  pipelineIngest?: boolean;
  /**
   * Pipelined, without decoder threads: a message naming only known workers
   * of one shard goes to that shard thread as raw bytes, decoded and applied
   * there (default true); false decodes every message on this thread (the
   * benchmark's baseline).
   */
  rawIngest?: boolean;
  /**
   * With index shard threads, engine feeds' payloads (vLLM/SGLang over
   * ZeroMQ) are decoded, hashed and applied on the shard that owns the
   * worker; false decodes them on this thread and queues the batches (the
   * benchmark's baseline). Default: true from 2 shards up. With one shard,
   * decoding here and applying there is a two-stage pipeline, measured
   * faster on 2 cores (144 k against 97 k blocks/s, docs/indexer.md).
   */
  shardFeeds?: boolean;
  /** Test hook: queue words an index shard may be behind before raw messages are decoded on the main thread. */
  rawDecodeHerePastWords?: number;
  /** Test hook: words of each index shard's queue and result rings (small rings fill and wrap often). */
  indexRingWords?: number;
  /** With index shards, queries read the shards' shared memory (default: on x86-64); false asks the shard threads (the benchmark's baseline). */
  indexSharedReads?: boolean;
  /** Test hook: each index shard's thread once it serves (a test ends one with terminate(), as a crash would end it). */
  onIndexShardThread?: CompactIndexOptions["onShardThread"];
  /** Test hook: each ingest decoder thread once it serves, replacements included (a test ends one with terminate()). */
  onIngestThread?: (thread: number, worker: Worker) => void;
  /** Test hook: index shard threads throw applying this event, as a bug in the index would (CompactIndexOptions.testOnlyThrowOnEvent). */
  testOnlyIndexThrowOnEvent?: CompactIndexOptions["testOnlyThrowOnEvent"];
  /** Decoder thread restarts allowed within a window before the router fails (default IngestPool.DEFAULT_RESTARTS). */
  ingestDecoderRestarts?: { max: number; windowMs: number };
  /** Test hook: the decoder threads' decoder throws on every message, as a bug would. */
  testOnlyIngestDecoderThrows?: boolean;
  /**
   * FindBestWorker over gRPC decodes the prompt's token ids into a hasher's
   * memory and hashes them there (default true, unless the router hashes Eagle
   * windows); false decodes them into an array the router hashes (the
   * benchmark's baseline).
   */
  hashOnDecode?: boolean;
  /** Most (worker, dp_rank) pairs the index (and the registry) hold; default 65,536. */
  maxWorkerRanks?: number;
  /** Most DumpIndex calls streaming at once; default 2. */
  maxConcurrentDumps?: number;
  /** With authToken: DumpIndex, ListWorkers and explain need the token too. */
  authReads?: boolean;
  /** OpenTelemetry spans per request (--otlp-endpoint); undefined = off, and the SDK is never loaded. */
  tracing?: TracingSettings;
}

/** Room for 1M-token prompts and large event batches. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Room for OpenAI requests with 1M-token prompts. */
export const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;
/** Sixteen bodies of the largest default size at once, or thousands of ordinary prompts (tens of kB). */
export const DEFAULT_EPP_MAX_BUFFERED_BYTES = 256 * 1024 * 1024;

export interface RunningServer {
  router: KvRouter;
  admission: AdmissionQueue;
  metrics: RouterMetrics;
  host: string;
  grpcPort: number;
  metricsPort?: number;
  httpPort?: number;
  eppPort?: number;
  /** Spans, when tracing is on (tests flush it to read spans at once). */
  tracing?: Tracing;
  /** Why the router is not ready to serve, or undefined when it is (sources started, index synced). */
  notReady(): string | undefined;
  /**
   * Settles with the error once the router can no longer serve and must be
   * restarted (an index shard thread died, or decoder threads died more often
   * than their restart bound allows; see docs/indexer.md, "A shard thread
   * that dies"): it already answers UNAVAILABLE, reports not ready and
   * not live; the CLI then stops it and exits non-zero. Never settles otherwise.
   */
  failed: Promise<Error>;
  /** Stops accepting calls, lets in-flight ones finish, then closes. */
  stop(): Promise<void>;
}

export const KV_ROUTER_SERVICE_NAME = KvRouterService.typeName;

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  // The HTTP port is plain HTTP: beside mutual TLS it would be a way in without a client certificate.
  if (opts.tls?.clientCa !== undefined && opts.httpPort !== undefined) {
    throw new Error("the HTTP port (httpPort) cannot be served with mutual TLS (tls.clientCa): it is plain HTTP, where no client certificate is asked for");
  }
  // Tokenizers load before anything starts: a bad model directory fails start-up, naming the file.
  // The gateway's modules load only when a gateway port is asked for (start-up time).
  const gateway = opts.httpPort !== undefined || opts.eppPort !== undefined;
  const models = gateway ? new (await import("../gateway/models.js")).ModelCatalog(opts.models ?? { tokenizers: [], loraAdapters: [] }) : undefined;
  const metrics = new RouterMetrics(opts.processMetrics ?? true, opts.metricsMaxWorkers);
  const compact = await CompactIndex.create({
    shards: opts.indexerShards ?? 0,
    maxBlocks: opts.maxBlocks || undefined,
    maxWorkerRanks: opts.maxWorkerRanks,
    // Shard threads that know the block size decode raw IngestKvEvents messages themselves.
    blockSize: opts.rawIngest === false || opts.pipelineIngest === false || opts.ingestThreads ? undefined : opts.router.blockSize,
    // Shard threads that know it decode engine feeds' payloads themselves.
    feedBlockSize: (opts.shardFeeds ?? (opts.indexerShards ?? 0) >= 2) ? opts.router.blockSize : undefined,
    decodeHerePastWords: opts.rawDecodeHerePastWords,
    ringWords: opts.indexRingWords,
    sharedReads: opts.indexSharedReads,
    onShardThread: opts.onIndexShardThread,
    testOnlyThrowOnEvent: opts.testOnlyIndexThrowOnEvent,
  });
  metrics.sources.indexEvictions = () => compact.evictionCount;
  metrics.sources.indexBytes = () => compact.stats().arrayBytes;
  if (compact.shards > 0) metrics.sources.indexShardAnswers = () => compact.queryAnswers();
  if (compact.shards > 0) metrics.sources.indexShardsDown = () => compact.shardsDown;
  const index = new MeteredIndex(compact, metrics);
  const random = opts.seed === undefined ? Math.random : seededRandom(opts.seed);
  const now = opts.now ?? Date.now;
  const router = new KvRouter(opts.router, index, random, now);
  metrics.sources.activeRequests = () => router.active.size;
  metrics.sources.workers = () => router.listWorkers();
  // Without explicit admission settings, the router config's queue flags (Dynamo's) apply.
  const admissionConfig = opts.admission ?? {
    ...DEFAULT_ADMISSION_CONFIG,
    thresholds: { routerQueueThreshold: opts.router.queueThreshold },
    queuePolicy: opts.router.queuePolicy,
  };
  const admission = new AdmissionQueue(router, structuredClone(admissionConfig), now);
  metrics.sources.queueDepth = () => admission.depth;
  admission.observer = {
    left: (outcome, waitedMs) => metrics.queueWait.observe({ outcome }, waitedMs / 1000),
    refused: (reason) => metrics.queueRefused.inc({ reason }),
  };
  router.schedulingObserver = {
    predictions: ({ confirmed, wrong }) => {
      if (confirmed > 0) metrics.predictions.inc({ outcome: "confirmed" }, confirmed);
      if (wrong > 0) metrics.predictions.inc({ outcome: "wrong" }, wrong);
    },
    affinity: (outcome) => metrics.sessionAffinity.inc({ outcome }),
  };

  const tracing: Tracing | undefined = opts.tracing ? await (await import("../tracing/setup.js")).startTracing(opts.tracing) : undefined;
  const server = new grpc.Server({
    "grpc.max_receive_message_length": opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    "grpc.max_connection_idle_ms": GRPC_IDLE_CONNECTION_MS,
    ...(opts.maxConcurrentStreams ? { "grpc.max_concurrent_streams": opts.maxConcurrentStreams } : {}),
  });
  const methods = kvRouterMethods(router, metrics, { maxTokens: opts.maxTokens }, admission);
  const pool = opts.ingestThreads
    ? await IngestPool.start(opts.ingestThreads, opts.router.blockSize, {
        restarts: opts.ingestDecoderRestarts,
        onThread: opts.onIngestThread,
        testOnlyThrow: opts.testOnlyIngestDecoderThrows,
      }).catch(async (err) => {
        await compact.close();
        await tracing?.shutdown();
        throw err;
      })
    : undefined;
  if (pool) metrics.sources.ingestDecoderRestarts = () => pool.restarts;
  // With shard threads the index applies ingest batches while this thread decodes the next ones.
  const ingest = { pool, pipelined: (opts.indexerShards ?? 0) > 0 && opts.pipelineIngest !== false, raw: opts.rawIngest !== false };
  let handlers = kvRouterHandlers(router, metrics, methods, { maxConcurrentDumps: opts.maxConcurrentDumps }, ingest, tracing);
  const tokenPolicy = { approximate: !opts.router.useKvEvents, authReads: opts.authReads ?? false };
  if (opts.authToken) {
    handlers = requireToken(handlers, opts.authToken, (method) => metrics.tokenRefused(method), tokenPolicy);
  }
  // IngestKvEvents decodes its own bytes (kvRouterService.ts: the hot-path decoder).
  // Prompts are hashed as they are decoded, unless the router hashes Eagle windows (from the token ids).
  const promptHashing = opts.router.eagle || opts.hashOnDecode === false ? undefined : { blockSize: opts.router.blockSize, maxTokens: opts.maxTokens };
  const findBestWorker = findBestWorkerDecoder(router.maxAllowedWorkers, promptHashing);
  server.addService(serviceDefinition(KvRouterService, ["ingestKvEvents"], { findBestWorker }), handlers);
  const health = new HealthImplementation({ "": "SERVING", [KV_ROUTER_SERVICE_NAME]: "SERVING" });
  health.addToServer(server);
  const descriptors = fileDescriptorSet([file_kvrouter_v1_router, file_grpc_health_v1_health]);
  new ReflectionService(protoLoader.loadFileDescriptorSetFromBuffer(Buffer.from(descriptors))).addToServer(server);

  let http: HttpServer | undefined;
  let metricsPort: number | undefined;
  let httpApi: RunningHttpApi | undefined;
  let epp: RunningEpp | undefined;
  const gatewayMetrics = gateway ? new GatewayMetrics(metrics.registry) : undefined;
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  // /readyz: ready once every event source has started, not ready again from the moment stop() begins.
  let readiness: Readiness = "starting";
  // Not live once the index lost a shard (nothing but a restart brings its workers' blocks back), or the decoder threads keep dying.
  const notLive = () => compact.down?.message ?? pool?.failure?.message;
  const notReady = () =>
    notLive() ?? (readiness === "ready" ? undefined : readiness === "starting" ? "starting: event sources are syncing the index" : "shutting down");
  const probes = { notReady, notLive };
  let failedWith: (err: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => (failedWith = resolve));
  const down = (err: Error) => {
    health.setStatus("", "NOT_SERVING");
    health.setStatus(KV_ROUTER_SERVICE_NAME, "NOT_SERVING");
    epp?.setReady(false);
    failedWith(err);
  };
  compact.onDown(down);
  pool?.onFailed(down);
  const sources = opts.eventSources ?? [];
  const started: EventSource[] = [];
  // One cap per port: a flood on one cannot take the file descriptors the others need.
  const connections = (port: "grpc" | "metrics" | "http" | "epp"): ConnectionLimits => ({
    maxConnections: opts.maxConnectionsPerPort ?? DEFAULT_MAX_CONNECTIONS_PER_PORT,
    refused: () => metrics.connectionsRefused.inc({ port }),
  });
  let grpcPort: number;
  try {
    grpcPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${opts.host}:${opts.grpcPort}`, serverCredentials(opts.tls), (err, port) =>
        err ? reject(new ListenError("gRPC", opts.host, opts.grpcPort, err)) : resolve(port),
      ),
    );
    if (!raiseReceiveWindows(server, opts.flowControlWindow ?? DEFAULT_FLOW_CONTROL_WINDOW)) {
      log.warn("could not raise the gRPC server's HTTP/2 receive windows (this grpc-js keeps its listeners elsewhere): they stay at 64 KB");
    }
    if (!capGrpcConnections(server, connections("grpc"))) log.warn("could not cap the gRPC port's connections (this grpc-js keeps its listeners elsewhere)");
    if (opts.metricsPort !== undefined) {
      http = metricsServer(metrics.registry, probes, connections("metrics"));
      await new Promise<void>((resolve, reject) => {
        http!.once("error", (err) => reject(new ListenError("metrics", opts.host, opts.metricsPort!, err)));
        http!.listen(opts.metricsPort, opts.host, () => resolve());
      });
      metricsPort = (http.address() as AddressInfo).port;
    }
    if (opts.httpPort !== undefined) {
      // Loaded only when asked for: Connect adds start-up time every other router would pay.
      const [{ connectRoutes }, { startHttpApi }, { queryHashes, queryTokens, scorerHandler }] = await Promise.all([
        import("../http/connectService.js"),
        import("../http/httpServer.js"),
        import("../gateway/scorerApi.js"),
      ]);
      const scorer = {
        router,
        modelProblem: (m: string) => models!.problem(m),
        maxTokens: opts.maxTokens,
        maxBodyBytes,
        authRefusal: opts.authToken
          ? (authorization: string | undefined) => tokenRefusal("scorerQuery", undefined, authorization, opts.authToken!, tokenPolicy)
          : undefined,
      };
      httpApi = await startHttpApi({
        host: opts.host,
        port: opts.httpPort,
        routes: connectRoutes(methods, metrics, opts.authToken, tokenPolicy, tracing),
        probes,
        maxBodyBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
        connections: connections("http"),
        paths: {
          "/query": scorerHandler(queryTokens, { ...scorer, onRefused: (reason) => gatewayMetrics!.rejected.inc({ api: "query", reason }) }),
          "/query_by_hash": scorerHandler(queryHashes, {
            ...scorer,
            onRefused: (reason) => gatewayMetrics!.rejected.inc({ api: "query_by_hash", reason }),
          }),
        },
      }).catch((err: Error) => {
        throw new ListenError("HTTP", opts.host, opts.httpPort!, err);
      });
    }
    if (opts.eppPort !== undefined) {
      const { startEppServer } = await import("../gateway/eppServer.js");
      epp = await startEppServer(opts.host, opts.eppPort, {
        router,
        models: models!,
        metrics: gatewayMetrics!,
        maxBodyBytes,
        maxTokens: opts.maxTokens,
        maxInFlight: opts.eppMaxInFlight ?? 0,
        fallbacks: opts.eppFallbacks ?? 2,
        maxBufferedBytes: opts.eppMaxBufferedBytes ?? DEFAULT_EPP_MAX_BUFFERED_BYTES,
        admission,
        tracing,
        maxMessageBytes: opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
        connections: connections("epp"),
      }).catch((err: Error) => {
        throw new ListenError("EPP", opts.host, opts.eppPort!, err);
      });
    }
    for (const source of sources) {
      // Counted before start(): a source that fails half-way may hold a connection to release.
      started.push(source);
      await source.start(router, { registry: metrics.registry }).catch((err: unknown) => {
        throw new SourceStartError(source.name, err);
      });
      log.info("event source started", { source: source.name });
    }
  } catch (err) {
    // A router that cannot bind or read its events must not keep serving
    // half-configured, nor leave shard threads behind.
    for (const source of started.reverse()) await source.stop().catch(() => {});
    server.forceShutdown();
    if (http?.listening) await new Promise<void>((resolve) => http!.close(() => resolve()));
    await httpApi?.close();
    await epp?.stop();
    await compact.close();
    await pool?.close();
    await tracing?.shutdown();
    throw err;
  }
  readiness = "ready";
  epp?.setReady(compact.down === undefined);

  const timer = setInterval(() => {
    // With an index shard down the router is on its way out: upkeep would only meet the same error.
    if (compact.down !== undefined) return;
    let expired;
    try {
      expired = router.tick();
    } catch (err) {
      if (err instanceof IndexShardDownError) return; // found down during this tick, and logged there
      throw err;
    }
    const { expiredWorkers, expiredRequests } = expired;
    admission.expire();
    if (expiredWorkers.length > 0) metrics.expiredWorkers.inc(expiredWorkers.length);
    if (expiredRequests.length > 0) metrics.expiredRequests.inc(expiredRequests.length);
  }, opts.tickMs ?? 250);
  timer.unref();

  const stop = async () => {
    readiness = "stopping";
    clearInterval(timer);
    admission.close();
    health.setStatus("", "NOT_SERVING");
    health.setStatus(KV_ROUTER_SERVICE_NAME, "NOT_SERVING");
    await new Promise<void>((resolve) => {
      // In-flight calls get a grace period; then the server is forced shut.
      const force = setTimeout(() => server.forceShutdown(), 5_000);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    for (const source of sources) await source.stop();
    if (http) await new Promise<void>((resolve) => http!.close(() => resolve()));
    await httpApi?.close();
    await epp?.stop();
    await compact.close();
    await pool?.close();
    // Last: the spans of calls that finished during the grace period are exported too.
    await tracing?.shutdown();
    log.info("kv-router stopped");
  };

  return { router, admission, metrics, host: opts.host, grpcPort, metricsPort, httpPort: httpApi?.port, eppPort: epp?.port, tracing, notReady, failed, stop };
}

type Readiness = "starting" | "ready" | "stopping";

function serverCredentials(tls: ServerOptions["tls"]): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  const requireClientCert = tls.clientCa !== undefined;
  return grpc.ServerCredentials.createSsl(tls.clientCa ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], requireClientCert);
}
