// Queueing and admission ahead of routing (Dynamo's scheduler queue and load
// thresholds, lib/kv-router/src/scheduling/queue.rs and policy_queue.rs):
// - busy thresholds: when every candidate worker is past one, the request is
//   refused at once (RESOURCE_EXHAUSTED; Dynamo answers 503/529);
// - the queue threshold: when every candidate's active prefill tokens exceed
//   that fraction of its max_num_batched_tokens, the request waits here, in
//   fcfs or wspt order, until a worker frees up; a full queue refuses at once.
// The queue is callback-based so the simulator can drive it on virtual time.
import { type WorkerKey, workerKeyString } from "../protocols/events.js";
import { RouterError } from "./errors.js";
import type { KvRouter } from "./router.js";
import type { CandidateState, QueuePolicy, RouteDecision, RouteRequest } from "./types.js";

export const QUEUE_POLICIES: readonly QueuePolicy[] = ["fcfs", "wspt"];

/** Dynamo's threshold names; unset = that check is off. */
export interface BusyThresholds {
  /** Active decode blocks / the worker's total KV blocks. */
  activeDecodeBlocksThreshold?: number;
  /** Active prefill tokens, literal. */
  activePrefillTokensThreshold?: number;
  /** Active prefill tokens / the worker's max_num_batched_tokens. */
  activePrefillTokensThresholdFrac?: number;
  /** Queue (not refuse) past this fraction of max_num_batched_tokens. */
  routerQueueThreshold?: number;
}

export const THRESHOLD_FIELDS = {
  active_decode_blocks_threshold: "activeDecodeBlocksThreshold",
  active_prefill_tokens_threshold: "activePrefillTokensThreshold",
  active_prefill_tokens_threshold_frac: "activePrefillTokensThresholdFrac",
  router_queue_threshold: "routerQueueThreshold",
} as const satisfies Record<string, keyof BusyThresholds>;

export interface AdmissionConfig {
  thresholds: BusyThresholds;
  queuePolicy: QueuePolicy;
  /** Most requests waiting; one more is refused (RESOURCE_EXHAUSTED). */
  maxQueued: number;
  /** Longest a call waits before it is refused (RESOURCE_EXHAUSTED), whatever its deadline; undefined = no limit. */
  maxWaitMs?: number;
}

export const DEFAULT_ADMISSION_CONFIG: AdmissionConfig = { thresholds: {}, queuePolicy: "fcfs", maxQueued: 1024, maxWaitMs: 60_000 };

/** Highest `priority` a request may carry. */
export const MAX_PRIORITY = 1000;

export interface AdmissionRequest extends RouteRequest {
  /** 0..MAX_PRIORITY: fcfs treats it as seconds of head start, wspt as extra weight. */
  priority?: number;
}

export interface Admitted {
  decision: RouteDecision;
  queuedMs: number;
}

export type AdmissionCallback = (err: Error | undefined, admitted?: Admitted) => void;

export type LeaveOutcome = "routed" | "cancelled" | "failed" | "timed_out";

/** Told about queue movements (metrics). */
export interface AdmissionObserver {
  queued?(depth: number): void;
  left?(outcome: LeaveOutcome, waitedMs: number, depth: number): void;
  refused?(reason: "busy" | "queue_full"): void;
}

interface Waiter {
  req: AdmissionRequest;
  /** Arrival order. */
  seq: number;
  enqueuedAt: number;
  /** Policy score (Dynamo's queue_policy_score), fixed at enqueue: higher goes first. */
  score: number;
  /** allowed_workers' keys; undefined: any known worker. */
  allowed?: readonly string[];
  /** The same list as text: waiters with the same list share one check per pass ("" = any worker). */
  group: string;
  done: AdmissionCallback;
}

/** The known workers, and those below the queue threshold, for one pass over the waiters. */
interface Openings {
  known: ReadonlyMap<string, WorkerKey>;
  open: Set<string>;
}

export function workerBusy(c: CandidateState, t: BusyThresholds): boolean {
  const { prefillTokens, decodeBlocks } = c.load;
  const { maxNumBatchedTokens: batched, totalKvBlocks: kv } = c.capacity;
  if (t.activePrefillTokensThreshold !== undefined && prefillTokens > t.activePrefillTokensThreshold) return true;
  if (t.activePrefillTokensThresholdFrac !== undefined && batched > 0 && prefillTokens > t.activePrefillTokensThresholdFrac * batched) return true;
  return t.activeDecodeBlocksThreshold !== undefined && kv > 0 && decodeBlocks > t.activeDecodeBlocksThreshold * kv;
}

