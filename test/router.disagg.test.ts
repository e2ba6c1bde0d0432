// Disaggregated serving and Dynamo's conditional disaggregation (issue 22) over
// real gRPC: a FindBestWorker that names prefill_workers gets a decode worker
// and either a prefill worker (booked with the prompt's load until
// MarkPrefillCompleted) or "prefill on the decode worker", by Dynamo's rules
// (lib/kv-router/src/conditional_disagg.rs: isl_bounding, prefill_load,
// isl_or_load; the decode busy gate of prefill_router/conditional_bypass.rs).
// Expected answers are worked out by hand.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import type { RouterConfig } from "../src/router/types.js";
import { type ConditionalDisaggSettings, DEFAULT_CONDITIONAL_DISAGG } from "../src/scheduler/conditionalDisagg.js";
import { stored } from "./support/events.js";
import { type TestRouter, tokens, withTestRouter } from "./support/router.js";

const B = 4;
/** A 10-block prompt (40 tokens); decode worker 1 holds its first 9 blocks. */
const PROMPT = tokens(40, 0);
const DECODE = [1n, 2n];
const PREFILL = [10n, 11n];
const prefillWorkers = PREFILL.map((workerId) => ({ workerId }));

/** Decode 1 caches 36 of PROMPT's 40 tokens, prefill 11 caches 16. Sizes as given. */
async function fleet(r: TestRouter, sizes: { totalKvBlocks?: bigint; maxNumBatchedTokens?: bigint } = {}) {
  for (const workerId of [...DECODE, ...PREFILL]) await r.client.registerWorker({ workerId, ...sizes });
  await r.client.sendEvents([stored(1, 1, PROMPT.slice(0, 36), B, 100n), stored(11, 1, PROMPT.slice(0, 16), B, 200n)]);
}

function withFleet(disagg: Partial<ConditionalDisaggSettings> | undefined, body: (r: TestRouter) => Promise<void>, sizes = {}) {
  const config: Partial<RouterConfig> = { blockSize: B, conditionalDisagg: disagg && { ...DEFAULT_CONDITIONAL_DISAGG, enabled: true, ...disagg } };
  return withTestRouter(config, async (r) => {
    await fleet(r, sizes);
    await body(r);
  });
}

async function loadOf(r: TestRouter, workerId: bigint) {
  const w = (await r.client.listWorkers()).workers.find((x) => x.worker!.workerId === workerId)!;
  return { requests: Number(w.activeRequests), prefillTokens: Number(w.activePrefillTokens), decodeBlocks: Number(w.activeDecodeBlocks) };
}

async function grpcCode(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    return (err as { code: number }).code;
  }
  assert.fail("accepted");
}

