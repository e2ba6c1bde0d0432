// The router's core: one object that owns the index, the load tracker and the
// worker registry, and answers "which worker should take this prompt?".
// It speaks plain typed data; the gRPC layer converts at the edge.
import { randomFillSync } from "node:crypto";
import { hashPromptEagle } from "../hashing/blockHash.js";
import { hashPromptWords } from "../hashing/prompt.js";
import { HashedPrompt, SequenceHashes } from "../hashing/sequenceHashes.js";
import { ApproximateTracker } from "../indexer/approximate.js";
import { ApproximateLru } from "../indexer/approximateLru.js";
import type { EventBatch } from "../protocols/eventBatch.js";
import { LowerTiers, type TierOverlaps } from "../indexer/lowerTiers.js";
import type { EngineFeed, KvIndex } from "../indexer/types.js";
import { type IndexEvent, type WorkerKey, workerKeyString } from "../protocols/events.js";
import { ActiveSequences, type WorkerLoad } from "../scheduler/activeSequences.js";
import { type Score, minActivePrefillTokens } from "../scheduler/costFunction.js";
import { type CostOverride, costOverrideProblem } from "../scheduler/costOverride.js";
import { type EngineBatchReport, EngineBatches } from "../scheduler/engineBatch.js";
import { COST_POLICY, WorkerSelectionPolicies } from "../scheduler/policies.js";
import type { PolicyCandidate, Selection, WorkerSelectionPolicy } from "../scheduler/workerSelection.js";
import { PredictedBlocks } from "../scheduler/predictions.js";
import { PrefillRates, decodeSlowdown, estimateTtftMs } from "../scheduler/prefillRates.js";
import { type AffinityOutcome, SessionAffinity } from "../scheduler/sessionAffinity.js";
import { log } from "../util/log.js";
import { WorkerAddresses, rankAddress } from "../workers/addresses.js";
import { WorkerRegistry } from "../workers/registry.js";
import { RouterError } from "./errors.js";
import {
  type ActiveChange,
  type CandidateState,
  DEFAULT_PREFILL_TOKENS_PER_SEC,
  MAX_SESSIONS,
  type IngestSummary,
  type RouteDecision,
  type RouteRequest,
  type RouterConfig,
  type SchedulingObserver,
  type WorkerCapacity,
  type WorkerFeed,
  type WorkerObserver,
  type WorkerStatus,
  DYNAMO_DEFAULT_MAX_BATCHED_TOKENS,
  DEFAULT_TTFT_DECODE_SLOWDOWN_PER_BLOCK,
} from "./types.js";
import { type RawIngest, WORKER_RANKS_FLAG, applyEventBatch, applyEventBatchAsync, applyEvents, applyEventsAsync, openRawIngest, withIndexCapacity } from "./ingest.js";
import { prefillBookingId, routeDisaggregated } from "./disaggregation.js";

/** Candidate workers and their key strings, index for index. */
interface Candidates {
  workers: readonly WorkerKey[];
  keys: readonly string[];
}

/** The blocks a request holds when block tracking is off. */
const NO_BLOCKS = new SequenceHashes(new Uint32Array(0));

interface KnownWorkers extends Candidates {
  indexVersion: number;
  registryVersion: number;
  byKey: ReadonlyMap<string, WorkerKey>;
}

