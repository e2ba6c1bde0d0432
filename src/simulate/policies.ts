// Routing policies compared by the simulator. `kv` is the real router
// (KvRouter + PrefixIndex) fed by the engines' events, with the worker-selection
// policy its settings name (`simulate` names serve's default, kv-adaptive; settings
// that name none run the cost policy kv-router); the others are the
// usual alternatives, and `oracle-prefix` is the hit-rate ceiling.
import { type IndexEvent, workerKeyString } from "../protocols/events.js";
import { PrefixIndex } from "../indexer/prefixIndex.js";
import { KvRouter } from "../router/router.js";
import type { RouterConfig } from "../router/types.js";
import { type AdmissionConfig, AdmissionQueue } from "../router/admissionQueue.js";
import { DYNAMO_COST_WEIGHTS } from "../scheduler/costFunction.js";
import { ADAPTIVE_FIRST_ROUND, ADAPTIVE_POLICY_NAME, ADAPTIVE_SECOND_ROUND, ADAPTIVE_THIRD_ROUND, ADAPTIVE_FOURTH_ROUND, ADAPTIVE_FIFTH_ROUND, ADAPTIVE_SEVENTH_ROUND, type AdaptiveOptions } from "../scheduler/adaptivePolicy.js";
import { AGENTIC_WEIGHTS } from "../scheduler/defaults.js";
import { COST_POLICY } from "../scheduler/policies.js";
import { TWO_TIER_POLICY_TYPE } from "../scheduler/twoTierPolicy.js";
import { seededRandom } from "../util/random.js";
import type { RequestRecord, SimEngine, SimRequest } from "./engine.js";

export const POLICY_NAMES = [
  "kv",
  "kv-cost",
  "kv-ttft",
  "kv-approx",
  "dynamo-2026",
  "dynamo-agentic",
  "dynamo-two-tier-cost-fn",
  "kv-least-loaded",
  "kv-cache-greedy",
  "kv-adaptive",
  "kv-adaptive-r1",
  "kv-adaptive-r2",
  "kv-adaptive-r3",
  "kv-adaptive-r4",
  "kv-adaptive-r5",
  "kv-adaptive-r7",
  "kv-router",
  "sglang-cache-aware",
  "round-robin",
  "random",
  "least-loaded",
  "oracle-prefix",
] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

export interface Dispatch {
  worker: number;
  /** The oracle's hit, imposed on the engine instead of its own cache lookup. */
  forcedHit?: number;
  /** Blocks the router expected to be cached on the chosen worker. */
  predictedBlocks?: number;
}

export interface Policy {
  readonly name: string;
  /** The oracle runs on engines with unbounded caches. */
  readonly unboundedCache?: boolean;
  /** A worker, or undefined when the request waits in the router's queue (it comes back through `place`). */
  choose(req: SimRequest, engines: readonly SimEngine[]): Dispatch | undefined;
  /** Where a queued request goes once the router admits it (set by the fleet). */
  place?: (req: SimRequest, d: Dispatch) => void;
  /** Where a request the router refuses goes (queue full, busy, or its client's deadline passed). */
  refuse?: (req: SimRequest, reason: string) => void;
  /** Requests waiting in the router's queue. */
  queued?(): number;
  onEvents(worker: number, events: IndexEvent[]): void;
  onPrefillDone(record: RequestRecord): void;
  onFinished(record: RequestRecord): void;
  /** Periodic upkeep at virtual time `nowMs`. */
  tick(nowMs: number): void;
  /** Policy-specific figures for the report (e.g. rejected events). */
  extras(): Record<string, number>;
}

/** A clock the simulation drives: the router reads virtual time through it. */
export interface VirtualClock {
  now(): number;
}

const NO_EXPIRY_MS = 1e15;

/** Our router, in process, with the engines' events applied exactly as a server would. */
export class KvPolicy implements Policy {
  readonly router: KvRouter;
  private readonly admission: AdmissionQueue | undefined;
  /** Queued requests: when they arrived and how to take them out of the queue. */
  private readonly waiting = new Map<string, { req: SimRequest; cancel: () => void }>();
  private rejectedEvents = 0;
  private predicted = 0;
  private queuedTotal = 0;
  place?: (req: SimRequest, d: Dispatch) => void;
  refuse?: (req: SimRequest, reason: string) => void;

