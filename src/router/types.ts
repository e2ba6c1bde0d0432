// The router's settings and the plain data it takes and answers: routes,
// decisions, worker status and load changes. No behaviour lives here.
import type { HashedPrompt } from "../hashing/sequenceHashes.js";
import type { TierOverlaps } from "../indexer/lowerTiers.js";
import type { ApproximateCachePolicy } from "../indexer/approximateLru.js";
import type { EventOutcome } from "../indexer/types.js";
import type { LowerTier, WorkerKey } from "../protocols/events.js";
import type { WorkerLoad } from "../scheduler/activeSequences.js";
import { type CostWeights, DYNAMO_COST_WEIGHTS, type Score } from "../scheduler/costFunction.js";
import type { ConditionalDisaggSettings } from "../scheduler/conditionalDisagg.js";
import type { CostOverride } from "../scheduler/costOverride.js";
import type { PolicySpec } from "../scheduler/policies.js";
import type { PredictionOutcomes } from "../scheduler/predictions.js";
import type { AffinityOutcome, SessionAffinityMode } from "../scheduler/sessionAffinity.js";

/** Dynamo's router queue ordering (--router-queue-policy). */
export type QueuePolicy = "fcfs" | "wspt";

export interface RouterConfig extends CostWeights {
  blockSize: number;
  temperature: number;
  /** False: approximate mode, routed prompts are assumed cached for approxTtlMs. */
  useKvEvents: boolean;
  trackActiveBlocks: boolean;
  activeRequestTtlMs: number;
  workerLeaseTtlMs: number;
  approxTtlMs: number;
  approxMaxBlocks: number;
  /** False: active requests hold random block ids, so none share blocks (--no-router-assume-kv-reuse). */
  assumeKvReuse: boolean;
  /** The workers run Eagle speculative decoding: requests hash in Eagle windows (--eagle). */
  eagle?: boolean;
  /** Queue while every worker's active prefill exceeds this fraction of its batch budget; undefined = never (Dynamo's default). */
  queueThreshold?: number;
  queuePolicy: QueuePolicy;
  /** A host-memory hit's worth, as a fraction of a GPU hit (Dynamo's --router-host-cache-hit-weight). */
  hostCacheHitWeight: number;
  /** A disk (or external store) hit's worth (Dynamo's --router-disk-cache-hit-weight). */
  diskCacheHitWeight: number;
  /** Most (block, worker) entries held on lower tiers together; 0 = unbounded. */
  lowerTierMaxBlocks?: number;
  /** Most dp_ranks one registration may name (--max-dp-ranks). */
  maxDpRanks?: number;
  /** Most active requests (--max-active-requests). */
  maxActiveRequests?: number;
  /** Most prompt blocks held by active requests in total (--max-active-blocks). */
  maxActiveBlocks?: number;
  /** Predict-on-route TTL in event mode (--router-predicted-ttl-secs); 0/undefined = off. */
  predictedTtlMs?: number;
  /** A session stays on its worker while its cost is within this of the best (cost units). */
  sessionAffinitySlack?: number;
  /** How long a session binding lives after its last request; 0/undefined = no affinity. */
  sessionAffinityTtlMs?: number;
  /** Dynamo's hard/soft affinity; undefined = the slack rule above. */
  sessionAffinityMode?: SessionAffinityMode;
  /** The worker-selection policy requests use unless they name one; undefined = the cost policy `kv-router` (scheduler/policies.ts). */
  workerSelectionPolicy?: string;
  /** Named policy instances (Dynamo's --router-policy-config worker_selection.instances), beside the built-in ones. */
  policyInstances?: Readonly<Record<string, PolicySpec>>;
  /** A worker that does not report max_num_batched_tokens counts as this (Dynamo: 10M, never busy). */
  defaultMaxNumBatchedTokens?: number;
  /** The routing cost: Dynamo's block formula (default) or estimated time to first token in ms. */
  routerCost?: RouterCost;
  /** ttft cost: every worker's prefill rate before the router has learned it (tokens per second). */
  prefillTokensPerSec?: number;
  /** ttft cost: prefill slows by this fraction per active decode block on the worker. */
  ttftDecodeSlowdownPerBlock?: number;
  /** Approximate mode's retention: ttl (default) or lru over each rank's total_kv_blocks. */
  approxCachePolicy?: ApproximateCachePolicy;
  /** Dynamo's conditional disaggregation, for requests that name prefill workers; undefined = off. */
  conditionalDisagg?: ConditionalDisaggSettings;
}

export const ROUTER_COSTS = ["dynamo", "ttft"] as const;
export type RouterCost = (typeof ROUTER_COSTS)[number];
export const DEFAULT_PREFILL_TOKENS_PER_SEC = 10_000;
export const DEFAULT_TTFT_DECODE_SLOWDOWN_PER_BLOCK = 0.0001;

/** Most session bindings kept (the least recently used go first). */
export const MAX_SESSIONS = 1 << 20;
/** Dynamo's max_num_batched_tokens for a worker that does not report one (queue.rs). */
export const DYNAMO_DEFAULT_MAX_BATCHED_TOKENS = 10_000_000;

