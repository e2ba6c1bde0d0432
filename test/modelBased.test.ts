// Model-based test: seeded random streams of events, registrations,
// deregistrations, queries, prefill completions and frees go to the real
// router (over gRPC) and to a reference model; any divergence fails with a
// shrunk, replayable operation list.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import { seededRandom } from "../src/util/random.js";
import { type ModelEvent, ReferenceModel } from "./model/referenceModel.js";
import { type TestRouter, startTestRouter } from "./support/router.js";
import type { EventInit } from "./support/events.js";

const B = 4;
const WEIGHT = 1.5;
const SEEDS = Number(process.env.MODEL_SEEDS ?? 40);
/** Streams replayed against a router whose index runs on 2 shard threads. */
const SHARDED_SEEDS = Number(process.env.MODEL_SHARDED_SEEDS ?? 10);
const OPS_PER_SEED = Number(process.env.MODEL_OPS ?? 120);

/** A few distinct block contents, so chains from different workers share prefixes. */
const CONTENTS = Array.from({ length: 5 }, (_, c) => Array.from({ length: B }, (_, i) => 1000 * (c + 1) + i));

type Op =
  | { op: "event"; event: ModelEvent }
  | { op: "register"; worker: number; dps: number[] }
  | { op: "deregister"; worker: number }
  | { op: "route"; tokens: number[]; requestId?: string }
  | { op: "prefillDone"; requestId: string }
  | { op: "free"; requestId: string }
  /** Rebuild a second router from the first one's DumpIndex; from then on it must agree on every event and query. */
  | { op: "restore" };

function generate(seed: number, count: number): Op[] {
  const rnd = seededRandom(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
  const ops: Op[] = [];
  const nextId = new Map<string, number>();
  const exts = new Map<string, bigint[]>();
  let extCounter = 1n;
  let reqCounter = 0;
  const requestIds: string[] = [];
  for (let n = 0; n < count; n++) {
    const r = rnd();
    const worker = 1 + Math.floor(rnd() * 3);
    const dp = rnd() < 0.8 ? 0 : 1;
    const key = `${worker}:${dp}`;
    const known = exts.get(key) ?? [];
    // Event ids: mostly the next one, sometimes a replay (stale) or a jump (gap).
    const last = nextId.get(key) ?? Math.floor(rnd() * 5);
    const roll = rnd();
    const id = roll < 0.08 ? last - 1 : roll < 0.14 ? last + 2 : last;
    if (id >= last) nextId.set(key, id + 1);
    if (r < 0.4) {
      const parent = known.length > 0 && rnd() < 0.6 ? pick(known) : rnd() < 0.05 ? 999_999n : undefined;
      const blocks = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => ({ ext: extCounter++, tokens: pick(CONTENTS) }));
      // A duplicate store, or a block stored again after its removal (then after its children in the worker's list).
      if (rnd() < 0.15 && known.length > 0) blocks[0].ext = pick(known);
      ops.push({ op: "event", event: { kind: "stored", worker, dp, id, parent, blocks } });
      exts.set(key, [...known, ...blocks.map((b) => b.ext)]);
    } else if (r < 0.5) {
      const victims = known.filter(() => rnd() < 0.3);
      if (rnd() < 0.3) victims.push(888_888n);
      ops.push({ op: "event", event: { kind: "removed", worker, dp, id, exts: victims } });
    } else if (r < 0.53) {
      ops.push({ op: "event", event: { kind: "cleared", worker, dp, id } });
    } else if (r < 0.58) {
      ops.push({ op: "register", worker: 1 + Math.floor(rnd() * 4), dps: rnd() < 0.5 ? [0] : [0, 1] });
    } else if (r < 0.6) {
      ops.push({ op: "deregister", worker });
    } else if (r < 0.63) {
      ops.push({ op: "restore" });
    } else if (r < 0.85) {
      const blocks = Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => pick(CONTENTS));
      const tail = rnd() < 0.3 ? [7, 7] : [];
      let requestId: string | undefined;
      if (rnd() < 0.6) {
        requestId = rnd() < 0.05 && requestIds.length > 0 ? pick(requestIds) : `r${reqCounter++}`;
        requestIds.push(requestId);
      }
      ops.push({ op: "route", tokens: [...blocks.flat(), ...tail], requestId });
    } else if (r < 0.92 && requestIds.length > 0) {
      ops.push({ op: "prefillDone", requestId: pick(requestIds) });
    } else if (requestIds.length > 0) {
      ops.push({ op: "free", requestId: rnd() < 0.9 ? pick(requestIds) : "never-routed" });
    }
  }
  return ops;
}