export function pastQueueThreshold(c: CandidateState, t: BusyThresholds): boolean {
  const batched = c.capacity.maxNumBatchedTokens;
  return t.routerQueueThreshold !== undefined && batched > 0 && c.load.prefillTokens > t.routerQueueThreshold * batched;
}

export class AdmissionQueue {
  /** In admission order: best score first, ties by arrival. Kept sorted on insert. */
  private waiters: Waiter[] = [];
  private seq = 0;
  private draining = false;
  /** Counts changes other than drain()'s own admissions: a pass that sees one starts over. */
  private edits = 0;
  /** The known set every waiter was last found unable to go against (see nextAdmissible). */
  private checkedAgainst?: ReadonlyMap<string, WorkerKey>;
  observer: AdmissionObserver = {};

  constructor(
    private readonly router: KvRouter,
    readonly config: AdmissionConfig,
    private readonly now: () => number = Date.now,
  ) {
    router.capacityListeners.push(() => this.drain());
  }

  get depth(): number {
    return this.waiters.length;
  }

  get thresholds(): BusyThresholds {
    return this.config.thresholds;
  }

  /** Replaces some thresholds (undefined values clear them) and admits whatever now fits. */
  setThresholds(update: Partial<BusyThresholds>): BusyThresholds {
    for (const [k, v] of Object.entries(update) as [keyof BusyThresholds, number | undefined][]) {
      if (v === undefined) delete this.config.thresholds[k];
      else this.config.thresholds[k] = v;
    }
    this.drain();
    return { ...this.config.thresholds };
  }

  /**
   * Routes now, refuses now, or queues: `done` is called exactly once unless
   * the returned cancel function runs first (the client went away).
   */
  submit(req: AdmissionRequest, done: AdmissionCallback): () => void {
    let states: CandidateState[];
    try {
      states = this.router.candidateStates(req.allowedWorkers);
      if (states.every((c) => workerBusy(c, this.config.thresholds))) {
        this.observer.refused?.("busy");
        throw new RouterError(
          "resource_exhausted",
          `all ${states.length} candidate workers are past their busy thresholds; retry later`,
        );
      }
    } catch (err) {
      done(err as Error);
      return () => {};
    }
    if (!states.every((c) => pastQueueThreshold(c, this.config.thresholds))) {
      this.routeNow(req, undefined, done);
      return () => {};
    }
    if (this.waiters.length >= this.config.maxQueued) {
      this.observer.refused?.("queue_full");
      done(new RouterError("resource_exhausted", `the router's queue is full (${this.config.maxQueued} waiting, --router-max-queued); retry later`));
      return () => {};
    }
    const waiter = this.waiterOf(req, done);
    this.insert(waiter);
    this.observer.queued?.(this.waiters.length);
    return () => {
      const i = this.waiters.indexOf(waiter);
      if (i < 0) return;
      this.waiters.splice(i, 1);
      this.edits++;
      this.observer.left?.("cancelled", this.now() - waiter.enqueuedAt, this.waiters.length);
    };
  }