/** What a worker reported about its engine's size (0 = unknown). */
export interface WorkerCapacity {
  maxNumBatchedTokens: number;
  totalKvBlocks: number;
  /** Batch slots: the most sequences the engine runs at once (vLLM max_num_seqs); 0 or absent = unknown. */
  maxNumSeqs?: number;
}

/** A candidate worker's load and size, for admission decisions. */
export interface CandidateState {
  key: string;
  load: WorkerLoad;
  capacity: WorkerCapacity;
}

/** Told about predict-on-route and affinity outcomes (metrics). */
export interface SchedulingObserver {
  predictions?(outcomes: PredictionOutcomes): void;
  affinity?(outcome: AffinityOutcome): void;
}

export const DEFAULT_ROUTER_CONFIG: RouterConfig = {
  blockSize: 64,
  ...DYNAMO_COST_WEIGHTS,
  temperature: 0.0,
  useKvEvents: true,
  trackActiveBlocks: true,
  activeRequestTtlMs: 300_000,
  workerLeaseTtlMs: 10_000,
  approxTtlMs: 120_000,
  approxMaxBlocks: 1 << 20,
  assumeKvReuse: true,
  queueThreshold: undefined,
  queuePolicy: "fcfs",
  hostCacheHitWeight: 0.75,
  diskCacheHitWeight: 0.25,
  maxDpRanks: 1024,
  maxActiveRequests: 1_000_000,
  maxActiveBlocks: 1 << 26,
};

export interface RouteRequest {
  /**
   * The prompt's token ids, or (FindBestWorker over gRPC) the prompt as its
   * decoder hashed it, the token ids decoded straight into the hasher's memory
   * and not kept: its `length` is the token count either way.
   */
  tokens: Uint32Array | readonly number[] | HashedPrompt;
  requestId?: string;
  allowedWorkers?: WorkerKey[];
  loraName?: string;
  /** Dynamo's cache_namespace (tenant): salts every block hash. */
  cacheNamespace?: string;
  /** Expected output length: grows the chosen worker's projected decode load. */
  expectedOutputTokens?: number;
  /** Session for affinity. */
  sessionId?: string;
  /** A worker-selection policy for this request only (a built-in name or an instance). */
  workerSelectionPolicy?: string;
  /** Cost settings for this request only (Dynamo's router_config_override). */
  costOverride?: CostOverride;
  /** Disaggregated serving: the prefill pool (the decode pool is allowedWorkers, else every other worker). */
  prefillWorkers?: WorkerKey[];
}

export interface RouteDecision {
  worker: WorkerKey;
  overlapBlocks: number;
  promptBlocks: number;
  /** Of overlapBlocks, those assumed cached by predict-on-route rather than known from events. */
  predictedBlocks: number;
  /** Every candidate's score, best (lowest logit) first. */
  scores: Score[];
  /** Per worker key, prompt blocks found on lower tiers beyond its GPU match. */
  tierOverlaps: TierOverlaps;
  /** The policy that chose, and which of its rules (or the session's binding) decided. */
  policy: string;
  reason: string;
  /** For a request that named prefill workers: where its prefill runs, and why. */
  disagg?: DisaggDecision;
}

export interface DisaggDecision {
  prefillLocally: boolean;
  prefillWorker?: WorkerKey;
  prefillOverlapBlocks: number;
  netNewTokens: number;
  reason: string;
  prefillBusy?: boolean;
  decodeBusy?: boolean;
}

export interface IngestSummary {
  applied: number;
  rejected: number;
  rejections: { worker: WorkerKey; eventId: bigint; reason: EventOutcome }[];
}

/** Where a registered worker's engine publishes KV events (ZeroMQ). */
export interface WorkerFeed {
  zmqEndpoint: string;
  zmqReplayEndpoint?: string;
}

/** Told when workers register or are forgotten, e.g. to start and stop their event feeds. */
export interface WorkerObserver {
  /** May throw a RouterError to refuse the registration (it then does not happen). */
  registered?(workerId: bigint, dpRanks: number[], feed: WorkerFeed | undefined): void;
  forgotten?(workerId: bigint): void;
}

export interface WorkerStatus {
  worker: WorkerKey;
  registered: boolean;
  leaseRemainingMs: number;
  cachedBlocks: number;
  /** Blocks held on each lower tier. */
  lowerTierBlocks: Record<LowerTier, number>;
  load: WorkerLoad;
  lastEventId: bigint;
  /** Learned prefill rate (ttft cost), tokens per second; 0 otherwise. */
  prefillTokensPerSec: number;
}

/** A local change of the load state, for replica sync (workerKey = "id:rank"). */
export type ActiveChange =
  | { kind: "add"; requestId: string; workerKey: string; blocks: readonly bigint[]; prefillTokens: number; outputBlocks?: number }
  | { kind: "prefill_done"; requestId: string; workerKey: string }
  | { kind: "free"; requestId: string; workerKey: string };