function toWire(e: ModelEvent): EventInit {
  const header = { workerId: BigInt(e.worker), dpRank: e.dp, eventId: BigInt(e.id) };
  if (e.kind === "stored") {
    return {
      ...header,
      data: { case: "stored", value: { parentBlockHash: e.parent, blocks: e.blocks.map((b) => ({ blockHash: b.ext, tokenIds: b.tokens })) } },
    };
  }
  if (e.kind === "removed") return { ...header, data: { case: "removed", value: { blockHashes: e.exts } } };
  return { ...header, data: { case: "cleared", value: {} } };
}

/** Runs ops against a fresh router and the model; returns the first divergence, if any. */
/** Where the router's index and ingest decoding run. */
interface Threads {
  indexerShards: number;
  ingestThreads: number;
}

async function divergence(ops: Op[], threads: Threads): Promise<string | undefined> {
  const r = await startTestRouter({ blockSize: B, prefillLoadScale: WEIGHT, workerLeaseTtlMs: 600_000 }, threads);
  const model = new ReferenceModel(B, WEIGHT);
  /** Rebuilt from r's dump at the last "restore" op; fed every later event and checked on every later query. */
  let shadow: TestRouter | undefined;
  const overlapsOf = async (router: TestRouter, tokenIds: number[]) => {
    const res = await router.client.findBestWorker({ tokenIds, explain: true }).catch(() => undefined);
    return (res?.scores ?? []).filter((s) => s.overlapBlocks > 0).map((s) => `${s.worker!.workerId}:${s.worker!.dpRank}=${s.overlapBlocks}`).sort().join(" ");
  };
  const heldBlocks = async (router: TestRouter) =>
    (await router.client.listWorkers()).workers.filter((w) => w.cachedBlocks > 0n).map((w) => `${w.worker!.workerId}:${w.worker!.dpRank}=${w.cachedBlocks}`).sort().join(" ");
  try {
    for (const [i, op] of ops.entries()) {
      const at = `op ${i} ${JSON.stringify(op, (_k, v) => (typeof v === "bigint" ? `${v}n` : v))}`;
      switch (op.op) {
        case "event": {
          const expected = model.apply(op.event);
          const res = await r.client.sendEvents([toWire(op.event)]);
          const got = res.applied === 1n ? "applied" : res.rejections[0]?.reason;
          if (got !== expected) return `${at}: router says ${got}, model says ${expected}`;
          if (shadow) {
            const again = await shadow.client.sendEvents([toWire(op.event)]);
            const rebuilt = again.applied === 1n ? "applied" : again.rejections[0]?.reason;
            if (rebuilt !== got) return `${at}: the router rebuilt from a dump says ${rebuilt}, the original ${got}`;
          }
          break;
        }
        case "restore": {
          await shadow?.close();
          shadow = await startTestRouter({ blockSize: B, prefillLoadScale: WEIGHT, workerLeaseTtlMs: 600_000 }, threads);
          await shadow.client.sendEvents(await r.client.dumpIndex(), true);
          const [want, got] = [await heldBlocks(r), await heldBlocks(shadow)];
          if (got !== want) return `${at}: rebuilt from the dump, blocks per worker are ${got}; the original holds ${want}`;
          break;
        }
        case "register":
          model.register(op.worker, op.dps);
          await r.client.registerWorker({ workerId: BigInt(op.worker), dpRanks: op.dps });
          break;
        case "deregister": {
          const known = model.candidates().some((k) => k.startsWith(`${op.worker}:`));
          model.deregister(op.worker);
          const ok = await r.client.deregisterWorker(BigInt(op.worker)).then(() => true, (e) => (e.code === status.NOT_FOUND ? false : Promise.reject(e)));
          await shadow?.client.deregisterWorker(BigInt(op.worker)).catch(() => undefined);
          if (ok !== known) return `${at}: router ${ok ? "knew" : "did not know"} the worker, model ${known ? "did" : "did not"}`;
          break;
        }
        case "route": {
          const scores = model.scores(op.tokens);
          const duplicate = op.requestId !== undefined && model.requests.has(op.requestId);
          const res = await r.client.findBestWorker({ tokenIds: op.tokens, requestId: op.requestId, explain: true }).then(
            (d) => d,
            (e) => e as { code: number },
          );
          if ("code" in res) {
            const expectedCode = scores.length === 0 ? status.FAILED_PRECONDITION : duplicate ? status.ALREADY_EXISTS : -1;
            if (res.code !== expectedCode) return `${at}: router failed with status ${res.code}, model expected ${expectedCode}`;
            break;
          }
          if (scores.length === 0 || duplicate) return `${at}: router answered, model expected a refusal`;
          const got = res.scores
            .map((s) => `${s.worker!.workerId}:${s.worker!.dpRank} o=${s.overlapBlocks} p=${s.prefillBlocks} d=${s.decodeBlocks} l=${s.logit}`)
            .sort();
          const want = scores.map((s) => `${s.key} o=${s.overlap} p=${s.prefillBlocks} d=${s.decodeBlocks} l=${s.logit}`).sort();
          if (got.join("|") !== want.join("|")) return `${at}: scores differ\n  router: ${got.join(" ")}\n  model:  ${want.join(" ")}`;
          const chosen = `${res.worker!.workerId}:${res.worker!.dpRank}`;
          const best = model.bestKeys(scores);
          if (!best.includes(chosen)) return `${at}: router chose ${chosen}, model allows ${best.join(",")}`;
          if (op.requestId !== undefined) model.route(op.requestId, chosen, op.tokens, res.overlapBlocks);
          if (shadow) {
            // Every prefix of the prompt, so a block lost anywhere in a chain shows.
            for (let n = B; n <= op.tokens.length; n += B) {
              const [want, got] = [await overlapsOf(r, op.tokens.slice(0, n)), await overlapsOf(shadow, op.tokens.slice(0, n))];
              if (got !== want) return `${at}: the router rebuilt from a dump answers overlaps "${got}", the original "${want}"`;
            }
          }
          break;
        }
        case "prefillDone": {
          const want = model.markPrefillCompleted(op.requestId);
          const got = (await r.client.markPrefillCompleted(op.requestId)).found;
          if (got !== want) return `${at}: router found=${got}, model found=${want}`;
          break;
        }
        case "free": {
          const want = model.free(op.requestId);
          const got = (await r.client.free(op.requestId)).found;
          if (got !== want) return `${at}: router found=${got}, model found=${want}`;
          break;
        }
      }
    }
    return undefined;
  } finally {
    await shadow?.close();
    await r.close();
  }
}

