// The virtual-clock simulation: every policy gets its own fleet of simulated
// engines. The fleets take the same arrivals one by one, so each prompt is
// expanded and hashed once, but each keeps its own clock, load samples, router
// ticks and queue steps: a policy's result never depends on which policies run
// beside it. Nothing reads the wall clock: same seed, same result.
import { hashPrompt } from "../hashing/blockHash.js";
import type { IndexEvent } from "../protocols/events.js";
import type { RouterConfig } from "../router/types.js";
import { type EngineListener, type EngineParams, type RequestRecord, SimEngine, type SimRequest } from "./engine.js";
import { type LoadSamples, type PolicyResult, summarize } from "./metrics.js";
import { type Dispatch, type Policy, type PolicyName, type PolicyOptions, makePolicy } from "./policies.js";
import type { AdmissionConfig } from "../router/admissionQueue.js";
import { type TraceRequest, expandTokens, MOONCAKE_BLOCK_TOKENS } from "./trace.js";

export interface SimOptions {
  workers: number;
  engine: EngineParams;
  /** The kv policy's router settings (its blockSize must equal the engines'). */
  router: RouterConfig;
  policies: PolicyName[];
  seed: number;
  /** Trace timestamps are divided by this: 2 = twice the arrival rate. */
  speedup: number;
  maxRequests?: number;
  /** Load sampling interval; default: 1/300 of the replayed span (at least 1 ms). */
  sampleMs?: number;
  traceBlockSize?: number;
  /** The kv policy's queue and thresholds (undefined: none). */
  admission?: AdmissionConfig;
  /** Relative speed of each worker (cycled when shorter than the fleet); default all 1. */
  workerSpeeds?: number[];
  /** Arrivals come in bursts of this many requests at the first one's timestamp (1 = as traced). */
  burst?: number;
  /** Simulated clients give up after this long in a router's queue (default: never). */
  clientDeadlineMs?: number;
  /** Builds policies the simulator has no name for (design runs of new forms); undefined falls back to makePolicy. */
  makeExtra?: (name: string, opts: PolicyOptions) => Policy | undefined;
}

export interface PolicyRunData {
  result: PolicyResult;
  /** Every completed request, in completion order. */
  records: RequestRecord[];
  load: LoadSamples;
}

export interface SimResult {
  config: Record<string, unknown>;
  policies: PolicyRunData[];
}

/** Folds a u64 sequence hash into a JS number (52 bits): the engines' map key. */
export function blockKey(sequenceHash: bigint): number {
  return Number(sequenceHash & 0xf_ffff_ffff_ffffn);
}

export function prepareRequest(tr: TraceRequest, blockSize: number, speedup: number, id: string, traceBlockSize = MOONCAKE_BLOCK_TOKENS): SimRequest {
  const tokens = expandTokens(tr, traceBlockSize);
  const { local, sequence } = hashPrompt(tokens, blockSize);
  return {
    id,
    index: tr.index,
    arrivalMs: tr.timestampMs / speedup,
    inputLength: tr.inputLength,
    outputLength: tr.outputLength,
    tokens,
    sequence,
    local,
    keys: sequence.map(blockKey),
    sessionId: tr.sessionId,
  };
}

/** One policy's fleet: its engines, its records, its load samples. */
export class PolicyFleet implements EngineListener {
  readonly engines: SimEngine[];
  readonly records: RequestRecord[] = [];
  readonly load: LoadSamples = { timesMs: [], perWorker: [] };
  rejected = 0;
  readonly rejections: string[] = [];
  /** Requests the router refused (queue full, busy, client deadline passed in its queue). */
  refused = 0;
  /** Admitted out of the router's queue, to be enqueued at the fleet's current time. */
  private readonly ready: { req: SimRequest; d: Dispatch }[] = [];
  private time = 0;

