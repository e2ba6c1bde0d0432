// A simulated inference engine (one worker): a paged KV cache with prefix
// reuse and LRU eviction, a FIFO waiting queue, one prefill at a time and
// continuous-batching decode. It reports its cache changes as the same
// stored/removed events a real engine publishes, with its own block ids.
//
// Timing model (virtual milliseconds):
// - a prefill computes the prompt's uncached tokens at `prefillMsPerToken`
//   each and pauses decoding while it runs (prefill-first scheduling);
// - a decode step gives every running request one output token and takes
//   `decodeMsPerStep` plus `decodeMsPerToken` per running request (reading
//   each sequence's KV cache is what grows with the batch); the prefill
//   itself produces the first token (TTFT).
// With `maxNumBatchedTokens` set the engine instead runs vLLM-style steps
// (chunked prefill): every step gives each decoding request one token and
// spends the rest of the step's token budget on the head prefill's next chunk;
// a step costs `decodeMsPerStep` + `prefillMsPerToken` per chunk token +
// `decodeMsPerToken` per decoding request + `kvReadMsPerBlock` per KV block
// the batch reads (every running sequence's context), so decode slows as
// contexts grow. `speed` divides every cost (heterogeneous fleets).
// Memory: a request holds its prompt blocks plus the blocks of its partial
// tail and output tokens until it finishes; finished prompt blocks stay cached
// and evictable, least recently used first (tail blocks before their prefix).
import type { IndexEvent, StoredBlockData } from "../protocols/events.js";
import { MinHeap } from "./heap.js";

export interface EngineParams {
  blockSize: number;
  /** Cache capacity in blocks (Infinity: never evicts). */
  kvBlocks: number;
  prefillMsPerToken: number;
  /** Fixed cost of one decode step (reading the weights). */
  decodeMsPerStep: number;
  /** Added to a decode step per running request (one output token each). */
  decodeMsPerToken: number;
  /** Most requests running (prefilling or decoding) at once. */
  maxBatch: number;
  /** Chunked prefill: tokens per engine step (vLLM max_num_batched_tokens); undefined = prefill-first model. */
  maxNumBatchedTokens?: number;
  /** Chunked mode: cost per KV block read by a step (each running sequence reads its whole context). */
  kvReadMsPerBlock?: number;
  /** Relative speed (1 = nominal, 0.5 = every step takes twice as long). */
  speed?: number;
}

/** One request as every simulated engine sees it (shared across policies). */
export interface SimRequest {
  id: string;
  index: number;
  arrivalMs: number;
  inputLength: number;
  outputLength: number;
  tokens: Uint32Array;
  /** Sequence and local hashes of the prompt's full blocks (Dynamo hashing). */
  sequence: readonly bigint[];
  local: readonly bigint[];
  /** The sequence hashes folded to JS numbers: cheap map keys for the engines. */
  keys: readonly number[];
  sessionId?: string;
}

export interface RequestRecord {
  request: SimRequest;
  worker: number;
  /** When it joined this worker's queue (arrival, or later in live mode). */
  queuedMs: number;
  prefillStartMs: number;
  firstTokenMs: number;
  finishMs: number;
  hitBlocks: number;
}

export interface EngineListener {
  onEvents(worker: number, events: IndexEvent[]): void;
  onPrefillDone(record: RequestRecord): void;
  onFinished(record: RequestRecord): void;
  onRejected(request: SimRequest, worker: number, reason: string): void;
}

interface Block {
  key: number;
  external: bigint;
  local: bigint;
  refs: number;
  /** Neighbours in the LRU list while evictable (refs === 0). */
  older: Block | undefined;
  newer: Block | undefined;
}

/** Evictable blocks, least recently used first: an intrusive list, no allocation per move. */
class LruList {
  oldest: Block | undefined;
  newest: Block | undefined;
  size = 0;

  append(b: Block): void {
    b.older = this.newest;
    b.newer = undefined;
    if (this.newest) this.newest.newer = b;
    else this.oldest = b;
    this.newest = b;
    this.size++;
  }

  remove(b: Block): void {
    if (b.older) b.older.newer = b.newer;
    else this.oldest = b.newer;
    if (b.newer) b.newer.older = b.older;
    else this.newest = b.older;
    b.older = b.newer = undefined;
    this.size--;
  }
}

interface Job {
  record: RequestRecord;
  /** Overrides the cache lookup (the oracle's perfect cache). */
  forcedHit: number | undefined;
  pinned: Block[];
  /** Blocks held for the partial tail and the output tokens. */
  extraBlocks: number;
  finishStep: number;
  /** Chunked mode: the step it started decoding at (its context grows one token per step after). */
  decodeStart: number;
}