export class KvRouter {
  readonly active: ActiveSequences;
  readonly registry: WorkerRegistry;
  private known?: KnownWorkers;
  /** Where each (worker, dp_rank) serves HTTP, for gateways (EPP). */
  readonly addresses = new WorkerAddresses();
  readonly workerObservers: WorkerObserver[] = [];
  /** Extra cost in blocks per worker key (e.g. the engine's own queue depth); set by load feeds. */
  readonly extraCost = new Map<string, number>();
  /** What engines report of their batch (running, waiting); set by load feeds, read with the slots they registered. */
  readonly engineBatches: EngineBatches;
  /** Blocks on host memory, disk and external stores (the GPU's are in `index`). */
  readonly lowerTiers: LowerTiers;
  private readonly approx: ApproximateTracker | undefined;
  /** --router-approximate-cache-policy lru: ranks of known size keep what fits (others use `approx`). */
  readonly approxLru: ApproximateLru | undefined;
  private readonly predictions: PredictedBlocks | undefined;
  /** Learned prefill rates (ttft cost only). */
  readonly prefillRates: PrefillRates | undefined;
  readonly sessions: SessionAffinity | undefined;
  /** Worker-selection policies by name, and the one requests use unless they name another. */
  private readonly policies: WorkerSelectionPolicies;
  private readonly defaultPolicy: WorkerSelectionPolicy;
  /** Engine sizes reported at registration, by worker id. */
  private readonly capacities = new Map<bigint, WorkerCapacity>();
  /** Called when load may have dropped or workers changed (the admission queue drains). */
  readonly capacityListeners: (() => void)[] = [];
  schedulingObserver: SchedulingObserver = {};
  /** Told about every local add / prefill-done / free (replica sync publishes them). */
  activeListener?: (change: ActiveChange) => void;

  constructor(
    readonly config: RouterConfig,
    readonly index: KvIndex,
    private readonly random: () => number = Math.random,
    private readonly now: () => number = Date.now,
  ) {
    this.active = new ActiveSequences(config.activeRequestTtlMs, now, {
      maxRequests: config.maxActiveRequests ?? Infinity,
      maxBlocks: config.maxActiveBlocks ?? Infinity,
    });
    this.registry = new WorkerRegistry(now);
    this.engineBatches = new EngineBatches(now);
    this.lowerTiers = new LowerTiers(config.lowerTierMaxBlocks ?? 0, (worker, ext) => index.sequenceHashOf(worker, ext));
    this.approx = config.useKvEvents
      ? undefined
      : new ApproximateTracker(index, config.approxTtlMs, config.approxMaxBlocks, now);
    this.approxLru = this.approx && config.approxCachePolicy === "lru" ? new ApproximateLru(index, this.approx) : undefined;
    this.predictions =
      config.useKvEvents && (config.predictedTtlMs ?? 0) > 0
        ? new PredictedBlocks(config.predictedTtlMs!, config.approxMaxBlocks, now)
        : undefined;
    this.prefillRates =
      config.routerCost === "ttft"
        ? new PrefillRates((config.prefillTokensPerSec ?? DEFAULT_PREFILL_TOKENS_PER_SEC) / 1000, now)
        : undefined;
    this.sessions =
      (config.sessionAffinityTtlMs ?? 0) > 0
        ? new SessionAffinity(config.sessionAffinitySlack ?? 0, config.sessionAffinityTtlMs!, MAX_SESSIONS, now)
        : undefined;
    this.policies = new WorkerSelectionPolicies(config.policyInstances, config.hostCacheHitWeight);
    const chosen = this.policies.get(config.workerSelectionPolicy ?? COST_POLICY);
    if (chosen === undefined) throw new Error(this.policies.unknown(config.workerSelectionPolicy!));
    this.defaultPolicy = chosen;
  }

  /** Every candidate's load and reported size (throws as routing would for unknown workers). */
  candidateStates(allowed?: readonly WorkerKey[]): CandidateState[] {
    const { workers, keys } = this.candidates(allowed);
    return workers.map((worker, i) => {
      const key = keys[i];
      const reported = this.capacities.get(worker.workerId);
      const fallback = this.config.defaultMaxNumBatchedTokens ?? DYNAMO_DEFAULT_MAX_BATCHED_TOKENS;
      return {
        key,
        load: this.active.load(key),
        capacity: {
          maxNumBatchedTokens: reported?.maxNumBatchedTokens || fallback,
          totalKvBlocks: reported?.totalKvBlocks ?? 0,
          maxNumSeqs: reported?.maxNumSeqs ?? 0,
        },
      };
    });
  }