describe("disaggregated FindBestWorker", () => {
  it("without --router-conditional-disagg: always a prefill worker, booked until MarkPrefillCompleted", async () => {
    await withFleet(undefined, async (r) => {
      const d = await r.client.findBestWorker({ tokenIds: PROMPT, requestId: "a", prefillWorkers, explain: true });
      assert.equal(d.worker!.workerId, 1n, "decode: the worker caching the prompt");
      assert.deepEqual(d.scores.map((s) => s.worker!.workerId).sort(), DECODE, "scored over the decode pool only");
      assert.equal(d.disagg!.prefillLocally, false);
      assert.equal(d.disagg!.prefillWorker!.workerId, 11n, "prefill: the prefill worker caching most of it");
      assert.equal(d.disagg!.prefillOverlapBlocks, 4);
      assert.equal(d.disagg!.netNewTokens, 4n);
      assert.match(d.disagg!.reason, /conditional disaggregation is off/);
      assert.deepEqual(await loadOf(r, 11n), { requests: 1, prefillTokens: 24, decodeBlocks: 10 }, "the prompt's prefill load on the prefill worker");
      assert.deepEqual(await loadOf(r, 1n), { requests: 1, prefillTokens: 0, decodeBlocks: 10 }, "the decode worker only decodes");
      assert.equal((await r.client.markPrefillCompleted("a")).found, true);
      assert.equal((await loadOf(r, 11n)).requests, 0, "prefill done: its booking goes");
      assert.equal((await r.client.free("a")).found, true);
      assert.equal((await loadOf(r, 1n)).requests, 0);
    });
  });

  it("isl_bounding: few net-new tokens on the decode worker → prefill there; a cold prompt → prefill remotely", async () => {
    await withFleet({ policy: "isl_bounding" }, async (r) => {
      const local = await r.client.findBestWorker({ tokenIds: PROMPT, requestId: "warm", prefillWorkers });
      assert.equal(local.worker!.workerId, 1n);
      assert.equal(local.disagg!.prefillLocally, true);
      assert.equal(local.disagg!.prefillWorker, undefined);
      assert.match(local.disagg!.reason, /isl_bounding: 4 net-new tokens < 2048 and 0\.1 of the prompt < 0\.7/);
      assert.deepEqual(await loadOf(r, 1n), { requests: 1, prefillTokens: 4, decodeBlocks: 10 }, "the decode worker prefills the 4 uncached tokens");
      assert.equal((await loadOf(r, 11n)).requests, 0, "no prefill worker booked");

      const cold = await r.client.findBestWorker({ tokenIds: tokens(40, 5000), requestId: "cold", prefillWorkers });
      assert.equal(cold.disagg!.prefillLocally, false);
      assert.match(cold.disagg!.reason, /isl_bounding: 1 of the prompt is net-new, not < 0\.7: prefill remotely/);
      assert.equal(cold.disagg!.netNewTokens, 40n);
    });
  });

  it("eff_isl_threshold is strict: net-new tokens equal to it prefill remotely", async () => {
    await withFleet({ effIslThreshold: 4 }, async (r) => {
      const d = await r.client.findBestWorker({ tokenIds: PROMPT, prefillWorkers });
      assert.equal(d.disagg!.prefillLocally, false);
      assert.match(d.disagg!.reason, /4 net-new tokens >= 4/);
    });
  });

  it("decode_busy_threshold vetoes a local prefill on a busy decode worker, and on one of unknown size", async () => {
    await withFleet({ decodeBusyThreshold: 0.05 }, async (r) => {
      const d = await r.client.findBestWorker({ tokenIds: PROMPT, prefillWorkers });
      assert.equal(d.disagg!.prefillLocally, false);
      assert.equal(d.disagg!.decodeWorkerBusy, true);
      assert.match(d.disagg!.reason, /decode worker is busy \(10 decode blocks > 0\.05 x 100\)/);
    }, { totalKvBlocks: 100n });
    await withFleet({ decodeBusyThreshold: 0.5 }, async (r) => {
      const d = await r.client.findBestWorker({ tokenIds: PROMPT, prefillWorkers });
      assert.equal(d.disagg!.prefillLocally, true);
      assert.equal(d.disagg!.decodeWorkerBusy, false);
    }, { totalKvBlocks: 100n });
    await withFleet({ decodeBusyThreshold: 0.5 }, async (r) => {
      const d = await r.client.findBestWorker({ tokenIds: PROMPT, prefillWorkers });
      assert.equal(d.disagg!.prefillLocally, false, "gate set, decode size unknown: no bypass (Dynamo's newest call site)");
      assert.match(d.disagg!.reason, /KV size is unknown/);
    });
  });

  it("prefill_load: a busy prefill pool sends even a cold prompt to the decode worker", async () => {
    await withFleet({ policy: "prefill_load", prefillBusyThreshold: 0.5 }, async (r) => {
      const calm = await r.client.findBestWorker({ tokenIds: tokens(40, 5000), prefillWorkers });
      assert.deepEqual([calm.disagg!.prefillLocally, calm.disagg!.prefillWorkerBusy], [false, false]);
      // 40 prompt tokens on each prefill worker: past 0.5 x 8.
      for (const workerId of PREFILL) await r.client.findBestWorker({ tokenIds: tokens(40, 9000 + Number(workerId) * 100), requestId: `p${workerId}`, allowedWorkers: [{ workerId }] });
      const busy = await r.client.findBestWorker({ tokenIds: tokens(40, 5000), prefillWorkers });
      assert.deepEqual([busy.disagg!.prefillLocally, busy.disagg!.prefillWorkerBusy], [true, true]);
      assert.match(busy.disagg!.reason, /prefill_load: the prefill worker is past its busy threshold/);
    }, { maxNumBatchedTokens: 8n });
  });

  it("isl_or_load: either rule", async () => {
    await withFleet({ policy: "isl_or_load", prefillBusyThreshold: 0.5 }, async (r) => {
      assert.equal((await r.client.findBestWorker({ tokenIds: PROMPT, prefillWorkers })).disagg!.prefillLocally, true, "isl arm");
      const cold = await r.client.findBestWorker({ tokenIds: tokens(40, 5000), prefillWorkers });
      assert.equal(cold.disagg!.prefillLocally, false);
      assert.match(cold.disagg!.reason, /isl_or_load: .*; the prefill worker is not busy: prefill remotely/);
    }, { maxNumBatchedTokens: 8n });
  });

  it("refuses unknown prefill workers, a fleet with no decode worker left, and a request id routed twice", async () => {
    await withFleet({}, async (r) => {
      assert.equal(await grpcCode(r.client.findBestWorker({ tokenIds: PROMPT, prefillWorkers: [{ workerId: 99n }] })), status.INVALID_ARGUMENT);
      const all = [...DECODE, ...PREFILL].map((workerId) => ({ workerId }));
      assert.equal(await grpcCode(r.client.findBestWorker({ tokenIds: PROMPT, prefillWorkers: all })), status.FAILED_PRECONDITION);
      await r.client.findBestWorker({ tokenIds: tokens(40, 5000), requestId: "x", prefillWorkers });
      assert.equal(await grpcCode(r.client.findBestWorker({ tokenIds: tokens(40, 5000), requestId: "x", prefillWorkers })), status.ALREADY_EXISTS);
      await r.client.free("x");
      assert.deepEqual(await Promise.all(PREFILL.map((w) => loadOf(r, w).then((l) => l.requests))), [0, 0], "Free drops the prefill booking too");
      // Counted on the wire and refused before protobuf-es builds an object per entry, as allowed_workers is.
      const huge = Array.from({ length: 200_000 }, (_, i) => ({ workerId: BigInt(i) }));
      assert.equal(await grpcCode(r.client.findBestWorker({ tokenIds: PROMPT, prefillWorkers: huge })), status.INVALID_ARGUMENT);
    });
  });
});