  constructor(
    readonly name: string,
    config: RouterConfig,
    workers: number,
    seed: number,
    private readonly clock: VirtualClock,
    admission?: AdmissionConfig,
    /** Each worker's step budget, reported at registration (the queue threshold is a fraction of it). */
    maxNumBatchedTokens = 0,
    /** A simulated client gives up after this long in the queue. */
    private readonly clientDeadlineMs = Infinity,
    /** Each worker's KV cache size in blocks, reported at registration as vLLM workers do (0 = unreported). */
    totalKvBlocks = 0,
    /** Each worker's batch slots (max_num_seqs), reported at registration as Dynamo's workers do (0 = unreported). */
    maxNumSeqs = 0,
  ) {
    this.router = new KvRouter(config, new PrefixIndex(), seededRandom(seed), () => clock.now());
    const capacity = { maxNumBatchedTokens, totalKvBlocks, maxNumSeqs };
    for (let i = 0; i < workers; i++) this.router.registerWorker(BigInt(i + 1), [0], NO_EXPIRY_MS, undefined, undefined, capacity);
    if (admission !== undefined) this.admission = new AdmissionQueue(this.router, structuredClone(admission), () => clock.now());
  }

  choose(req: SimRequest, engines: readonly SimEngine[]): Dispatch | undefined {
    // The engines' batch as each reports it every forward pass (Dynamo's ForwardPassMetrics: scheduled and
    // queued requests), through the router's load feed, as of this request's arrival.
    for (const e of engines) this.router.engineBatches.report(workerKeyString({ workerId: e.workerId, dpRank: 0 }), { running: e.running, waiting: e.waiting });
    const route = { tokens: req.tokens, requestId: req.id, sessionId: req.sessionId };
    if (this.admission === undefined) return this.dispatchOf(this.router.findBestWorker(route));
    let answered = false;
    let now: Dispatch | undefined;
    const cancel = this.admission.submit(route, (err, admitted) => {
      const queued = this.waiting.delete(req.id);
      answered = true;
      if (err !== undefined) this.refuse?.(req, err.message);
      else if (queued) this.place?.(req, this.dispatchOf(admitted!.decision));
      else now = this.dispatchOf(admitted!.decision);
    });
    if (!answered) {
      // Queued: remember it so its client's deadline can pass.
      this.waiting.set(req.id, { req, cancel });
      this.queuedTotal++;
    }
    return now;
  }

  private dispatchOf(decision: ReturnType<KvRouter["findBestWorker"]>): Dispatch {
    this.predicted += decision.overlapBlocks;
    return { worker: Number(decision.worker.workerId) - 1, predictedBlocks: decision.overlapBlocks };
  }

  queued(): number {
    return this.admission?.depth ?? 0;
  }

  onEvents(_worker: number, events: IndexEvent[]): void {
    // Approximate mode gets no events: that is the point of it.
    if (!this.router.config.useKvEvents) return;
    this.rejectedEvents += this.router.applyEvents(events).rejected;
  }

  onPrefillDone(record: RequestRecord): void {
    this.router.markPrefillCompleted(record.request.id);
  }

  onFinished(record: RequestRecord): void {
    this.router.free(record.request.id);
  }

  tick(): void {
    this.router.tick();
    if (this.waiting.size === 0) return;
    const now = this.clock.now();
    for (const [id, w] of [...this.waiting]) {
      if (now - w.req.arrivalMs < this.clientDeadlineMs) continue;
      w.cancel();
      this.waiting.delete(id);
      this.refuse?.(w.req, "deadline passed in the router's queue");
    }
  }

  extras(): Record<string, number> {
    return { rejected_events: this.rejectedEvents, predicted_hit_blocks: this.predicted, queued: this.queuedTotal };
  }
}

abstract class LoadBlindBase implements Policy {
  abstract readonly name: string;
  abstract choose(req: SimRequest, engines: readonly SimEngine[]): Dispatch;
  onEvents(): void {}
  onPrefillDone(): void {}
  onFinished(): void {}
  tick(): void {}
  extras(): Record<string, number> {
    return {};
  }
}