  /** The prompt's tokens not cached on the candidate that caches most of it. */
  uncachedTokens(req: RouteRequest): number {
    const sequence = this.sequenceHashes(req.tokens, req.loraName ?? "", req.cacheNamespace ?? "");
    let best = 0;
    for (const overlap of this.index.findMatchesWords(sequence.words, sequence.length).values()) best = Math.max(best, overlap);
    return Math.max(0, req.tokens.length - best * this.config.blockSize);
  }

  /**
   * A request's sequence hashes, as the workers' events hash its blocks (Eagle
   * windows with --eagle): as u32 words, bigints only if a reader asks. A
   * prompt its decoder hashed (HashedPrompt) brings its own.
   */
  sequenceHashes(tokens: ArrayLike<number> | HashedPrompt, loraName = "", cacheNamespace = ""): SequenceHashes {
    const { blockSize, eagle } = this.config;
    if (tokens instanceof HashedPrompt) {
      // The decoder is built from this router's settings (startServer), so this holds by construction.
      if (!eagle && tokens.fits(blockSize, loraName, cacheNamespace)) return tokens.sequence;
      throw new Error(`a prompt hashed for block size ${tokens.blockSize} reached a router that hashes blocks of ${blockSize}${eagle ? " (Eagle)" : ""}`);
    }
    return eagle
      ? SequenceHashes.fromBigints(hashPromptEagle(tokens, blockSize, loraName, cacheNamespace).sequence)
      : hashPromptWords(tokens, blockSize, loraName, cacheNamespace);
  }

