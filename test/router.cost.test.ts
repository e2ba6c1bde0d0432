// Each term of Dynamo's worker cost (lib/kv-router/src/scheduling/selector.rs,
// DefaultWorkerSelector::worker_logit), read back from FindBestWorker's explain
// scores over real gRPC. Expected values are worked out by hand from Dynamo's formula.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { RouterConfig } from "../src/router/types.js";
import { stored } from "./support/events.js";
import { type TestRouter, tokens, withTestRouter } from "./support/router.js";

const B = 4;

function withRouter(config: Partial<RouterConfig>, body: (r: TestRouter) => Promise<void>) {
  return withTestRouter({ blockSize: B, ...config }, body);
}

async function register(r: TestRouter, ...ids: number[]) {
  for (const id of ids) await r.client.registerWorker({ workerId: BigInt(id) });
}

/** The explain score of each worker id for a prompt (nothing is recorded: no request_id). */
async function scores(r: TestRouter, prompt: number[]) {
  const d = await r.client.findBestWorker({ tokenIds: prompt, explain: true });
  return new Map(d.scores.map((s) => [s.worker!.workerId, s]));
}

const close = (actual: number, expected: number, what: string) =>
  assert.ok(Math.abs(actual - expected) < 1e-9, `${what}: ${actual}, expected ${expected}`);

// A 10-block prompt whose first 8 blocks worker 1 holds.
const PROMPT = tokens(40, 0);
const cachedOn1 = () => stored(1, 1, tokens(32, 0), B, 100n);

describe("Dynamo's cost terms over gRPC", () => {
  it("overlap score credit: each device-cached block takes credit blocks off the prefill load", async () => {
    await withRouter({ overlapScoreCredit: 0.5 }, async (r) => {
      await register(r, 1, 2);
      await r.client.sendEvents([cachedOn1()]);
      const s = await scores(r, PROMPT);
      close(s.get(1n)!.prefillBlocks, 10 - 0.5 * 8, "worker 1 prefill = 10 prompt blocks - 0.5 * 8 cached");
      close(s.get(1n)!.logit, 6 + 10, "logit = prefill + 10 decode blocks");
      close(s.get(2n)!.prefillBlocks, 10, "worker 2 holds nothing");
    });
  });

  it("a credit above 1 clamps the adjusted prefill load at zero", async () => {
    await withRouter({ overlapScoreCredit: 2 }, async (r) => {
      await register(r, 1);
      await r.client.sendEvents([cachedOn1()]);
      const s = (await scores(r, PROMPT)).get(1n)!;
      assert.equal(s.prefillBlocks, 0, "max(0, 10 - 2 * 8)");
      assert.equal(s.logit, 10);
    });
  });

  it("credit decay: a worker with more active prefill than the least loaded gets less credit", async () => {
    await withRouter({ overlapScoreCreditDecay: 1 }, async (r) => {
      await register(r, 1, 2);
      await r.client.sendEvents([cachedOn1()]);
      // 16 uncached prompt tokens in flight on worker 1, none on worker 2.
      await r.client.findBestWorker({ tokenIds: tokens(16, 5000), requestId: "busy", allowedWorkers: [{ workerId: 1n }] });
      const s = await scores(r, PROMPT);
      // excess = 16 tokens = 4 blocks over the least loaded (worker 2, 0), per 10 request blocks.
      const decay = 1 / (1 + 1 * (4 / 10));
      const raw = (16 + 40) / B;
      close(s.get(1n)!.prefillBlocks, raw - decay * 8, "worker 1: raw prefill - decayed credit");
      close(s.get(1n)!.logit, raw - decay * 8 + (4 + 10), "plus its decode blocks (4 active + 10 new)");
      close(s.get(2n)!.prefillBlocks, 10, "worker 2 is the load floor: no cache, no decay");
    });
  });

  it("credit decay is off without prefill-token tracking (Dynamo needs both)", async () => {
    await withRouter({ overlapScoreCreditDecay: 1, trackPrefillTokens: false }, async (r) => {
      await register(r, 1, 2);
      await r.client.sendEvents([cachedOn1()]);
      await r.client.findBestWorker({ tokenIds: tokens(16, 5000), requestId: "busy", allowedWorkers: [{ workerId: 1n }] });
      const s = await scores(r, PROMPT);
      assert.equal(s.get(1n)!.prefillBlocks, 0, "no prompt load at all");
      assert.equal(s.get(2n)!.prefillBlocks, 0);
      assert.equal(s.get(1n)!.logit, 4 + 10, "only decode blocks count");
    });
  });

  it("prefill load scale multiplies the adjusted prefill load, not the decode blocks", async () => {
    await withRouter({ prefillLoadScale: 2.5 }, async (r) => {
      await register(r, 1, 2);
      await r.client.sendEvents([cachedOn1()]);
      const s = await scores(r, PROMPT);
      close(s.get(1n)!.logit, 2.5 * (10 - 8) + 10, "worker 1");
      close(s.get(2n)!.logit, 2.5 * 10 + 10, "worker 2");
    });
  });

  it("decode active-request weight adds its value per active request on the worker", async () => {
    await withRouter({ decodeActiveRequestWeight: 3 }, async (r) => {
      await register(r, 1, 2);
      for (const id of ["a", "b"]) {
        await r.client.findBestWorker({ tokenIds: tokens(8, id === "a" ? 7000 : 8000), requestId: id, allowedWorkers: [{ workerId: 1n }] });
        await r.client.markPrefillCompleted(id);
      }
      const s = await scores(r, PROMPT);
      // Worker 1: 2 requests done prefilling hold 4 blocks; worker 2 is idle.
      close(s.get(1n)!.logit, 10 + (4 + 10) + 3 * 2, "prefill + decode + 3 * 2 requests");
      close(s.get(2n)!.logit, 10 + 10, "no requests, no request cost");
    });
  });

  it("without prefill-token tracking the prompt adds no prefill load and records none", async () => {
    await withRouter({ trackPrefillTokens: false }, async (r) => {
      await register(r, 1);
      await r.client.findBestWorker({ tokenIds: tokens(16, 0), requestId: "a" });
      const s = (await scores(r, tokens(16, 100))).get(1n)!;
      assert.equal(s.prefillBlocks, 0);
      assert.equal(s.decodeBlocks, 8n, "decode blocks still count");
      assert.equal((await r.client.listWorkers()).workers[0].activePrefillTokens, 0n);
    });
  });

  it("without assuming KV reuse, requests with the same prompt do not share decode blocks", async () => {
    for (const assumeKvReuse of [true, false]) {
      await withRouter({ assumeKvReuse }, async (r) => {
        await register(r, 1);
        await r.client.findBestWorker({ tokenIds: tokens(16, 0), requestId: "first" });
        const s = (await scores(r, tokens(16, 0))).get(1n)!;
        assert.equal(s.decodeBlocks, assumeKvReuse ? 4n : 8n, `assumeKvReuse ${assumeKvReuse}`);
      });
    }
  });
});