export class RoundRobinPolicy extends LoadBlindBase {
  readonly name = "round-robin";
  private next = 0;
  choose(_req: SimRequest, engines: readonly SimEngine[]): Dispatch {
    const worker = this.next;
    this.next = (this.next + 1) % engines.length;
    return { worker };
  }
}

export class RandomPolicy extends LoadBlindBase {
  readonly name = "random";
  private readonly random: () => number;
  constructor(seed: number) {
    super();
    this.random = seededRandom(seed);
  }
  choose(_req: SimRequest, engines: readonly SimEngine[]): Dispatch {
    return { worker: Math.floor(this.random() * engines.length) };
  }
}

/** Fewest requests queued or running; ties go to the lowest worker index. */
export class LeastLoadedPolicy extends LoadBlindBase {
  readonly name = "least-loaded";
  choose(_req: SimRequest, engines: readonly SimEngine[]): Dispatch {
    let best = 0;
    for (let i = 1; i < engines.length; i++) if (engines[i].outstanding < engines[best].outstanding) best = i;
    return { worker: best };
  }
}

/**
 * The hit-rate ceiling. Its cache is perfect: one store shared by the whole
 * fleet, unbounded, filled the moment a request arrives. A request's hit is
 * the longest prefix of its blocks that any earlier request contained.
 *
 * Why it bounds every other policy: a real engine serves block i of a prompt
 * from cache only if an earlier prefill on the same worker stored a block with
 * the same sequence hash, i.e. an earlier request began with the same i+1
 * blocks. Engines run their queue in arrival order, so that request arrived
 * first, and the oracle already counts those blocks as cached.
 *
 * Since that cache is shared, where a request runs does not change its hit;
 * it is placed round-robin (load-blind). Prefix affinity would be no better
 * for hits and much worse for load: every Mooncake prompt shares its first
 * block, so "follow the longest prefix" sends the whole trace to one worker.
 */
export class OraclePrefixPolicy extends LoadBlindBase {
  readonly name = "oracle-prefix";
  readonly unboundedCache = true;
  /** Every block key some earlier request contained. */
  private readonly seen = new Set<number>();
  private next = 0;

  choose(req: SimRequest, engines: readonly SimEngine[]): Dispatch {
    const keys = req.keys;
    let hit = 0;
    while (hit < keys.length && this.seen.has(keys[hit])) hit++;
    for (let i = hit; i < keys.length; i++) this.seen.add(keys[i]);
    const worker = this.next;
    this.next = (this.next + 1) % engines.length;
    return { worker, forcedHit: hit, predictedBlocks: hit };
  }
}

/**
 * SGLang's cache-aware policy as its router defaults it (sgl-model-gateway
 * src/policies/cache_aware.rs; defaults cache_threshold 0.3,
 * balance_abs_threshold 64, balance_rel_threshold 1.5 in src/main.rs):
 * - imbalanced (max - min load > abs and max > rel * min, load = requests in
 *   flight) -> the least loaded worker;
 * - else the worker whose approximate tree (prompts routed there) matches the
 *   longest prefix, if the match rate exceeds cache_threshold;
 * - else the worker with the smallest tree.
 * The tree is kept per worker from routing decisions only (SGLang sees no KV
 * events), in blocks instead of characters, with LRU eviction past
 * max_tree_size (67,108,864 characters ~ 4 characters per token).
 */
export class SglangCacheAwarePolicy extends LoadBlindBase {
  readonly name = "sglang-cache-aware";
  private readonly trees: Map<number, true>[];
  private readonly maxTreeBlocks: number;

  constructor(
    workers: number,
    blockSize: number,
    private readonly cacheThreshold = 0.3,
    private readonly balanceAbs = 64,
    private readonly balanceRel = 1.5,
    maxTreeChars = 67_108_864,
  ) {
    super();
    this.trees = Array.from({ length: workers }, () => new Map());
    this.maxTreeBlocks = Math.max(1, Math.floor(maxTreeChars / 4 / blockSize));
  }