  constructor(
    readonly policy: Policy,
    workers: number,
    engine: EngineParams,
    speeds: readonly number[] = [],
  ) {
    const params = policy.unboundedCache ? { ...engine, kvBlocks: Infinity } : engine;
    this.engines = Array.from(
      { length: workers },
      (_, i) => new SimEngine(i, speeds.length > 0 ? { ...params, speed: speeds[i % speeds.length] } : params, this),
    );
    // Engine callbacks admit queued requests mid-step: they are placed once every engine reached the time.
    policy.place = (req, d) => this.ready.push({ req, d });
    policy.refuse = (req, reason) => {
      this.refused++;
      if (this.rejections.length < 10) this.rejections.push(`request ${req.index} refused by the router: ${reason}`);
    };
  }

  advanceTo(t: number): void {
    this.time = t;
    for (const e of this.engines) e.advanceTo(t);
    while (this.ready.length > 0) {
      const { req, d } = this.ready.shift()!;
      this.engines[d.worker].enqueue(req, Math.max(t, req.arrivalMs), d.forcedHit);
    }
  }

  dispatch(req: SimRequest, atMs: number): void {
    const d = this.policy.choose(req, this.engines);
    if (d !== undefined) this.engines[d.worker].enqueue(req, atMs, d.forcedHit);
    this.advanceTo(Math.max(this.time, atMs));
  }

  /** Requests waiting in the router's queue. */
  get waiting(): number {
    return (this.policy.queued?.() ?? 0) + this.ready.length;
  }

  sample(t: number): void {
    this.load.timesMs.push(t);
    this.load.perWorker.push(this.engines.map((e) => e.outstanding));
  }

  get idle(): boolean {
    return this.waiting === 0 && this.engines.every((e) => e.idle);
  }

  onEvents(worker: number, events: IndexEvent[]): void {
    this.policy.onEvents(worker, events);
  }
  onPrefillDone(record: RequestRecord): void {
    this.policy.onPrefillDone(record);
  }
  onFinished(record: RequestRecord): void {
    this.records.push(record);
    this.policy.onFinished(record);
  }
  onRejected(request: SimRequest, worker: number, reason: string): void {
    this.rejected++;
    if (this.rejections.length < 10) this.rejections.push(`request ${request.index} on worker ${worker}: ${reason}`);
  }
}

export function validateOptions(opts: SimOptions): void {
  const problems: string[] = [];
  if (!Number.isInteger(opts.workers) || opts.workers < 1) problems.push(`workers must be an integer >= 1, got ${opts.workers}`);
  if (opts.router.blockSize !== opts.engine.blockSize) problems.push("the router's and the engines' block sizes differ");
  if (!(opts.speedup > 0)) problems.push(`speedup must be > 0, got ${opts.speedup}`);
  if (opts.policies.length === 0) problems.push("no policy to simulate");
  if (problems.length > 0) throw new Error(problems.join("; "));
}

/** Upkeep interval for the routers (approximate-mode expiry, leases), in virtual ms. */
const TICK_MS = 1000;
/** While a router holds queued requests, time advances in steps this fine (admissions happen on step boundaries). */
const QUEUE_STEP_MS = 5;

/**
 * One fleet's virtual time. Every fleet stops at the same arrivals, samples and
 * ticks, and at its own queue steps: while its router holds queued requests,
 * time advances in fine steps so admissions happen promptly. Engines' results
 * depend on where they are stopped (whole decode steps are counted between
 * stops), so stops must never come from another fleet.
 */
class FleetTimeline {
  readonly clock = { t: 0, now: () => this.clock.t };
  fleet!: PolicyFleet;
  private nextSample = 0;
  private nextTick = TICK_MS;

  constructor(private readonly sampleMs: number) {}

  /** Moves the fleet to time t, taking load samples and router ticks on the way. */
  advance(t: number): void {
    const f = this.fleet;
    for (;;) {
      const fine = f.waiting > 0 ? this.clock.t + QUEUE_STEP_MS : Infinity;
      const at = Math.min(this.nextSample, this.nextTick, fine);
      if (at > t) break;
      this.clock.t = at;
      f.advanceTo(at);
      if (at === this.nextSample) {
        f.sample(at);
        this.nextSample += this.sampleMs;
      }
      if (at === this.nextTick) {
        f.policy.tick(at);
        this.nextTick += TICK_MS;
      }
    }
    this.clock.t = t;
    f.advanceTo(t);
  }