  findBestWorker(req: RouteRequest): RouteDecision {
    if (req.prefillWorkers !== undefined && req.prefillWorkers.length > 0) return routeDisaggregated(this, req);
    const { blockSize } = this.config;
    const override = req.costOverride ?? {};
    const policy = this.policyFor(req.workerSelectionPolicy, override);
    const overrideProblem = costOverrideProblem(override);
    if (overrideProblem !== undefined) throw new RouterError("invalid_argument", overrideProblem);
    if (req.requestId && this.active.has(req.requestId)) {
      const holder = this.active.get(req.requestId)!.workerKey;
      throw new RouterError(
        "already_exists",
        `request_id "${req.requestId}" is already active on worker ${holder}; Free it before routing it again`,
      );
    }
    const { workers: candidates, keys } = this.candidates(req.allowedWorkers);
    const sequence = this.sequenceHashes(req.tokens, req.loraName ?? "", req.cacheNamespace ?? "");
    if (req.requestId) {
      const full = this.active.roomProblem(this.config.trackActiveBlocks ? sequence.length : 0);
      if (full !== undefined) throw new RouterError("resource_exhausted", full);
    }
    const overlaps = this.index.findMatchesWords(sequence.words, sequence.length);
    // Lower tiers key their maps by bigint: made only when a tier holds anything.
    const tierOverlaps: TierOverlaps = this.lowerTiers.size() === 0 ? new Map() : this.lowerTiers.continueMatches(sequence.bigints, overlaps);
    const isl = req.tokens.length;
    const assumeKvReuse = override.assumeKvReuse ?? this.config.assumeKvReuse;
    const trackPrefillTokens = override.trackPrefillTokens ?? this.config.trackPrefillTokens;
    const blocks = !this.config.trackActiveBlocks ? NO_BLOCKS : assumeKvReuse ? sequence : this.uniqueBlockIds(sequence.length);
    const loads = keys.map((key) => this.active.load(key));
    const params = {
      ...this.config,
      overlapScoreCredit: override.overlapScoreCredit ?? this.config.overlapScoreCredit,
      prefillLoadScale: override.prefillLoadScale ?? this.config.prefillLoadScale,
      trackPrefillTokens,
      isl,
      minActivePrefillTokens: minActivePrefillTokens(loads),
    };

    const outputBlocks = Math.ceil((req.expectedOutputTokens ?? 0) / blockSize);
    const predictedByKey = new Map<string, number>();
    const policyCandidates: PolicyCandidate[] = candidates.map((worker, i) => {
      const key = keys[i];
      const tiers = tierOverlaps.get(key);
      const known = overlaps.get(key) ?? 0;
      const overlapBlocks = this.predictions ? this.predictions.extend(key, sequence.bigints, known) : known;
      if (overlapBlocks > known) predictedByKey.set(key, overlapBlocks - known);
      return {
        worker,
        overlapBlocks,
        hostOverlapBlocks: tiers?.host_pinned ?? 0,
        // Disk and external stores share the disk weight, as in Dynamo.
        diskOverlapBlocks: (tiers?.disk ?? 0) + (tiers?.external ?? 0),
        // Output hints project decode load: the blocks those tokens will fill.
        load: { ...loads[i], decodeBlocks: loads[i].decodeBlocks + loads[i].outputBlocks },
        newDecodeBlocks: this.active.newBlocks(key, blocks) + outputBlocks,
        extraCost: this.extraCost.get(key) ?? 0,
        ttftMs: this.prefillRates ? this.ttftMs(key, loads[i], overlapBlocks, isl) : undefined,
        stepTokens: this.capacities.get(worker.workerId)?.maxNumBatchedTokens ?? 0,
        kvBlocks: this.capacities.get(worker.workerId)?.totalKvBlocks ?? 0,
        prefillWaitMs: this.active.prefillWaitMs(key),
        batch: this.engineBatches.batch(key, this.capacities.get(worker.workerId)?.maxNumSeqs ?? 0, loads[i].requests),
        prefillMsPerToken: this.active.prefillMsPerToken,
        decodeMs: this.active.decodeMs,
      };
    });
    const selection = policy.select({
      candidates: policyCandidates,
      params,
      temperature: override.temperature ?? this.config.temperature,
      requestBlocks: Math.ceil(isl / blockSize),
      random: this.random,
    });
    const { chosen, reason } = this.withAffinity(req.sessionId, policy, selection, req.requestId !== undefined);
    const chosenKey = workerKeyString(chosen.worker);

    // Approximate mode first: an index with no slot left refuses before any state changes.
    if (this.approxLru) withIndexCapacity(() => this.approxLru!.routed(chosen.worker, sequence.bigints, req.requestId));
    else if (this.approx) withIndexCapacity(() => this.approx!.routed(chosen.worker, sequence.bigints));
    if (req.requestId) {
      const prefillTokens = trackPrefillTokens ? Math.max(0, isl - chosen.overlapBlocks * blockSize) : 0;
      // The estimate's inputs as scored: work queued ahead plus this prompt, the decode load before it.
      const before = this.active.load(chosenKey);
      this.prefillRates?.routed(req.requestId, chosenKey, before.prefillTokens + Math.max(0, isl - chosen.overlapBlocks * blockSize), this.slowdown(before));
      this.active.add(req.requestId, chosenKey, blocks.bigints, prefillTokens, outputBlocks);
      this.activeListener?.({ kind: "add", requestId: req.requestId, workerKey: chosenKey, blocks: blocks.bigints, prefillTokens, outputBlocks });
    }
    // Only a routed request (one with a request_id, which needs the token when there is one)
    // leaves predictions behind: a pure query changes nothing.
    if (req.requestId) this.predictions?.routed(chosenKey, sequence.bigints);

    const scores = selection.scores.sort((a, b) => a.logit - b.logit);
    return {
      worker: chosen.worker,
      overlapBlocks: chosen.overlapBlocks,
      promptBlocks: sequence.length,
      predictedBlocks: predictedByKey.get(chosenKey) ?? 0,
      scores,
      tierOverlaps,
      policy: policy.name,
      reason,
    };
  }