export class SimEngine {
  /** Engine time: everything up to here has happened. */
  clock = 0;
  private readonly queue: Job[] = [];
  private queueHead = 0;
  private prefilling: Job | undefined;
  private prefillEnd = 0;
  /** Chunked mode: uncached tokens of the head prefill still to compute, and its context so far. */
  private prefillRemaining = 0;
  private prefillContext = 0;
  /** Chunked mode: sum of decoding requests' prompt lengths and decode start steps (context = input + steps since). */
  private decodeInputSum = 0;
  private decodeStartSum = 0;
  private readonly decoding = new MinHeap<Job>((j) => j.finishStep);
  private step = 0;
  /** The head of the queue did not fit in memory: wait for a request to finish. */
  private blocked = false;
  private readonly cache = new Map<number, Block>();
  /** Cached blocks no running request holds, least recently used first. */
  private readonly evictable = new LruList();
  /** Blocks in use: cached ones plus those held by running requests. */
  private used = 0;
  private eventId = 0n;
  readonly workerId: bigint;

  constructor(
    readonly index: number,
    private readonly params: EngineParams,
    private readonly listener: EngineListener,
  ) {
    this.workerId = BigInt(index + 1);
  }

  /** Requests queued or running. */
  get outstanding(): number {
    return this.queue.length - this.queueHead + (this.prefilling ? 1 : 0) + this.decoding.size;
  }

  /** Sequences in the batch (prefilling or decoding): what the engine reports as running (request_active_slots). */
  get running(): number {
    return (this.prefilling ? 1 : 0) + this.decoding.size;
  }

  /** Requests queued for a batch slot: what the engine reports as waiting (num_requests_waiting). */
  get waiting(): number {
    return this.queue.length - this.queueHead;
  }

  get cachedBlocks(): number {
    return this.cache.size;
  }

  /** The engine's ids of the blocks it caches (what its events told the router it holds). */
  cachedBlockIds(): bigint[] {
    return [...this.cache.values()].map((b) => b.external);
  }

  get idle(): boolean {
    return this.outstanding === 0;
  }

  /** Queues a request at time `atMs` (>= the last advanceTo) and starts it if the engine is free. */
  enqueue(request: SimRequest, atMs: number, forcedHit?: number): void {
    const record: RequestRecord = {
      request,
      worker: this.index,
      queuedMs: atMs,
      prefillStartMs: NaN,
      firstTokenMs: NaN,
      finishMs: NaN,
      hitBlocks: 0,
    };
    const { blockSize } = this.params;
    const totalBlocks = Math.ceil((request.inputLength + request.outputLength) / blockSize);
    this.queue.push({ record, forcedHit, pinned: [], extraBlocks: totalBlocks - request.keys.length, finishStep: 0, decodeStart: 0 });
    this.advanceTo(atMs);
  }

  /** Runs the engine until `t` (ms); Infinity runs it until it is idle. */
  advanceTo(t: number): void {
    if (this.params.maxNumBatchedTokens !== undefined) {
      this.advanceChunked(t, this.params.maxNumBatchedTokens);
      return;
    }
    for (;;) {
      // The batch only changes at the events below, so steps between them take equal time.
      const stepMs = (this.params.decodeMsPerStep + this.params.decodeMsPerToken * this.decoding.size) / (this.params.speed ?? 1);
      if (this.prefilling) {
        if (this.prefillEnd > t) return;
        this.clock = this.prefillEnd;
        this.completePrefill(this.prefilling);
        continue;
      }
      const head = this.queueHead < this.queue.length ? this.queue[this.queueHead] : undefined;
      const running = this.decoding.size;
      let startAt = Infinity;
      if (head && !this.blocked && running < this.params.maxBatch) {
        const arrival = head.record.queuedMs;
        if (arrival <= this.clock) startAt = this.clock;
        else if (running > 0) startAt = this.clock + Math.ceil((arrival - this.clock) / stepMs) * stepMs;
        else startAt = arrival;
      }
      const next = this.decoding.peek();
      const finishAt = next ? this.clock + (next.finishStep - this.step) * stepMs : Infinity;
      if (next && finishAt <= startAt && finishAt <= t) {
        this.clock = finishAt;
        this.step = next.finishStep;
        while (this.decoding.size > 0 && this.decoding.peek()!.finishStep <= this.step) this.finish(this.decoding.pop()!);
        continue;
      }
      if (startAt < Infinity && startAt <= t) {
        if (running > 0) this.step += Math.round((startAt - this.clock) / stepMs);
        this.clock = startAt;
        this.startPrefill(head!);
        continue;
      }
      // Nothing completes by t: decode whole steps up to it, or idle.
      if (t === Infinity) return;
      if (running > 0) {
        const k = Math.floor((t - this.clock) / stepMs);
        this.step += k;
        this.clock += k * stepMs;
      } else {
        this.clock = Math.max(this.clock, t);
      }
      return;
    }
  }