  /** Keeps sampling until the fleet is idle (bounded: engines always make progress). */
  drain(): void {
    for (let guard = 0; guard < 1_000_000 && !this.fleet.idle; guard++) this.advance(this.nextSample);
    this.fleet.advanceTo(Infinity);
  }
}

export function simulate(trace: readonly TraceRequest[], opts: SimOptions, onProgress?: (done: number, total: number) => void): SimResult {
  validateOptions(opts);
  const requests = opts.maxRequests !== undefined ? trace.slice(0, opts.maxRequests) : trace;
  const traceBlockSize = opts.traceBlockSize ?? MOONCAKE_BLOCK_TOKENS;
  const span = requests.length > 0 ? requests[requests.length - 1].timestampMs / opts.speedup : 0;
  const sampleMs = opts.sampleMs ?? Math.max(1, span / 300);
  const timelines = opts.policies.map((name) => {
    const timeline = new FleetTimeline(sampleMs);
    const policyOptions: PolicyOptions = {
      router: opts.router,
      admission: opts.admission,
      maxNumBatchedTokens: opts.engine.maxNumBatchedTokens,
      totalKvBlocks: Number.isFinite(opts.engine.kvBlocks) ? opts.engine.kvBlocks : 0,
      maxNumSeqs: opts.engine.maxBatch,
      clientDeadlineMs: opts.clientDeadlineMs,
      workers: opts.workers,
      seed: opts.seed,
      clock: timeline.clock,
    };
    timeline.fleet = new PolicyFleet(
      opts.makeExtra?.(name, policyOptions) ?? makePolicy(name, policyOptions),
      opts.workers,
      opts.engine,
      opts.workerSpeeds,
    );
    return timeline;
  });
  const fleets = timelines.map((tl) => tl.fleet);

  const burst = Math.max(1, opts.burst ?? 1);
  requests.forEach((tr, i) => {
    // A burst arrives together, at its first request's time.
    const at = burst > 1 ? requests[i - (i % burst)].timestampMs : tr.timestampMs;
    const req = prepareRequest({ ...tr, timestampMs: at }, opts.engine.blockSize, opts.speedup, `r${tr.index}`, traceBlockSize);
    for (const tl of timelines) {
      tl.advance(req.arrivalMs);
      tl.fleet.dispatch(req, req.arrivalMs);
    }
    if (onProgress && (i % 100 === 99 || i === requests.length - 1)) onProgress(i + 1, requests.length);
  });
  for (const tl of timelines) tl.drain();

  return {
    config: {
      requests: requests.length,
      workers: opts.workers,
      seed: opts.seed,
      speedup: opts.speedup,
      sample_ms: sampleMs,
      engine: { ...opts.engine },
      worker_speeds: opts.workerSpeeds ?? [],
      burst: opts.burst ?? 1,
      client_deadline_ms: opts.clientDeadlineMs ?? null,
      admission: opts.admission ?? null,
      router: {
        block_size: opts.router.blockSize,
        overlap_score_credit: opts.router.overlapScoreCredit,
        prefill_load_scale: opts.router.prefillLoadScale,
        router_temperature: opts.router.temperature,
        kv_events: opts.router.useKvEvents,
        track_active_blocks: opts.router.trackActiveBlocks,
        router_ttl_secs: opts.router.approxTtlMs / 1000,
        router_predicted_ttl_secs: (opts.router.predictedTtlMs ?? 0) / 1000,
        session_affinity_ttl_secs: (opts.router.sessionAffinityTtlMs ?? 0) / 1000,
        session_affinity_slack: opts.router.sessionAffinitySlack ?? 0,
      },
    },
    policies: fleets.map((f) => ({
      result: summarize(
        f.policy.name,
        f.records,
        f.rejected,
        opts.engine.blockSize,
        f.load,
        opts.workers,
        f.policy.extras(),
        f.refused,
      ),
      records: f.records,
      load: f.load,
    })),
  };
}
