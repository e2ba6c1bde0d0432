// The load signal: requests routed to each worker and not yet freed.
// A request counts as prefill load until MarkPrefillCompleted, and holds its
// prompt's KV blocks (decode load) until Free or until its lease expires.
import { SequenceHashes } from "../hashing/sequenceHashes.js";
import { parseWorkerKey } from "../protocols/events.js";
import { DecodeTime, PrefillSpeed } from "./prefillSpeed.js";

export interface ActiveRequest {
  requestId: string;
  workerKey: string;
  /** Sequence hashes of the prompt's blocks (empty when block tracking is off); 8 bytes each. */
  blocks: BigUint64Array;
  /** Uncached prompt tokens still to prefill. */
  prefillTokens: number;
  /** Blocks its expected output will fill (expected_output_tokens hint). */
  outputBlocks: number;
  prefillDone: boolean;
  /** When it was routed (the router's clock): how long its prefill has been waiting. */
  routedAt: number;
  /** No other prompt of this router was waiting for its prefill on the worker when it was routed: its prefill time is a speed sample. */
  firstInLine: boolean;
  /** When MarkPrefillCompleted reported its first token (NaN: not reported). */
  prefillDoneAt: number;
  expiresAt: number;
}

export interface WorkerLoad {
  requests: number;
  prefillTokens: number;
  /** Distinct KV blocks of the requests in flight. */
  decodeBlocks: number;
  /** Blocks the requests in flight are expected to add while decoding (their output hints). */
  outputBlocks: number;
}

class WorkerSequences {
  /** Its active requests: dropping the worker visits these, not every request. */
  readonly requestIds = new Set<string>();
  /** Requests whose prefill is not reported done, in routing order: the first is the oldest. */
  readonly pendingPrefills = new Map<string, number>();
  prefillTokens = 0;
  outputBlocks = 0;
  /** Block -> number of active requests holding it. */
  readonly blockRefs = new Map<bigint, number>();
}

/** Bounds on what active requests may hold (--max-active-requests, --max-active-blocks). */
export interface ActiveLimits {
  maxRequests: number;
  maxBlocks: number;
}

export class ActiveSequences {
  private readonly requests = new Map<string, ActiveRequest>();
  private readonly workers = new Map<string, WorkerSequences>();
  /** Worker id -> its keys (dp ranks) with requests in flight. */
  private readonly keysById = new Map<bigint, Set<string>>();
  /** Prompt blocks held by all active requests. */
  private heldBlocks = 0;
  /** The fleet's prefill speed, measured from routing to MarkPrefillCompleted. */
  private readonly speed = new PrefillSpeed();
  /** How long a sequence holds its batch slot after its first token (MarkPrefillCompleted to Free), fleet-wide. */
  private readonly decode = new DecodeTime();

  constructor(
    private readonly requestTtlMs: number,
    private readonly now: () => number = Date.now,
    private readonly limits: ActiveLimits = { maxRequests: Infinity, maxBlocks: Infinity },
  ) {}

  get size(): number {
    return this.requests.size;
  }

  /** Why one more request holding `blocks` blocks does not fit (undefined: it fits). */
  roomProblem(blocks: number): string | undefined {
    const { maxRequests, maxBlocks } = this.limits;
    if (this.requests.size >= maxRequests) {
      return `${this.requests.size} requests are active; the limit is ${maxRequests} (--max-active-requests): Free finished requests`;
    }
    if (this.heldBlocks + blocks > maxBlocks) {
      return `active requests hold ${this.heldBlocks} blocks and this one adds ${blocks}; the limit is ${maxBlocks} (--max-active-blocks)`;
    }
    return undefined;
  }

  has(requestId: string): boolean {
    return this.requests.has(requestId);
  }

  get(requestId: string): ActiveRequest | undefined {
    return this.requests.get(requestId);
  }

  load(workerKey: string): WorkerLoad {
    const w = this.workers.get(workerKey);
    if (w === undefined) return { requests: 0, prefillTokens: 0, decodeBlocks: 0, outputBlocks: 0 };
    return { requests: w.requestIds.size, prefillTokens: w.prefillTokens, decodeBlocks: w.blockRefs.size, outputBlocks: w.outputBlocks };
  }

  /**
   * Ms since the worker's oldest request whose prefill is not reported done (MarkPrefillCompleted
   * or Free) was routed here; 0 when none is pending. The wait prompts on this worker are meeting
   * now, measured rather than estimated from tokens.
   */
  prefillWaitMs(workerKey: string): number {
    const w = this.workers.get(workerKey);
    if (w === undefined) return 0;
    for (const routedAt of w.pendingPrefills.values()) return Math.max(0, this.now() - routedAt);
    return 0;
  }

  /** The fleet's measured prefill time per prompt token (ms); 0 before any prompt was reported prefilled. */
  get prefillMsPerToken(): number {
    return this.speed.msPerToken;
  }

  /** The fleet's measured time from a request's first token to its Free (ms); 0 before any such request was freed. */
  get decodeMs(): number {
    return this.decode.ms;
  }

