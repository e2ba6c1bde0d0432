// --discovery-backend kubernetes: the pods of one namespace that a label
// selector (or an InferencePool's selector) picks become the router's
// workers while they are Ready with an IP (pods.ts says how a pod maps to a
// worker), and are forgotten, with their blocks and load, when they are
// deleted, stop matching or stop being Ready. With --zmq-port the router
// subscribes to each pod's engine KV event publisher (the ZeroMQ source
// follows registrations that name a feed). Pods rather than EndpointSlices:
// an InferencePool selects pods by label directly (there is no Service whose
// slices would list them), and a pod carries what is needed in one object:
// readiness, IP, name (Dynamo's worker id) and GAIE's active-ports annotation.
import type { Registry } from "prom-client";
import { Gauge } from "prom-client";
import { mirroredCounter, mirroredTotal } from "../../metrics/mirrored.js";
import { RouterError } from "../../router/errors.js";
import type { KvRouter } from "../../router/router.js";
import type { EventSourceContext } from "../../router/eventSource.js";
import type { WorkerFeed } from "../../router/types.js";
import { log } from "../../util/log.js";
import { LogOnce } from "../../util/logOnce.js";
import type { WorkerDiscovery } from "../discovery.js";
import { readInferencePool } from "./inferencePool.js";
import { type KubeClient, type KubeClientOptions, kubeClient } from "./kubeClient.js";
import { ListWatch, type ListWatchHandler } from "./listWatch.js";
import { type PodWorker, hostPort, podKeyOf, podWorkerOf, sameRegistration } from "./pods.js";

/** vLLM's default serving port (`vllm serve --port`), when neither a pool nor --k8s-target-port names one. */
export const DEFAULT_TARGET_PORT = 8000;
/** etcd's default request limit (1.5 MiB): no object the API server stores is larger. */
export const DEFAULT_MAX_OBJECT_BYTES = 1.5 * 1024 * 1024;
export const DEFAULT_MAX_PODS = 4096;

export interface KubernetesDiscoveryOptions {
  client: KubeClientOptions;
  /** --k8s-namespace; default: the kubeconfig context's, the service account's, else "default". */
  namespace?: string;
  /** --k8s-selector (a Kubernetes label selector); or: */
  labelSelector?: string;
  /** --k8s-inference-pool: read selector and target ports from this InferencePool. */
  inferencePool?: string;
  /** --k8s-target-port: overrides the pool's; dp rank i serves on port i. */
  targetPorts?: number[];
  /** --zmq-port / --zmq-replay-port: each pod's engine KV event publisher (and replay socket). */
  zmqPort?: number;
  zmqReplayPort?: number;
  /** The router-side lease of a held worker; renewed every third of it while its pod serves. */
  leaseMs: number;
  maxPods?: number;
  maxObjectBytes?: number;
  /** Tests: shorter watches and pages. */
  watchTimeoutSeconds?: number;
  pageSize?: number;
}

export class KubernetesDiscovery implements WorkerDiscovery, ListWatchHandler<PodWorker> {
  readonly name = "discovery-kubernetes";
  /** Pods the router refused (e.g. past --max-worker-ranks); logged once per pod. */
  refused = 0;
  private readonly pods = new Map<string, PodWorker>();
  private readonly loggedPods = new LogOnce();
  private router: KvRouter | undefined;
  private watch: ListWatch<PodWorker> | undefined;
  private renew: NodeJS.Timeout | undefined;
  private readonly abort = new AbortController();

  constructor(private readonly opts: KubernetesDiscoveryOptions) {}

  /** Workers registered now (their pods are Ready). */
  get workers(): bigint[] {
    return [...this.pods.values()].filter((p) => p.serving).map((p) => p.workerId);
  }

  async start(router: KvRouter, context?: EventSourceContext): Promise<void> {
    this.router = router;
    const client = await kubeClient(this.opts.client);
    const namespace = this.opts.namespace ?? client.namespace ?? "default";
    let labelSelector = this.opts.labelSelector ?? "";
    let targetPorts = this.opts.targetPorts;
    if (this.opts.inferencePool !== undefined) {
      const pool = await readInferencePool(client, namespace, this.opts.inferencePool, this.abort.signal);
      labelSelector = pool.labelSelector;
      targetPorts ??= pool.targetPorts;
    }
    const ports = targetPorts && targetPorts.length > 0 ? targetPorts : [DEFAULT_TARGET_PORT];
    this.watch = this.listWatch(client, namespace, labelSelector, ports);
    if (context) this.registerMetrics(context.registry, this.watch);
    this.renew = setInterval(() => this.renewLeases(), Math.max(50, Math.floor(this.opts.leaseMs / 3)));
    this.renew.unref();
    await this.watch.start();
    log.info("Kubernetes discovery on", {
      server: client.server,
      credentials: client.source,
      namespace,
      selector: labelSelector,
      pool: this.opts.inferencePool,
      target_ports: ports.join(","),
      pods: this.pods.size,
      workers: this.workers.length,
    });
  }

  async stop(): Promise<void> {
    clearInterval(this.renew);
    this.abort.abort();
    await this.watch?.stop();
  }