  /**
   * The policy a request names, else the router's; an unknown name is the caller's error.
   * A request that overrides a cost weight and names no policy gets the `kv-router` cost
   * policy when the router's sets its own weights: the override keeps Dynamo's meaning.
   */
  private policyFor(name: string | undefined, override: CostOverride): WorkerSelectionPolicy {
    if (name === undefined || name === "") {
      const weighted = override.overlapScoreCredit !== undefined || override.prefillLoadScale !== undefined;
      return weighted && this.defaultPolicy.ownWeights ? this.policies.get(COST_POLICY)! : this.defaultPolicy;
    }
    const policy = this.policies.get(name);
    if (policy === undefined) throw new RouterError("invalid_argument", `worker_selection_policy: ${this.policies.unknown(name)}`);
    return policy;
  }

  /** Names a request may give as its worker-selection policy. */
  policyNames(): string[] {
    return this.policies.names();
  }

  private slowdown(load: WorkerLoad): number {
    return decodeSlowdown(load.decodeBlocks, this.config.ttftDecodeSlowdownPerBlock ?? DEFAULT_TTFT_DECODE_SLOWDOWN_PER_BLOCK);
  }

  /** The ttft cost: estimated ms to this prompt's first token on the worker. */
  private ttftMs(key: string, load: WorkerLoad, overlapBlocks: number, isl: number): number {
    const uncached = Math.max(0, isl - overlapBlocks * this.config.blockSize);
    return estimateTtftMs(load.prefillTokens, uncached, this.prefillRates!.rate(key), this.slowdown(load));
  }

  /**
   * Session affinity over the policy's pick. Without a mode (kv-router's rule) a
   * session keeps its worker while that costs at most the slack more than the best;
   * `hard` keeps it while it is a candidate; `soft` too, but only under the cost
   * policies (Dynamo's built-in selector), and others choose freely.
   * `record`: a routed request (not a pure query) binds its session.
   */
  private withAffinity(sessionId: string | undefined, policy: WorkerSelectionPolicy, selection: Selection, record: boolean): { chosen: Score; reason: string } {
    let { chosen, reason } = selection;
    if (!sessionId || this.sessions === undefined) return { chosen, reason };
    const bound = this.sessions.boundWorker(sessionId);
    let outcome: AffinityOutcome = "new";
    if (bound !== undefined) {
      const { scores } = selection;
      const sticky = scores.find((s) => workerKeyString(s.worker) === bound);
      const mode = this.config.sessionAffinityMode;
      const keep =
        sticky !== undefined &&
        (mode === undefined ? sticky.logit - Math.min(...scores.map((s) => s.logit)) <= this.sessions.slack : mode === "hard" || policy.keepsSoftBinding);
      if (keep) {
        chosen = sticky;
        reason = `session binding (${mode ?? "within slack"})`;
        outcome = "kept";
      } else {
        // A soft binding the policy chose anyway is kept; any other move breaks it.
        outcome = mode !== undefined && sticky === chosen ? "kept" : "broken";
      }
    }
    if (record) this.sessions.bind(sessionId, workerKeyString(chosen.worker));
    this.schedulingObserver.affinity?.(outcome);
    return { chosen, reason };
  }

  markPrefillCompleted(requestId: string): boolean {
    // A remote prefill ends here: its booking on the prefill worker goes.
    const remote = this.active.has(prefillBookingId(requestId)) && this.freeOne(prefillBookingId(requestId));
    return this.markPrefillDone(requestId) || remote;
  }

  private markPrefillDone(requestId: string): boolean {
    const request = this.active.get(requestId);
    const done = this.active.markPrefillCompleted(requestId);
    if (done) this.prefillRates?.prefillDone(requestId);
    if (done && request) this.activeListener?.({ kind: "prefill_done", requestId, workerKey: request.workerKey });
    if (done) this.capacityChanged();
    return done;
  }

  free(requestId: string): boolean {
    if (this.active.has(prefillBookingId(requestId))) this.freeOne(prefillBookingId(requestId));
    return this.freeOne(requestId);
  }

  private freeOne(requestId: string): boolean {
    const request = this.active.get(requestId);
    const freed = this.active.free(requestId);
    this.prefillRates?.forget(requestId);
    this.approxLru?.release(requestId);
    if (freed && request) this.activeListener?.({ kind: "free", requestId, workerKey: request.workerKey });
    if (freed) this.capacityChanged();
    return freed;
  }

