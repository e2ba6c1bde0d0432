// `node --import tsx bench/policyTail.run.ts --family agentic-long --seed 1 --load 0.8 --policies kv-adaptive,kv-router`
// Per-request traces of a policy comparison run's slowest requests (docs/simulation/policies.md,
// round 5): for each of the slowest --top fraction, the worker, the engine's batch and prefill
// queue when the router chose it, whether the session stayed on its previous turn's worker or
// moved, and where the time went (router queue, engine queue, own prefill). Same fleet and
// settings as bench/policyCompare.run.ts (bench/policyPlan.ts), same capacities.
// Diagnostic only: it wraps the simulator's KvPolicy.choose and KvRouter.findBestWorker to see
// each decision and the engines' state at that moment; nothing else changes.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { KvRouter } from "../src/router/router.js";
import type { RouteDecision } from "../src/router/types.js";
import type { Capacity } from "../src/simulate/capacity.js";
import type { SimEngine, SimRequest } from "../src/simulate/engine.js";
import { type FamilyName, familyTrace } from "../src/simulate/families.js";
import { KvPolicy, type PolicyName } from "../src/simulate/policies.js";
import { simulate } from "../src/simulate/run.js";
import { PLAN_BASE, PLAN_BLOCK } from "./policyPlan.js";

const { values } = parseArgs({
  options: {
    family: { type: "string", default: "agentic-long" },
    seed: { type: "string", default: "1" },
    load: { type: "string", default: "0.8" },
    policies: { type: "string", default: "kv-adaptive,kv-router" },
    top: { type: "string", default: "0.01" },
    capacity: { type: "string", default: "docs/simulation/policies/capacity.json" },
    rows: { type: "string", default: "40" },
  },
});
const family = values.family as FamilyName;
const seed = Number(values.seed);
const load = Number(values.load);
const capacity: Capacity = JSON.parse(readFileSync(values.capacity, "utf8"))[family];
const policies = values.policies.split(",") as PolicyName[];

/** What the router and the chosen engine looked like when a request was routed. */
interface AtRoute {
  policy: string;
  decision?: RouteDecision;
  /**
   * Per engine: running, waiting, prefill tokens queued or in progress (whole prompts), and the same
   * less what the engine's cache holds now of each queued prompt's prefix (what it would prefill if it started now).
   */
  engines: { running: number; waiting: number; queuedTokens: number; uncachedTokens: number }[];
}
const atRoute = new Map<string, AtRoute>();
let current: AtRoute | undefined;

const engineState = (e: SimEngine) => {
  // Private fields, read for this diagnostic only.
  const x = e as unknown as { queue: { record: { request: SimRequest } }[]; queueHead: number; prefillRemaining: number; prefilling: unknown; cache: Map<number, unknown> };
  let queuedTokens = x.prefilling ? x.prefillRemaining : 0;
  let uncachedTokens = queuedTokens;
  for (let i = x.queueHead; i < x.queue.length; i++) {
    const req = x.queue[i].record.request;
    queuedTokens += req.inputLength;
    let hit = 0;
    while (hit < req.keys.length && x.cache.has(req.keys[hit])) hit++;
    uncachedTokens += req.inputLength - hit * PLAN_BLOCK;
  }
  return { running: e.running, waiting: e.waiting, queuedTokens, uncachedTokens };
};

const choose = KvPolicy.prototype.choose;
KvPolicy.prototype.choose = function (this: KvPolicy, req: SimRequest, engines: readonly SimEngine[]) {
  current = { policy: this.name, engines: engines.map(engineState) };
  atRoute.set(`${this.name}\u0000${req.id}`, current);
  try {
    return choose.call(this, req, engines);
  } finally {
    current = undefined;
  }
};
const find = KvRouter.prototype.findBestWorker;
KvRouter.prototype.findBestWorker = function (this: KvRouter, r) {
  const d = find.call(this, r);
  // Queued requests are decided later (admission): key them by request id through the last policy seen.
  if (current !== undefined) current.decision = d;
  else lateDecisions.set(r.requestId ?? "", d);
  return d;
};
const lateDecisions = new Map<string, RouteDecision>();

const trace = familyTrace(family, seed);
const speedup = capacity.speedup * load;
const result = simulate(trace, { ...PLAN_BASE, policies, seed, speedup });