  private listWatch(client: KubeClient, namespace: string, labelSelector: string, ports: number[]): ListWatch<PodWorker> {
    return new ListWatch<PodWorker>(
      client,
      {
        path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`,
        labelSelector,
        maxObjectBytes: this.opts.maxObjectBytes ?? DEFAULT_MAX_OBJECT_BYTES,
        maxItems: this.opts.maxPods ?? DEFAULT_MAX_PODS,
        pageSize: this.opts.pageSize,
        watchTimeoutSeconds: this.opts.watchTimeoutSeconds,
        keyOf: podKeyOf,
        summarize: (o) => podWorkerOf(o, ports),
      },
      this,
    );
  }

  // The handler runs inside the watch's data callback: whatever the router
  // refuses is a counted, logged skip, never a stopped watch.
  resync(items: ReadonlyMap<string, PodWorker>): void {
    for (const key of [...this.pods.keys()]) if (!items.has(key)) this.remove(key);
    for (const [key, pod] of items) this.upsert(key, pod);
  }

  upsert(key: string, pod: PodWorker): void {
    const prev = this.pods.get(key);
    if (prev && sameRegistration(prev, pod)) return; // a status change that moves nothing the router holds
    // Another pod under the same name (a StatefulSet's replacement) starts empty; so does one that stopped serving.
    if (prev?.serving && (!pod.serving || prev.uid !== pod.uid || prev.workerId !== pod.workerId)) this.forget(prev, "not ready or replaced");
    this.pods.set(key, { ...pod, serving: false });
    if (pod.serving && this.register(pod)) this.pods.set(key, pod);
  }

  remove(key: string): void {
    const prev = this.pods.get(key);
    this.pods.delete(key);
    if (prev?.serving) this.forget(prev, "deleted or no longer selected");
  }

  private feedOf(pod: PodWorker): WorkerFeed | undefined {
    if (this.opts.zmqPort === undefined) return undefined;
    return {
      zmqEndpoint: `tcp://${hostPort(pod.ip, this.opts.zmqPort)}`,
      zmqReplayEndpoint: this.opts.zmqReplayPort === undefined ? undefined : `tcp://${hostPort(pod.ip, this.opts.zmqReplayPort)}`,
    };
  }

  /** Registers (or re-registers: blocks are kept) the pod's worker; false when the router refused it. */
  private register(pod: PodWorker): boolean {
    const router = this.router!;
    try {
      router.registerWorker(pod.workerId, pod.ranks.map((r) => r.dpRank), this.opts.leaseMs, this.feedOf(pod));
      for (const r of pod.ranks) router.addresses.set({ workerId: pod.workerId, dpRank: r.dpRank }, hostPort(pod.ip, r.port), "kubernetes");
      log.info("worker discovered (Kubernetes pod ready)", { pod: pod.key, worker_id: pod.workerId, address: hostPort(pod.ip, pod.ranks[0].port) });
      return true;
    } catch (err) {
      this.refused++;
      const error = err instanceof RouterError ? err.message : String((err as Error)?.stack ?? err);
      this.loggedPods.log(`refused:${pod.key}`, "Kubernetes pod refused as a worker and skipped (logged once per pod)", { pod: pod.key, error });
      return false;
    }
  }

  private forget(pod: PodWorker, why: string): void {
    try {
      const dropped = this.router!.deregisterWorker(pod.workerId);
      log.info(`worker removed (Kubernetes pod ${why})`, { pod: pod.key, worker_id: pod.workerId, dropped_blocks: dropped });
    } catch (err) {
      if (!(err instanceof RouterError)) throw err;
    }
  }

  /** Keeps every serving pod's router lease fresh, whether or not the API server is reachable now. */
  private renewLeases(): void {
    for (const pod of this.pods.values()) {
      if (!pod.serving) continue;
      try {
        this.router!.keepAlive(pod.workerId);
      } catch (err) {
        if (!(err instanceof RouterError)) throw err;
        this.register(pod); // its lease ran out meanwhile (a stalled loop)
      }
    }
  }

  private registerMetrics(registry: Registry, watch: ListWatch<PodWorker>): void {
    const discovery = this;
    new Gauge({
      name: "kvrouter_discovery_up",
      help: "1 while the discovery store (etcd, file, Kubernetes API) is reachable; 0 while the router serves with what it last knew",
      labelNames: ["backend"],
      registers: [registry],
      collect() {
        this.set({ backend: "kubernetes" }, watch.health.up ? 1 : 0);
      },
    });
    new Gauge({
      name: "kvrouter_discovery_workers",
      help: "Workers held because their discovery record exists (Kubernetes: pods Ready with an IP)",
      labelNames: ["backend"],
      registers: [registry],
      collect() {
        this.set({ backend: "kubernetes" }, discovery.workers.length);
      },
    });
    mirroredTotal(registry, "kvrouter_discovery_reconnects_total", "Times the discovery store's connection or watch was re-established", () => watch.health.reconnects);
    mirroredCounter(
      registry,
      "kvrouter_discovery_kubernetes_requests_total",
      "Kubernetes API list and watch requests, and watches that expired (410 Gone) or failed",
      "kind",
      { list: () => watch.stats.lists, watch: () => watch.stats.watches, gone: () => watch.stats.gone, failed: () => watch.stats.failures },
    );
    mirroredCounter(
      registry,
      "kvrouter_discovery_kubernetes_skipped_total",
      "Pod objects or watch lines skipped: over --k8s-max-object-bytes, not JSON, without a name, past --k8s-max-pods",
      "reason",
      Object.fromEntries(Object.keys(watch.stats.skipped).map((k) => [k, () => watch.stats.skipped[k as keyof typeof watch.stats.skipped]])),
    );
    mirroredTotal(registry, "kvrouter_discovery_refused_total", "Valid discovery records the router refused (e.g. a worker past --max-worker-ranks), skipped", () => discovery.refused);
  }
}