  /** Tells the capacity listeners (the admission queue) that a worker may have room now. */
  capacityChanged(): void {
    for (const listener of this.capacityListeners) listener();
  }

  /** Applies worker events, every tier, in order (sources that speak IndexEvents). */
  applyEvents(events: readonly IndexEvent[], restore = false): IngestSummary {
    return applyEvents(this.index, this.lowerTiers, events, restore);
  }

  /** Same as applyEvents() on a flat batch (the gRPC ingest path). */
  applyEventBatch(batch: EventBatch, restore = false): IngestSummary {
    return applyEventBatch(this.index, this.lowerTiers, batch, restore);
  }

  /** applyEvents() that lets index threads apply while the caller goes on (the event planes; see KvIndex.applyBatchAsync). */
  applyEventsAsync(events: readonly IndexEvent[], restore = false): Promise<IngestSummary> {
    return applyEventsAsync(this.index, this.lowerTiers, events, restore);
  }

  /** applyEventBatch() that lets index threads apply while the caller goes on (see KvIndex.applyBatchAsync). */
  applyEventBatchAsync(batch: EventBatch, restore = false): Promise<IngestSummary> {
    return applyEventBatchAsync(this.index, this.lowerTiers, batch, restore);
  }

  /** A client stream's raw IngestKvEvents applies on the index's shard threads, or undefined (see KvIndex.openRawStream). */
  openRawIngest(): RawIngest | undefined {
    return openRawIngest(this.index);
  }

  /** An engine feed whose payloads the index's shard threads decode and apply, or undefined (see KvIndex.openEngineFeed). */
  openEngineFeed(): EngineFeed | undefined {
    return this.index.openEngineFeed?.();
  }

  /** Stored events that rebuild the index, every tier (see DumpIndex). */
  *dump(): Iterable<IndexEvent> {
    yield* this.index.dump();
    yield* this.lowerTiers.dump(this.index.lastEventIds());
  }

  /** `address` is rank 0's ip:port; rank r serves on port + r. */
  registerWorker(workerId: bigint, dpRanks: number[], ttlMs?: number, feed?: WorkerFeed, address?: string, capacity?: WorkerCapacity): number {
    const ttl = ttlMs && ttlMs > 0 ? ttlMs : this.config.workerLeaseTtlMs;
    const maxRanks = this.config.maxDpRanks ?? Infinity;
    if (dpRanks.length > maxRanks) {
      throw new RouterError(
        "resource_exhausted",
        `dp_ranks has ${dpRanks.length} entries; a worker may register at most ${maxRanks} (--max-dp-ranks)`,
      );
    }
    const ranks = dpRanks.length > 0 ? [...new Set(dpRanks)] : [0];
    const rankAddresses = address ? ranks.map((r) => rankAddress(address, r)) : [];
    const limit = this.index.capacity;
    const pairs = this.registry.pairCount - (this.registry.get(workerId)?.dpRanks.length ?? 0) + ranks.length;
    if (pairs > limit) {
      throw new RouterError(
        "resource_exhausted",
        `registering worker ${workerId} with ${ranks.length} dp ranks would make ${pairs} registered (worker, dp_rank) pairs; ` +
          `the limit is ${limit} (${WORKER_RANKS_FLAG})`,
      );
    }
    for (const o of this.workerObservers) o.registered?.(workerId, ranks, feed);
    this.registry.register(workerId, ranks, ttl);
    ranks.forEach((dpRank, i) => {
      if (address) this.addresses.set({ workerId, dpRank }, rankAddresses[i], "registration");
    });
    if (capacity !== undefined) this.capacities.set(workerId, capacity);
    for (const dpRank of ranks) this.approxLru?.setCapacity({ workerId, dpRank }, capacity?.totalKvBlocks ?? 0);
    this.capacityChanged();
    return ttl;
  }

