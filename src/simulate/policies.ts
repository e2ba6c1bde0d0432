// Routing policies compared by the simulator. `kv` is the real router
// (KvRouter + PrefixIndex) fed by the engines' events; the others are the
// usual alternatives, and `oracle-prefix` is the hit-rate ceiling.
import type { IndexEvent } from "../indexer/types.js";
import { PrefixIndex } from "../indexer/prefixIndex.js";
import { KvRouter, type RouterConfig } from "../router/router.js";
import { seededRandom } from "../util/random.js";
import type { RequestRecord, SimEngine, SimRequest } from "./engine.js";

export const POLICY_NAMES = ["kv", "kv-approx", "round-robin", "random", "least-loaded", "oracle-prefix"] as const;
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
  choose(req: SimRequest, engines: readonly SimEngine[]): Dispatch;
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
  private rejectedEvents = 0;
  private predicted = 0;

  constructor(
    readonly name: string,
    config: RouterConfig,
    workers: number,
    seed: number,
    clock: VirtualClock,
  ) {
    this.router = new KvRouter(config, new PrefixIndex(), seededRandom(seed), () => clock.now());
    for (let i = 0; i < workers; i++) this.router.registerWorker(BigInt(i + 1), [0], NO_EXPIRY_MS);
  }

  choose(req: SimRequest): Dispatch {
    const decision = this.router.findBestWorker({ tokens: req.tokens, requestId: req.id });
    this.predicted += decision.overlapBlocks;
    return { worker: Number(decision.worker.workerId) - 1, predictedBlocks: decision.overlapBlocks };
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
  }

  extras(): Record<string, number> {
    return { rejected_events: this.rejectedEvents, predicted_hit_blocks: this.predicted };
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

export interface PolicyOptions {
  router: RouterConfig;
  workers: number;
  seed: number;
  clock: VirtualClock;
}

export function makePolicy(name: PolicyName, opts: PolicyOptions): Policy {
  switch (name) {
    case "kv":
      return new KvPolicy("kv", opts.router, opts.workers, opts.seed, opts.clock);
    case "kv-approx":
      return new KvPolicy("kv-approx", { ...opts.router, useKvEvents: false }, opts.workers, opts.seed, opts.clock);
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