  /** One step's cost with `chunk` prefill tokens (chunked mode). */
  private chunkedStepMs(chunk: number): number {
    const p = this.params;
    const d = this.decoding.size;
    const contextTokens = this.decodeInputSum + d * this.step - this.decodeStartSum + (this.prefilling ? this.prefillContext + chunk : 0);
    const ms =
      p.decodeMsPerStep + p.prefillMsPerToken * chunk + p.decodeMsPerToken * d + (p.kvReadMsPerBlock ?? 0) * (contextTokens / p.blockSize);
    return ms / (p.speed ?? 1);
  }

  /** vLLM-style steps: decodes get a token each, the head prefill the rest of the budget. */
  private advanceChunked(t: number, budget: number): void {
    for (;;) {
      const running = this.decoding.size;
      if (this.prefilling === undefined) {
        const head = this.queueHead < this.queue.length ? this.queue[this.queueHead] : undefined;
        if (head && !this.blocked && running < this.params.maxBatch) {
          const arrival = head.record.queuedMs;
          let startAt = this.clock;
          if (arrival > this.clock) {
            const stepMs = this.chunkedStepMs(0);
            startAt = running > 0 ? this.clock + Math.ceil((arrival - this.clock) / stepMs) * stepMs : arrival;
          }
          const next = this.decoding.peek();
          const finishAt = next ? this.clock + (next.finishStep - this.step) * this.chunkedStepMs(0) : Infinity;
          if (startAt <= t && startAt < finishAt) {
            if (running > 0) this.step += Math.round((startAt - this.clock) / this.chunkedStepMs(0));
            this.clock = startAt;
            this.startPrefill(head);
            continue;
          }
        }
      }
      const chunk = this.prefilling ? Math.max(1, Math.min(budget - running, this.prefillRemaining)) : 0;
      const first = this.chunkedStepMs(chunk);
      // Every step reads `running + chunk` more context tokens than the one before.
      const growth = ((this.params.kvReadMsPerBlock ?? 0) * ((running + chunk) / this.params.blockSize)) / (this.params.speed ?? 1);
      const span = (k: number) => k * first + (growth * k * (k - 1)) / 2;
      const prefillSteps = this.prefilling ? Math.ceil(this.prefillRemaining / chunk) : Infinity;
      const next = this.decoding.peek();
      const decodeSteps = next ? next.finishStep - this.step : Infinity;
      const steps = Math.min(prefillSteps, decodeSteps);
      if (steps === Infinity) {
        if (t !== Infinity) this.clock = Math.max(this.clock, t);
        return;
      }
      if (this.clock + span(steps) > t) {
        this.advanceSteps(stepsWithin(t - this.clock, first, growth), chunk, span);
        return;
      }
      this.advanceSteps(steps, chunk, span);
      if (this.prefilling && this.prefillRemaining <= 0) this.completePrefill(this.prefilling);
      while (this.decoding.size > 0 && this.decoding.peek()!.finishStep <= this.step) this.finish(this.decoding.pop()!);
    }
  }

  private advanceSteps(k: number, chunk: number, span: (k: number) => number): void {
    if (k <= 0) return;
    this.step += k;
    this.clock += span(k);
    if (this.prefilling) {
      this.prefillRemaining -= k * chunk;
      this.prefillContext += k * chunk;
    }
  }