  /**
   * submit() as a promise: resolves when routed, rejects with the refusal; an
   * aborted `signal` (the client went away) takes the call out of the queue.
   */
  admit(req: AdmissionRequest, signal?: AbortSignal): Promise<Admitted> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(new RouterError("cancelled", "the call was cancelled before it was routed"));
        return;
      }
      let settled = false;
      const onAbort = () => {
        if (settled) return;
        settled = true;
        cancel();
        reject(new RouterError("cancelled", "the call was cancelled while it waited in the router's queue"));
      };
      // submit() may answer before it returns: settle first, subscribe only if still waiting.
      const cancel = this.submit(req, (err, admitted) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener("abort", onAbort);
        if (err !== undefined) reject(err);
        else resolve(admitted!);
      });
      if (!settled) signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Refuses the calls that waited longer than maxWaitMs: the queue sheds rather than grows without bound. */
  expire(): number {
    const limit = this.config.maxWaitMs;
    if (limit === undefined || this.waiters.length === 0) return 0;
    const now = this.now();
    const late = byArrival(this.waiters.filter((w) => now - w.enqueuedAt >= limit));
    if (late.length === 0) return 0;
    this.waiters = this.waiters.filter((w) => now - w.enqueuedAt < limit);
    this.edits++;
    for (const w of late) {
      this.observer.left?.("timed_out", now - w.enqueuedAt, this.waiters.length);
      w.done(new RouterError("resource_exhausted", `waited ${Math.round((now - w.enqueuedAt) / 1000)} s in the router's queue (--router-max-queue-wait-secs); retry later`));
    }
    return late.length;
  }

  /** Answers every waiter UNAVAILABLE (the server is stopping). */
  close(): void {
    const waiters = byArrival(this.waiters);
    this.waiters = [];
    this.edits++;
    for (const w of waiters) {
      this.observer.left?.("failed", this.now() - w.enqueuedAt, 0);
      w.done(new RouterError("unavailable", "the router is shutting down; retry on another replica"));
    }
  }

  /**
   * Admits waiters in policy order while some candidate of theirs is below the
   * queue threshold; a waiter that cannot go does not hold back those behind it.
   * Each admission costs one look at every known worker plus the waiters it
   * passes over, not a sort and a look at every worker per waiter.
   */
  drain(): void {
    if (this.draining) {
      this.edits++; // a change while a waiter is being routed: the pass starts over
      return;
    }
    if (this.waiters.length === 0) return;
    this.draining = true;
    try {
      let from = 0;
      let known: ReadonlyMap<string, WorkerKey> | undefined;
      for (;;) {
        const openings = this.openings();
        if (openings.known !== known) from = 0;
        known = openings.known;
        const i = this.nextAdmissible(openings, from);
        if (i < 0) break;
        const [next] = this.waiters.splice(i, 1);
        const edits = this.edits;
        this.routeNow(next.req, next.enqueuedAt, next.done);
        // Routing only adds load, so the waiters ahead of it still cannot go, unless something else changed meanwhile.
        from = this.edits === edits ? i : 0;
      }
    } finally {
      this.draining = false;
    }
  }

  /** The first waiter from `from` on that can go now, or -1. */
  private nextAdmissible(openings: Openings, from: number): number {
    // No worker is open and no worker went away since every waiter was found unable to go: none can.
    if (openings.open.size === 0 && openings.known === this.checkedAgainst) return -1;
    const checked = new Map<string, boolean>();
    for (let i = from; i < this.waiters.length; i++) {
      const w = this.waiters[i];
      let ok = checked.get(w.group);
      if (ok === undefined) checked.set(w.group, (ok = admissible(w, openings)));
      if (ok) return i;
    }
    this.checkedAgainst = openings.known;
    return -1;
  }

  private openings(): Openings {
    const known = this.router.knownWorkers();
    const open = new Set<string>();
    if (known.size > 0) {
      for (const c of this.router.candidateStates()) if (!pastQueueThreshold(c, this.config.thresholds)) open.add(c.key);
    }
    return { known, open };
  }

  private waiterOf(req: AdmissionRequest, done: AdmissionCallback): Waiter {
    const enqueuedAt = this.now();
    const priority = req.priority ?? 0;
    const score =
      this.config.queuePolicy === "wspt" ? (1 + priority) / Math.max(1, this.router.uncachedTokens(req)) : priority - enqueuedAt / 1000;
    const allowed = req.allowedWorkers?.length ? req.allowedWorkers.map(workerKeyString) : undefined;
    return { req, seq: this.seq++, enqueuedAt, score, allowed, group: allowed?.join(",") ?? "", done };
  }

  /** Inserts in order: after every waiter that scores at least as high (so ties keep arrival order). */
  private insert(w: Waiter): void {
    let lo = 0;
    let hi = this.waiters.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.waiters[mid].score >= w.score) lo = mid + 1;
      else hi = mid;
    }
    this.waiters.splice(lo, 0, w);
    this.edits++;
  }

  /** `queuedSince` is undefined for a request that never waited. */
  private routeNow(req: AdmissionRequest, queuedSince: number | undefined, done: AdmissionCallback): void {
    const wasQueued = queuedSince !== undefined;
    const queuedMs = wasQueued ? this.now() - queuedSince : 0;
    let decision: RouteDecision;
    try {
      decision = this.router.findBestWorker(req);
    } catch (err) {
      if (wasQueued) this.observer.left?.("failed", queuedMs, this.waiters.length);
      done(err as Error);
      return;
    }
    if (wasQueued) this.observer.left?.("routed", queuedMs, this.waiters.length);
    done(undefined, { decision, queuedMs });
  }
}

/**
 * Whether routing the waiter now would not wait: some candidate is below the queue
 * threshold, or routing fails at once (no worker is known, or an allowed one went away).
 */
function admissible(w: Waiter, { known, open }: Openings): boolean {
  if (w.allowed === undefined) return open.size > 0 || known.size === 0;
  return w.allowed.some((key) => open.has(key) || !known.has(key));
}

/** Refusals go out in arrival order, whatever the admission order. */
function byArrival(waiters: Waiter[]): Waiter[] {
  return waiters.sort((a, b) => a.seq - b.seq);
}