  /**
   * How many of `blocks` the worker's active requests do not already hold.
   * Routing's SequenceHashes become bigints only for a worker holding blocks.
   */
  newBlocks(workerKey: string, blocks: readonly bigint[] | SequenceHashes): number {
    const w = this.workers.get(workerKey);
    if (w === undefined || w.blockRefs.size === 0) return blocks.length;
    let fresh = 0;
    for (const b of blocks instanceof SequenceHashes ? blocks.bigints : blocks) if (!w.blockRefs.has(b)) fresh++;
    return fresh;
  }

  /** Adds a request (callers check has() and roomProblem() first). */
  add(requestId: string, workerKey: string, blocks: readonly bigint[], prefillTokens: number, outputBlocks = 0): void {
    const request: ActiveRequest = {
      requestId,
      workerKey,
      blocks: BigUint64Array.from(blocks),
      prefillTokens,
      outputBlocks,
      prefillDone: false,
      routedAt: this.now(),
      prefillDoneAt: NaN,
      firstInLine: false,
      expiresAt: this.now() + this.requestTtlMs,
    };
    this.requests.set(requestId, request);
    const w = this.workers.get(workerKey) ?? this.addWorker(workerKey);
    request.firstInLine = w.pendingPrefills.size === 0;
    w.requestIds.add(requestId);
    w.pendingPrefills.set(requestId, request.routedAt);
    w.prefillTokens += prefillTokens;
    this.heldBlocks += request.blocks.length;
    w.outputBlocks += outputBlocks;
    for (const b of blocks) w.blockRefs.set(b, (w.blockRefs.get(b) ?? 0) + 1);
  }

  /** Moves a request from prefill to decode load; false when it is not active. */
  markPrefillCompleted(requestId: string): boolean {
    const request = this.requests.get(requestId);
    if (request === undefined) return false;
    // Only an explicit report times a prefill: Free also completes one, after the whole decode.
    if (!request.prefillDone && request.firstInLine) this.speed.sample(request.prefillTokens, this.now() - request.routedAt);
    if (!request.prefillDone) request.prefillDoneAt = this.now();
    this.completePrefill(request);
    return true;
  }

  /** Releases a request's load; false when it is not active (already freed). */
  free(requestId: string): boolean {
    const request = this.requests.get(requestId);
    if (request === undefined) return false;
    if (Number.isFinite(request.prefillDoneAt)) this.decode.sample(this.now() - request.prefillDoneAt);
    this.completePrefill(request);
    this.requests.delete(requestId);
    this.heldBlocks -= request.blocks.length;
    const w = this.workers.get(request.workerKey)!;
    w.requestIds.delete(requestId);
    w.outputBlocks -= request.outputBlocks;
    for (const b of request.blocks) {
      const refs = w.blockRefs.get(b)!;
      if (refs === 1) w.blockRefs.delete(b);
      else w.blockRefs.set(b, refs - 1);
    }
    if (w.requestIds.size === 0) this.removeWorker(request.workerKey);
    return true;
  }

  /** Every active request (replica sync hands them to a replica that joins). */
  requestList(): ActiveRequest[] {
    return [...this.requests.values()];
  }

  /**
   * Drops every request routed to any rank of a worker that went away; returns their ids.
   * It costs the worker's own requests, so dropping many workers never walks every request per worker.
   */
  dropWorker(workerId: bigint): string[] {
    const dropped: string[] = [];
    for (const key of [...(this.keysById.get(workerId) ?? [])]) {
      for (const requestId of [...this.workers.get(key)!.requestIds]) {
        this.free(requestId);
        dropped.push(requestId);
      }
    }
    return dropped;
  }

  /** Frees requests whose lease ran out (clients that never called Free). */
  expire(): string[] {
    const now = this.now();
    const expired: string[] = [];
    for (const request of this.requests.values()) {
      if (request.expiresAt <= now) expired.push(request.requestId);
    }
    for (const id of expired) this.free(id);
    return expired;
  }

  private addWorker(workerKey: string): WorkerSequences {
    const w = new WorkerSequences();
    this.workers.set(workerKey, w);
    const { workerId } = parseWorkerKey(workerKey);
    const keys = this.keysById.get(workerId);
    if (keys === undefined) this.keysById.set(workerId, new Set([workerKey]));
    else keys.add(workerKey);
    return w;
  }

  private removeWorker(workerKey: string): void {
    this.workers.delete(workerKey);
    const { workerId } = parseWorkerKey(workerKey);
    const keys = this.keysById.get(workerId)!;
    keys.delete(workerKey);
    if (keys.size === 0) this.keysById.delete(workerId);
  }

  private completePrefill(request: ActiveRequest): void {
    if (request.prefillDone) return;
    request.prefillDone = true;
    const w = this.workers.get(request.workerKey)!;
    w.prefillTokens -= request.prefillTokens;
    w.pendingPrefills.delete(request.requestId);
  }
}