  choose(req: SimRequest, engines: readonly SimEngine[]): Dispatch {
    const loads = engines.map((e) => e.outstanding);
    const min = Math.min(...loads);
    const max = Math.max(...loads);
    let worker: number;
    if (max - min > this.balanceAbs && max > min * this.balanceRel) {
      worker = loads.indexOf(min);
    } else {
      let best = 0;
      let bestMatch = -1;
      for (let w = 0; w < this.trees.length; w++) {
        const tree = this.trees[w];
        let m = 0;
        while (m < req.keys.length && tree.has(req.keys[m])) m++;
        if (m > bestMatch) [best, bestMatch] = [w, m];
      }
      const rate = req.keys.length === 0 ? 0 : bestMatch / req.keys.length;
      if (rate > this.cacheThreshold) worker = best;
      else {
        worker = 0;
        for (let w = 1; w < this.trees.length; w++) if (this.trees[w].size < this.trees[worker].size) worker = w;
      }
    }
    const tree = this.trees[worker];
    for (const k of req.keys) {
      tree.delete(k); // re-insert: most recently used last
      tree.set(k, true);
    }
    while (tree.size > this.maxTreeBlocks) tree.delete(tree.keys().next().value!);
    return { worker };
  }
}

/** Dynamo's queue threshold default (lib/kv-router/src/scheduling/config.rs). */
export const DYNAMO_DEFAULT_QUEUE_THRESHOLD = 16;

export interface PolicyOptions {
  router: RouterConfig;
  /** The `kv` policy's admission settings (queue, thresholds); undefined = none. */
  admission?: AdmissionConfig;
  /** The engines' step budget, reported by the simulated workers (0 = unknown). */
  maxNumBatchedTokens?: number;
  /** The engines' KV cache size in blocks, reported by the simulated workers (0 = unknown). */
  totalKvBlocks?: number;
  /** The engines' batch slots (max_num_seqs), reported by the simulated workers (0 = unknown). */
  maxNumSeqs?: number;
  /** Simulated clients give up after this long in a router's queue. */
  clientDeadlineMs?: number;
  workers: number;
  seed: number;
  clock: VirtualClock;
}

/** Dynamo's current defaults, whatever `kv` is set to: its built-in selector and cost weights, temperature 0, queue threshold 16, fcfs. */
export function dynamoDefaults(router: RouterConfig): { router: RouterConfig; admission: AdmissionConfig } {
  return {
    router: {
      ...router,
      ...DYNAMO_COST_WEIGHTS,
      temperature: 0,
      useKvEvents: true,
      trackActiveBlocks: true,
      predictedTtlMs: 0,
      sessionAffinityTtlMs: 0,
      workerSelectionPolicy: "default",
      routerCost: "dynamo",
    },
    admission: { thresholds: { routerQueueThreshold: DYNAMO_DEFAULT_QUEUE_THRESHOLD }, queuePolicy: "fcfs", maxQueued: Number.MAX_SAFE_INTEGER },
  };
}

/** Router settings that select a kv-adaptive instance with the given signals. */
function adaptiveInstance(name: string, adaptive: AdaptiveOptions): Pick<RouterConfig, "workerSelectionPolicy" | "policyInstances"> {
  return { workerSelectionPolicy: name, policyInstances: { [name]: { type: ADAPTIVE_POLICY_NAME, adaptive } } };
}