/** Greedily drops operations while the run still diverges (bounded), for a short reproduction. */
async function shrink(ops: Op[], threads: Threads): Promise<{ ops: Op[]; failure: string }> {
  let current = ops;
  let failure = (await divergence(current, threads))!;
  for (let i = current.length - 1, tries = 0; i >= 0 && tries < 300; i--, tries++) {
    const candidate = current.filter((_, j) => j !== i);
    const f = await divergence(candidate, threads);
    if (f !== undefined) {
      current = candidate;
      failure = f;
    }
  }
  return { ops: current, failure };
}

async function agreeOn(seeds: number[], threads: Threads): Promise<number> {
  let checked = 0;
  for (const seed of seeds) {
    const ops = generate(seed, OPS_PER_SEED);
    const failure = await divergence(ops, threads);
    if (failure !== undefined) {
      const small = await shrink(ops, threads);
      assert.fail(
        `seed ${seed} (${JSON.stringify(threads)}) diverges: ${small.failure}\nminimal reproduction (${small.ops.length} ops):\n` +
          JSON.stringify(small.ops, (_k, v) => (typeof v === "bigint" ? `${v}n` : v), 1),
      );
    }
    checked += ops.length;
  }
  return checked;
}

describe("router vs reference model", () => {
  it(`agrees on ${SEEDS} seeded streams of ${OPS_PER_SEED} operations (index in the main thread)`, async () => {
    const checked = await agreeOn(Array.from({ length: SEEDS }, (_, i) => i + 1), { indexerShards: 0, ingestThreads: 0 });
    assert.ok(checked >= SEEDS * OPS_PER_SEED * 0.5, `ran ${checked} operations`);
  });

  it(`agrees on ${SHARDED_SEEDS} more streams with the index on 2 shard threads`, async () => {
    const checked = await agreeOn(Array.from({ length: SHARDED_SEEDS }, (_, i) => 1000 + i), { indexerShards: 2, ingestThreads: 0 });
    assert.ok(checked >= SHARDED_SEEDS * OPS_PER_SEED * 0.5, `ran ${checked} operations`);
  });

  it(`agrees on ${SHARDED_SEEDS} more streams with IngestKvEvents decoded on 2 threads`, async () => {
    const checked = await agreeOn(Array.from({ length: SHARDED_SEEDS }, (_, i) => 2000 + i), { indexerShards: 0, ingestThreads: 2 });
    assert.ok(checked >= SHARDED_SEEDS * OPS_PER_SEED * 0.5, `ran ${checked} operations`);
  });

  it(`agrees on ${SHARDED_SEEDS} more streams with 2 ingest threads and 2 index shards`, async () => {
    const checked = await agreeOn(Array.from({ length: SHARDED_SEEDS }, (_, i) => 3000 + i), { indexerShards: 2, ingestThreads: 2 });
    assert.ok(checked >= SHARDED_SEEDS * OPS_PER_SEED * 0.5, `ran ${checked} operations`);
  });
});
