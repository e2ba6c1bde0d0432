// The ZeroMQ event source: one EngineSubscriber per engine publisher, from
// three places — --zmq-worker flags, a --workers-file watched for changes,
// and workers that registered with a zmq endpoint — kept in sync as a set.
import { readFileSync, unwatchFile, watchFile } from "node:fs";
import { type WorkerKey, workerKeyString } from "../../protocols/events.js";
import { RouterError } from "../../router/errors.js";
import type { KvRouter } from "../../router/router.js";
import type { WorkerObserver } from "../../router/types.js";
import { log } from "../../util/log.js";
import type { EventSource, EventSourceContext } from "../../router/eventSource.js";
import { EndpointSpecError, type ZmqEndpoint, endpointKey, parseWorkersFile, registeredEndpoints } from "./endpoints.js";
import { type EngineLoadWeights, EngineLoadPoller } from "./engineLoad.js";
import { ZmqMetrics } from "./metrics.js";
import { subscriberRoomProblem } from "./sockets.js";
import { ShardLane } from "./shardLane.js";
import { EngineSubscriber } from "./subscriber.js";
import { LogOnce } from "../../util/logOnce.js";

export interface ZmqSourceOptions {
  /** Publishers named on the command line. */
  endpoints?: ZmqEndpoint[];
  /** YAML/JSON file of publishers, re-read when it changes. */
  workersFile?: string;
  /** How often the workers file is checked for changes. */
  workersFilePollMs?: number;
  /** How long a replay request may take before the range counts as lost. */
  replayTimeoutMs?: number;
  /** Weights of the engines' own load (read from their `metrics` URL) in the cost; all 0 = not read. */
  loadWeights?: EngineLoadWeights;
  /** How often engines' /metrics are read. */
  loadPollMs?: number;
  /** Most subscribers at once (default: what the process's file-descriptor limit allows). */
  maxSubscribers?: number;
}

export const DEFAULT_REPLAY_TIMEOUT_MS = 2_000;

/** A publisher that got no subscriber, and why. */
export interface SubscribeFailure {
  workerId: bigint;
  endpoint: string;
  problem: string;
}

export class ZmqEventSource implements EventSource {
  readonly name = "zmq";
  private router: KvRouter | undefined;
  private metrics: ZmqMetrics | undefined;
  private readonly subscribers = new Map<string, EngineSubscriber>();
  private readonly pollers = new Map<string, EngineLoadPoller>();
  private fileEndpoints: ZmqEndpoint[] = [];
  /** Endpoints that registered workers announced, by worker id. */
  private readonly registered = new Map<bigint, ZmqEndpoint[]>();
  private readonly lastEventIds = new Map<string, bigint>();
  /** Per worker, its payloads' way to the index shard that owns it (null: the index decodes none on its threads). */
  private readonly lanes = new Map<bigint, ShardLane | null>();
  private watching = false;
  private readonly loggedFailures = new LogOnce("error");
  /** Registered workers that name a ZeroMQ endpoint get a subscriber for their lease. */
  private readonly observer: WorkerObserver = {
    registered: (workerId, dpRanks, feed) => {
      let endpoints: ZmqEndpoint[] = [];
      try {
        if (feed) endpoints = registeredEndpoints(workerId, dpRanks, feed.zmqEndpoint, feed.zmqReplayEndpoint);
      } catch (err) {
        if (err instanceof EndpointSpecError) throw new RouterError("invalid_argument", err.message);
        throw err;
      }
      // Subscribe now, so a registration the router cannot serve fails (and changes nothing).
      const previous = this.registered.get(workerId);
      const failed = this.setRegisteredEndpoints(workerId, endpoints).filter((f) => f.workerId === workerId);
      if (failed.length > 0) {
        if (previous === undefined) this.registered.delete(workerId);
        else this.registered.set(workerId, previous);
        this.sync();
        throw new RouterError("resource_exhausted", `cannot subscribe to ${failed[0].endpoint} for worker ${workerId}: ${failed[0].problem}`);
      }
    },
    forgotten: (workerId) => {
      if (this.registered.has(workerId)) this.setRegisteredEndpoints(workerId, []);
    },
  };

  constructor(private readonly opts: ZmqSourceOptions = {}) {}