export function makePolicy(name: PolicyName, opts: PolicyOptions): Policy {
  const kv = (label: string, router: RouterConfig, admission = opts.admission) =>
    new KvPolicy(label, router, opts.workers, opts.seed, opts.clock, admission, opts.maxNumBatchedTokens ?? 0, opts.clientDeadlineMs, opts.totalKvBlocks ?? 0, opts.maxNumSeqs ?? 0);
  switch (name) {
    case "kv":
      return kv("kv", opts.router);
    // kv's router and settings, choosing with the cost policy `kv-router` (serve's default until issue 22's decision).
    case "kv-cost":
      return kv("kv-cost", { ...opts.router, workerSelectionPolicy: COST_POLICY });
    // The cost policy under its own name: what older comparison tables label `kv` (their routers named no policy).
    case "kv-router":
      return kv("kv-router", { ...opts.router, workerSelectionPolicy: COST_POLICY });
    case "kv-ttft":
      // The ttft cost belongs to the cost policy, whatever `kv` selects.
      return kv("kv-ttft", { ...opts.router, routerCost: "ttft", workerSelectionPolicy: COST_POLICY });
    case "kv-approx":
      return kv("kv-approx", { ...opts.router, useKvEvents: false });
    case "dynamo-2026": {
      const d = dynamoDefaults(opts.router);
      return kv("dynamo-2026", d.router, d.admission);
    }
    // Dynamo as its agentic preset runs it (router-presets.md): its defaults but those three weights.
    case "dynamo-agentic": {
      const d = dynamoDefaults(opts.router);
      return kv("dynamo-agentic", { ...d.router, ...AGENTIC_WEIGHTS }, d.admission);
    }
    // Dynamo with worker_selection choosing its two-tier policy (Dynamo's default parameters).
    case "dynamo-two-tier-cost-fn": {
      const d = dynamoDefaults(opts.router);
      return kv("dynamo-two-tier-cost-fn", { ...d.router, workerSelectionPolicy: TWO_TIER_POLICY_TYPE }, d.admission);
    }
    // kv's router and settings, choosing by the load it tracks alone.
    case "kv-least-loaded":
      return kv("kv-least-loaded", { ...opts.router, workerSelectionPolicy: "least-loaded" });
    // kv's router and settings, following the longest cached prefix (worker-selection policy `cache-greedy`).
    case "kv-cache-greedy":
      return kv("kv-cache-greedy", { ...opts.router, workerSelectionPolicy: "cache-greedy" });
    // kv's router and settings, choosing with the load-adaptive cost (worker-selection policy `kv-adaptive`).
    case "kv-adaptive":
      return kv("kv-adaptive", { ...opts.router, workerSelectionPolicy: "kv-adaptive" });
    // The same cost with the first round's signals (prompts queued per worker, no KV pressure), to compare.
    case "kv-adaptive-r1":
      return kv("kv-adaptive-r1", { ...opts.router, ...adaptiveInstance("kv-adaptive-r1", ADAPTIVE_FIRST_ROUND) });
    // The second round's signals (no measured wait), to compare with the third.
    case "kv-adaptive-r2":
      return kv("kv-adaptive-r2", { ...opts.router, ...adaptiveInstance("kv-adaptive-r2", ADAPTIVE_SECOND_ROUND) });
    // The third round's signals (no batch state), to compare with the fourth.
    case "kv-adaptive-r3":
      return kv("kv-adaptive-r3", { ...opts.router, ...adaptiveInstance("kv-adaptive-r3", ADAPTIVE_THIRD_ROUND) });
    // The fourth round's signals (the prefill term clamped at zero), to compare with the fifth.
    case "kv-adaptive-r4":
      return kv("kv-adaptive-r4", { ...opts.router, ...adaptiveInstance("kv-adaptive-r4", ADAPTIVE_FOURTH_ROUND) });
    // The fifth round's signals (no batch-slot pressure), to compare with the sixth.
    case "kv-adaptive-r5":
      return kv("kv-adaptive-r5", { ...opts.router, ...adaptiveInstance("kv-adaptive-r5", ADAPTIVE_FIFTH_ROUND) });
    // The seventh round's candidate (no slot-wait charge), which did not replace the sixth's as kv-adaptive.
    case "kv-adaptive-r7":
      return kv("kv-adaptive-r7", { ...opts.router, ...adaptiveInstance("kv-adaptive-r7", ADAPTIVE_SEVENTH_ROUND) });
    case "sglang-cache-aware":
      return new SglangCacheAwarePolicy(opts.workers, opts.router.blockSize);
    case "round-robin":
      return new RoundRobinPolicy();
    case "random":
      return new RandomPolicy(opts.seed);
    case "least-loaded":
      return new LeastLoadedPolicy();
    case "oracle-prefix":
      return new OraclePrefixPolicy();
  }
}