  private startPrefill(job: Job): void {
    const req = job.record.request;
    const keys = req.keys;
    let hit: number;
    if (job.forcedHit !== undefined) {
      hit = job.forcedHit;
    } else {
      hit = 0;
      let hitEvictable = 0;
      while (hit < keys.length) {
        const b = this.cache.get(keys[hit]);
        if (b === undefined) break;
        if (b.refs === 0) hitEvictable++;
        hit++;
      }
      const need = keys.length - hit + job.extraBlocks;
      const free = this.params.kvBlocks - this.used;
      if (need > free + this.evictable.size - hitEvictable) {
        if (this.decoding.size === 0) {
          // Nothing will ever free enough: the prompt does not fit in this engine.
          this.queueHead++;
          this.listener.onRejected(req, this.index, `needs ${need + hit} KV blocks; the engine holds ${this.params.kvBlocks}`);
          this.compactQueue();
        } else {
          this.blocked = true;
        }
        return;
      }
      for (let i = 0; i < hit; i++) {
        const b = this.cache.get(keys[i])!;
        if (b.refs++ === 0) this.evictable.remove(b);
        job.pinned.push(b);
      }
      this.evict(need - free);
      this.used += need;
    }
    this.queueHead++;
    this.compactQueue();
    job.record.hitBlocks = hit;
    job.record.prefillStartMs = this.clock;
    const uncached = Math.max(1, req.inputLength - hit * this.params.blockSize);
    this.prefilling = job;
    this.prefillEnd = this.clock + (uncached * this.params.prefillMsPerToken) / (this.params.speed ?? 1);
    this.prefillRemaining = uncached;
    this.prefillContext = req.inputLength - uncached;
  }

  private completePrefill(job: Job): void {
    this.prefilling = undefined;
    const req = job.record.request;
    if (job.forcedHit === undefined) {
      const stored: StoredBlockData[] = [];
      const hit = job.record.hitBlocks;
      for (let i = hit; i < req.keys.length; i++) {
        const key = req.keys[i];
        let block = this.cache.get(key);
        if (block !== undefined) {
          // A block left behind by an evicted parent: reuse it, give back the one reserved.
          if (block.refs++ === 0) this.evictable.remove(block);
          this.used--;
        } else {
          // The engine's own block id: a chain hash, like vLLM's; opaque to the router.
          block = { key, external: req.sequence[i], local: req.local[i], refs: 1, older: undefined, newer: undefined };
          this.cache.set(key, block);
        }
        job.pinned.push(block);
        stored.push({ externalHash: block.external, localHash: block.local });
      }
      if (stored.length > 0) {
        const parentHash = hit > 0 ? job.pinned[hit - 1].external : undefined;
        this.emit([{ kind: "stored", workerId: this.workerId, dpRank: 0, eventId: ++this.eventId, parentHash, blocks: stored }]);
      }
    }
    job.record.firstTokenMs = this.clock;
    this.listener.onPrefillDone(job.record);
    if (req.outputLength <= 1) {
      this.finish(job);
    } else {
      job.finishStep = this.step + req.outputLength - 1;
      job.decodeStart = this.step;
      this.decodeInputSum += req.inputLength;
      this.decodeStartSum += this.step;
      this.decoding.push(job);
    }
  }

  private finish(job: Job): void {
    job.record.finishMs = this.clock;
    if (job.record.request.outputLength > 1) {
      this.decodeInputSum -= job.record.request.inputLength;
      this.decodeStartSum -= job.decodeStart;
    }
    if (job.forcedHit === undefined) {
      // Release the tail first so it is evicted before the prefix it extends.
      for (let i = job.pinned.length - 1; i >= 0; i--) {
        const b = job.pinned[i];
        if (--b.refs === 0) this.evictable.append(b);
      }
      this.used -= job.extraBlocks;
    }
    this.blocked = false;
    this.listener.onFinished(job.record);
  }

  private evict(count: number): void {
    if (count <= 0) return;
    const removed: bigint[] = [];
    while (removed.length < count && this.evictable.oldest) {
      const b = this.evictable.oldest;
      removed.push(b.external);
      this.evictable.remove(b);
      this.cache.delete(b.key);
    }
    this.used -= removed.length;
    this.emit([{ kind: "removed", workerId: this.workerId, dpRank: 0, eventId: ++this.eventId, blockHashes: removed }]);
  }

  private emit(events: IndexEvent[]): void {
    this.listener.onEvents(this.index, events);
  }

  private compactQueue(): void {
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
  }
}

/** Most whole steps that fit in `ms` when step j costs first + j * growth. */
function stepsWithin(ms: number, first: number, growth: number): number {
  if (ms <= 0) return 0;
  if (growth <= 0) return Math.floor(ms / first);
  // k * first + growth * k (k - 1) / 2 <= ms
  const b = first - growth / 2;
  let k = Math.floor((-b + Math.sqrt(b * b + 2 * growth * ms)) / growth);
  const span = (n: number) => n * first + (growth * n * (n - 1)) / 2;
  while (k > 0 && span(k) > ms) k--;
  while (span(k + 1) <= ms) k++;
  return k;
}