  async start(router: KvRouter, context?: EventSourceContext): Promise<void> {
    this.router = router;
    this.metrics = new ZmqMetrics(context?.registry);
    router.workerObservers.push(this.observer);
    if (this.opts.workersFile !== undefined) {
      // A bad file at start is an error the operator must see now.
      this.fileEndpoints = parseWorkersFile(readFileSync(this.opts.workersFile, "utf8"), this.opts.workersFile);
      this.metrics.workersFileReloads.inc({ outcome: "ok" });
      watchFile(this.opts.workersFile, { interval: this.opts.workersFilePollMs ?? 1_000, persistent: false }, () =>
        this.reloadWorkersFile(),
      );
      this.watching = true;
    }
    this.sync();
  }

  async stop(): Promise<void> {
    const at = this.router?.workerObservers.indexOf(this.observer) ?? -1;
    if (at >= 0) this.router!.workerObservers.splice(at, 1);
    if (this.watching) unwatchFile(this.opts.workersFile!);
    this.watching = false;
    for (const p of this.pollers.values()) p.stop();
    this.pollers.clear();
    const all = [...this.subscribers.values()];
    this.subscribers.clear();
    await Promise.all(all.map((s) => s.stop()));
    for (const lane of this.lanes.values()) lane?.close();
    this.lanes.clear();
    this.metrics?.subscribers.set(0);
  }

  /** Sets (or, with an empty list, clears) the publishers a registered worker announced; returns those that could not start. */
  setRegisteredEndpoints(workerId: bigint, endpoints: ZmqEndpoint[]): SubscribeFailure[] {
    if (endpoints.length === 0) this.registered.delete(workerId);
    else this.registered.set(workerId, endpoints);
    return this.router ? this.sync() : [];
  }

  /** The publishers subscribed to now. */
  endpoints(): ZmqEndpoint[] {
    return [...this.subscribers.values()].map((s) => s.spec);
  }

  /** Workers whose index view may be missing blocks. */
  staleWorkers(): bigint[] {
    return [...new Set([...this.subscribers.values()].filter((s) => s.isStale()).map((s) => s.spec.workerId))];
  }

  private reloadWorkersFile(): void {
    const file = this.opts.workersFile!;
    try {
      this.fileEndpoints = parseWorkersFile(readFileSync(file, "utf8"), file);
      this.metrics!.workersFileReloads.inc({ outcome: "ok" });
      log.info("workers file reloaded", { file, endpoints: this.fileEndpoints.length });
    } catch (err) {
      this.metrics!.workersFileReloads.inc({ outcome: "invalid" });
      log.error("workers file rejected; keeping the previous worker set", { file, error: (err as Error).message });
      return;
    }
    this.sync();
  }

  /**
   * Starts subscribers for new publishers and stops those no longer listed.
   * A publisher that cannot get a subscriber (no sockets or descriptors left)
   * is logged and left out; the next sync tries it again.
   */
  private sync(): SubscribeFailure[] {
    const wanted = new Map<string, ZmqEndpoint>();
    const all = [...(this.opts.endpoints ?? []), ...this.fileEndpoints, ...[...this.registered.values()].flat()];
    for (const e of all) wanted.set(endpointKey(e), e);
    this.syncAddresses();
    for (const [key, sub] of this.subscribers) {
      if (wanted.has(key)) continue;
      this.subscribers.delete(key);
      this.pollers.get(key)?.stop();
      this.pollers.delete(key);
      this.closeLaneIfUnused(sub.spec.workerId);
      sub.stop().then(
        () => log.info("unsubscribed from engine KV events", { worker_id: sub.spec.workerId, endpoint: sub.spec.endpoint }),
        (err) => log.error("stopping a subscriber failed", { error: String(err) }),
      );
    }
    const failures: SubscribeFailure[] = [];
    for (const [key, spec] of wanted) {
      if (this.subscribers.has(key)) continue;
      const problem = this.subscribe(key, spec);
      if (problem === undefined) continue;
      failures.push({ workerId: spec.workerId, endpoint: spec.endpoint, problem });
      this.loggedFailures.log(key, "cannot subscribe to engine KV events", { worker_id: spec.workerId, endpoint: spec.endpoint, error: problem });
    }
    this.metrics!.subscribers.set(this.subscribers.size);
    return failures;
  }