  /** Renews the lease; `batch` is the engine's batch per rank as it reports it (ranks it did not register are refused). */
  keepAlive(workerId: bigint, batch: readonly ({ dpRank: number } & EngineBatchReport)[] = []): number {
    const reg = this.registry.get(workerId);
    if (reg !== undefined && batch.length > reg.dpRanks.length) {
      throw new RouterError("invalid_argument", `batch has ${batch.length} reports; worker ${workerId} registered ${reg.dpRanks.length} ranks`);
    }
    const unknown = batch.find((b) => reg !== undefined && !reg.dpRanks.includes(b.dpRank));
    if (unknown !== undefined) {
      throw new RouterError("invalid_argument", `batch reports dp_rank ${unknown.dpRank}; worker ${workerId} registered ranks ${reg!.dpRanks.join(", ")}`);
    }
    const renewed = this.registry.keepAlive(workerId);
    if (renewed === undefined) {
      throw new RouterError("not_found", `worker ${workerId} holds no lease; call RegisterWorker first`);
    }
    for (const b of batch) this.engineBatches.report(workerKeyString({ workerId, dpRank: b.dpRank }), b);
    return renewed.ttlMs;
  }

  /** Forgets a worker: its lease, its cached blocks and its load. Returns dropped blocks. */
  deregisterWorker(workerId: bigint): number {
    const wasRegistered = this.registry.deregister(workerId);
    const known = this.index.workers().some((w) => w.workerId === workerId);
    if (!wasRegistered && !known) throw new RouterError("not_found", `worker ${workerId} is not known`);
    return this.forgetWorkers([workerId])[0];
  }

  listWorkers(): WorkerStatus[] {
    const counts = this.index.blockCounts();
    const lower = this.lowerTiers.blockCounts();
    const eventIds = this.index.lastEventIds();
    const now = this.now();
    return [...this.knownWorkers().values()].map((worker) => {
      const key = workerKeyString(worker);
      const reg = this.registry.get(worker.workerId);
      return {
        worker,
        registered: reg !== undefined,
        leaseRemainingMs: reg ? Math.max(0, reg.expiresAt - now) : 0,
        cachedBlocks: counts.get(key) ?? 0,
        lowerTierBlocks: lower.get(key) ?? { host_pinned: 0, disk: 0, external: 0 },
        load: this.active.load(key),
        lastEventId: eventIds.get(key) ?? 0n,
        prefillTokensPerSec: this.prefillRates ? this.prefillRates.rate(key) * 1000 : 0,
      };
    });
  }

  /** Periodic upkeep: expired leases, requests never freed, approximate blocks past TTL. */
  tick(): { expiredWorkers: bigint[]; expiredRequests: string[]; expiredBlocks: number } {
    const expiredWorkers = this.registry.expire();
    const dropped = this.forgetWorkers(expiredWorkers);
    expiredWorkers.forEach((id, i) => log.info("worker lease expired; removed", { worker_id: id, dropped_blocks: dropped[i] }));
    const expiredRequests = this.active.expire();
    for (const id of expiredRequests) this.approxLru?.release(id);
    if (expiredRequests.length > 0) {
      log.warn("freed requests never released by their client", { count: expiredRequests.length });
    }
    const expiredBlocks = this.approx?.expire() ?? 0;
    if (this.predictions) {
      const outcomes = this.predictions.expire((key, blocks) => this.index.findMatches(blocks).get(key) ?? 0);
      if (outcomes.confirmed + outcomes.wrong > 0) this.schedulingObserver.predictions?.(outcomes);
    }
    this.sessions?.expire();
    if (expiredWorkers.length > 0 || expiredRequests.length > 0) this.capacityChanged();
    return { expiredWorkers, expiredRequests, expiredBlocks };
  }

  /** Longest allowed_workers list accepted: no more pairs than the index and the registry can hold. */
  get maxAllowedWorkers(): number {
    return 2 * (Number.isFinite(this.index.capacity) ? this.index.capacity : 65_536);
  }