const scoreOf = (d: RouteDecision | undefined, worker: number) => {
  const s = d?.scores.find((x) => Number(x.worker.workerId) - 1 === worker);
  return s === undefined ? "?" : `${s.overlapBlocks}, ${Math.round(s.prefillBlocks)}, ${s.decodeBlocks}, ${Math.round(s.logit)}`;
};
const fmt = (ms: number) => (ms / 1000).toFixed(2);
for (const { result: r, records } of result.policies) {
  console.log(`\n## ${r.policy}: ${family} seed ${seed} at ${Math.round(load * 100)}%: TTFT mean ${Math.round(r.ttft_mean_ms)} ms, p99 ${Math.round(r.ttft_p99_ms)} ms, hit ${(r.hit_rate * 100).toFixed(1)}%`);
  // Each session's turns in arrival order: did this turn stay on the previous turn's worker?
  const byArrival = [...records].sort((a, b) => a.request.arrivalMs - b.request.arrivalMs);
  const prevWorker = new Map<string, number>();
  const prevOf = new Map<string, number | undefined>();
  for (const rec of byArrival) {
    const s = rec.request.sessionId ?? "";
    prevOf.set(rec.request.id, prevWorker.get(s));
    prevWorker.set(s, rec.worker);
  }
  const ttft = (x: (typeof records)[number]) => x.firstTokenMs - x.request.arrivalMs;
  // The whole run, not only its tail: how often sessions moved, how many long recomputes, how many long engine queues.
  let moves = 0;
  let bigRecomputes = 0;
  let longQueues = 0;
  for (const rec of records) {
    const prev = prevOf.get(rec.request.id);
    if (prev !== undefined && prev !== rec.worker) moves++;
    if (rec.request.inputLength - rec.hitBlocks * PLAN_BLOCK > 16_384) bigRecomputes++;
    if (rec.prefillStartMs - rec.queuedMs > 1000) longQueues++;
  }
  console.log(`all ${records.length}: session moves ${moves}, recomputes over 16 k tokens ${bigRecomputes}, engine queue over 1 s ${longQueues}`);
  const slow = [...records].sort((a, b) => ttft(b) - ttft(a)).slice(0, Math.max(1, Math.round(records.length * Number(values.top))));
  const counts = { moved: 0, stayed: 0, first: 0, backedUp: 0 };
  let sums = { router: 0, engine: 0, prefill: 0 };
  console.log("arrival s | ttft s | router q | engine q | prefill | uncached tok | prompt tok | worker | prev | batch run/wait | queued tok ahead (uncached now) | min queued tok elsewhere (uncached now) | chosen: overlap, prefill, decode blocks, logit | prev: same | reason");
  for (const rec of slow) {
    const at = atRoute.get(`${r.policy}\u0000${rec.request.id}`);
    const d = at?.decision ?? lateDecisions.get(rec.request.id);
    const prev = prevOf.get(rec.request.id);
    if (prev === undefined) counts.first++;
    else if (prev === rec.worker) counts.stayed++;
    else counts.moved++;
    const e = at?.engines[rec.worker];
    if (e !== undefined && e.running >= PLAN_BASE.engine.maxBatch && e.waiting > 0) counts.backedUp++;
    const others = at?.engines.filter((_, i) => i !== rec.worker) ?? [];
    const routerQ = rec.queuedMs - rec.request.arrivalMs;
    const engineQ = rec.prefillStartMs - rec.queuedMs;
    const prefill = rec.firstTokenMs - rec.prefillStartMs;
    sums = { router: sums.router + routerQ, engine: sums.engine + engineQ, prefill: sums.prefill + prefill };
    if (slow.indexOf(rec) < Number(values.rows)) {
      console.log(
        [fmt(rec.request.arrivalMs), fmt(ttft(rec)), fmt(routerQ), fmt(engineQ), fmt(prefill), rec.request.inputLength - rec.hitBlocks * PLAN_BLOCK, rec.request.inputLength, rec.worker,
          prev === undefined ? "-" : prev === rec.worker ? "same" : prev, e ? `${e.running}/${e.waiting}` : "?", e ? `${e.queuedTokens} (${e.uncachedTokens})` : "?",
          others.length ? `${Math.min(...others.map((o) => o.queuedTokens))} (${Math.min(...others.map((o) => o.uncachedTokens))})` : "?", scoreOf(d, rec.worker), prev === undefined || prev === rec.worker ? "" : scoreOf(d, prev), d?.reason ?? ""].join(" | "),
      );
    }
  }
  const n = slow.length;
  console.log(`slowest ${n}: moved ${counts.moved}, stayed ${counts.stayed}, first turn ${counts.first}; chosen worker backed up at routing ${counts.backedUp}; ` +
    `mean router queue ${fmt(sums.router / n)} s, engine queue ${fmt(sums.engine / n)} s, own prefill ${fmt(sums.prefill / n)} s`);
}