  /** Starts one subscriber; returns why it could not start (its sockets are then closed). */
  private subscribe(key: string, spec: ZmqEndpoint): string | undefined {
    const room = subscriberRoomProblem(this.subscribers.size, this.opts.maxSubscribers);
    if (room !== undefined) return room;
    let sub: EngineSubscriber | undefined;
    try {
      sub = new EngineSubscriber(spec, {
        router: this.router!,
        metrics: this.metrics!,
        nextEventId: (w) => this.nextEventId(w),
        lastEventId: (w) => this.lastEventId(w),
        setLastEventId: (w, id) => this.lastEventIds.set(workerKeyString(w), id),
        laneOf: (workerId) => this.laneOf(workerId),
        replayTimeoutMs: this.opts.replayTimeoutMs ?? DEFAULT_REPLAY_TIMEOUT_MS,
        dropWorker: (caller) => this.dropWorker(caller),
      });
      sub.start();
      this.subscribers.set(key, sub);
      this.startPoller(key, spec);
      return undefined;
    } catch (err) {
      void sub?.stop().catch(() => undefined);
      return String((err as Error)?.message ?? err);
    }
  }

  /** The ip:port of the ranks listed in flags and the workers file, for gateways. */
  private syncAddresses(): void {
    const listed = new Set<string>();
    for (const e of [...(this.opts.endpoints ?? []), ...this.fileEndpoints]) {
      if (e.address === undefined) continue;
      const worker = { workerId: e.workerId, dpRank: e.dpRank };
      this.router!.addresses.set(worker, e.address, "zmq-config");
      listed.add(workerKeyString(worker));
    }
    this.router!.addresses.retain("zmq-config", listed);
  }

  private startPoller(key: string, spec: ZmqEndpoint): void {
    const weights = this.opts.loadWeights;
    // A metrics URL is polled even with both weights 0: the batch it reports (running, waiting) is read by kv-adaptive.
    if (spec.metrics === undefined) return;
    const worker = { workerId: spec.workerId, dpRank: spec.dpRank };
    const poller = new EngineLoadPoller(spec.metrics, worker, this.router!, weights ?? { queue: 0, kvUsage: 0 }, this.metrics!, this.opts.loadPollMs ?? 1_000);
    this.pollers.set(key, poller);
    poller.start();
  }

  /**
   * Forgets what the index holds for a worker whose feed lost events: every
   * dp rank of it, so the worker's other publishers now under-report too and
   * are marked stale with it.
   */
  private async dropWorker(caller: EngineSubscriber): Promise<void> {
    const { workerId } = caller.spec;
    // The clears are numbered after, and apply after, every payload of the worker queued to its shard.
    const lane = this.lanes.get(workerId);
    if (lane?.busy) await lane.quiesce();
    // Clear only ranks the index already knows, so no new (worker, rank) becomes routable.
    const known = this.router!.index.workers().filter((w) => w.workerId === workerId);
    if (known.length > 0) {
      this.router!.applyEvents(known.map((w) => ({ ...w, eventId: this.nextEventId(w), kind: "cleared" as const })));
    }
    for (const sub of this.subscribers.values()) {
      if (sub !== caller && sub.spec.workerId === workerId) sub.droppedBySibling();
    }
  }

  /**
   * Index event ids per (worker, dp_rank). Subscribers deliver batches once,
   * in seq order, so ids can simply count on from the index's last one.
   */
  private nextEventId(worker: WorkerKey): bigint {
    const last = this.lastEventId(worker);
    this.lastEventIds.set(workerKeyString(worker), last + 1n);
    return last + 1n;
  }

  private lastEventId(worker: WorkerKey): bigint {
    const key = workerKeyString(worker);
    return this.lastEventIds.get(key) ?? this.router!.index.lastEventIds().get(key) ?? 0n;
  }

  /**
   * Frees a worker's lane once no publisher of it is subscribed and nothing
   * of it is outstanding (a lane opened meanwhile would number events before
   * the old one's results are in).
   */
  private closeLaneIfUnused(workerId: bigint): void {
    const lane = this.lanes.get(workerId);
    if (lane == null) return;
    void lane.quiesce().then(() => {
      if (this.lanes.get(workerId) !== lane || [...this.subscribers.values()].some((s) => s.spec.workerId === workerId)) return;
      lane.close();
      this.lanes.delete(workerId);
    });
  }

  /** The worker's lane to its index shard, opened on first use (see ShardLane). */
  private laneOf(workerId: bigint): ShardLane | undefined {
    let lane = this.lanes.get(workerId);
    if (lane === undefined) {
      const feed = this.router!.openEngineFeed();
      lane = feed === undefined ? null : new ShardLane(feed);
      this.lanes.set(workerId, lane);
    }
    return lane ?? undefined;
  }
}