  /** Every routable (worker, dp_rank): registered ranks plus ranks seen in events, by key. Shared: do not modify. */
  knownWorkers(): ReadonlyMap<string, WorkerKey> {
    return this.knownSet().byKey;
  }

  /**
   * The known set, rebuilt only when the registry or the index's worker set
   * changed: a query reuses the list and its key strings instead of building
   * a Map and a string per worker each time.
   */
  private knownSet(): KnownWorkers {
    const indexVersion = this.index.workerSetVersion;
    const cached = this.known;
    if (cached !== undefined && cached.indexVersion === indexVersion && cached.registryVersion === this.registry.version) {
      return cached;
    }
    const byKey = new Map<string, WorkerKey>();
    for (const reg of this.registry.all()) {
      for (const dpRank of reg.dpRanks) {
        const w = { workerId: reg.workerId, dpRank };
        byKey.set(workerKeyString(w), w);
      }
    }
    for (const w of this.index.workers()) byKey.set(workerKeyString(w), w);
    this.known = { indexVersion, registryVersion: this.registry.version, byKey, workers: [...byKey.values()], keys: [...byKey.keys()] };
    return this.known;
  }

  /** The workers a request may go to, with their keys: all known ones, or the allowed subset (each must be known). */
  private candidates(allowed: readonly WorkerKey[] = []): Candidates {
    const most = this.maxAllowedWorkers;
    if (allowed.length > most) {
      throw new RouterError("invalid_argument", `allowed_workers has ${allowed.length} entries; at most ${most} (${WORKER_RANKS_FLAG}) are accepted`);
    }
    const known = this.knownSet();
    if (allowed.length === 0) {
      if (known.workers.length === 0) {
        throw new RouterError(
          "failed_precondition",
          "no workers are known yet: register workers (RegisterWorker) or send their KV events",
        );
      }
      return known;
    }
    const chosen = new Map<string, WorkerKey>();
    allowed.forEach((w, i) => {
      const key = workerKeyString(w);
      const worker = known.byKey.get(key);
      if (worker === undefined) {
        throw new RouterError(
          "invalid_argument",
          `allowed_workers[${i}]: worker ${w.workerId} dp_rank ${w.dpRank} is not known`,
        );
      }
      chosen.set(key, worker); // listing a worker twice does not double its chances
    });
    return { workers: [...chosen.values()], keys: [...chosen.keys()] };
  }

  /** Block ids no other request shares (random, so replicas do not collide): Dynamo's behaviour when KV reuse is not assumed. */
  private uniqueBlockIds(n: number): SequenceHashes {
    return new SequenceHashes(randomFillSync(new Uint32Array(2 * n)));
  }

  /**
   * Forgets workers: their load, cached blocks and everything keyed by them. Returns the
   * blocks dropped per worker. A lease sweep can drop a thousand workers at once, so each
   * table is walked once for the whole batch (and active requests by worker), never once
   * per worker.
   */
  private forgetWorkers(workerIds: readonly bigint[]): number[] {
    if (workerIds.length === 0) return [];
    const ids = new Set(workerIds.map(String));
    // Keys are "id:rank": the id's text is matched as is, without parsing a BigInt per entry.
    const ofWorkers = (key: string) => ids.has(key.slice(0, key.indexOf(":")));
    for (const id of workerIds) this.active.dropWorker(id);
    this.predictions?.forgetWorker(ofWorkers);
    this.sessions?.forgetWorker(ofWorkers);
    this.prefillRates?.forgetWorker(ofWorkers);
    this.engineBatches.forgetWorker(ofWorkers);
    const removed = workerIds.map((id) => {
      this.approx?.forgetWorker(id);
      this.approxLru?.forgetWorker(id);
      this.addresses.forgetWorker(id);
      this.capacities.delete(id);
      for (const o of this.workerObservers) o.forgotten?.(id);
      return this.index.removeWorker(id) + this.lowerTiers.removeWorker(id);
    });
    // Their queued requests may now have no candidate left: let them fail rather than wait.
    this.capacityChanged();
    return removed;
  }
}

