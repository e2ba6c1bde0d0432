// FindBestWorker over gRPC hashes the prompt as it decodes it (the token ids go
// straight into a WebAssembly hasher's memory, src/server/promptDecoder.ts) and
// carries only the token count and the sequence hashes (HashedPrompt); Connect
// (HTTP/JSON) hands the router token arrays, which it hashes itself. Over real
// gRPC and HTTP: both paths give the same overlaps for every seed (LoRA, cache
// namespace) and a partial last block; requests held in the admission queue
// keep their own hashes while later requests are decoded into the same memory;
// a prompt past --max-tokens is still refused with the same message.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { type TestRouter, startTestRouter, tokens, withRouter } from "./support/router.js";
import { stored } from "./support/events.js";
import { waitFor } from "./support/wait.js";

const B = 4;


/** Prompts of 3 full blocks (and a partial one), stored on worker 1 under each seed. */
const SEEDS = [
  { loraName: "", cacheNamespace: "" },
  { loraName: "adapter-a", cacheNamespace: "" },
  { loraName: "", cacheNamespace: "tenant-1" },
  { loraName: "adapter-a", cacheNamespace: "tenant-1" },
];
const promptOf = (i: number) => tokens(3 * B + 2, 1000 * (i + 1));

async function storeSeeds(r: TestRouter) {
  await r.client.sendEvents(SEEDS.map((s, i) => stored(1, i + 1, promptOf(i), B, BigInt(100 * (i + 1)), s)));
  await r.client.registerWorker({ workerId: 2n });
}

describe("prompts hashed as they are decoded (gRPC) and by the router (Connect)", () => {
  it("give the same overlaps for every LoRA / namespace seed, and other seeds miss", async () => {
    await withRouter(startTestRouter({ blockSize: B }, { httpPort: 0 }), async (r) => {
      await storeSeeds(r);
      const base = `http://127.0.0.1:${r.server.httpPort}`;
      for (const [i, seed] of SEEDS.entries()) {
        for (const [j, asked] of SEEDS.entries()) {
          const want = i === j ? 3 : 0;
          const at = `prompt stored under ${JSON.stringify(seed)}, asked under ${JSON.stringify(asked)}`;
          const viaGrpc = await r.client.findBestWorker({ tokenIds: promptOf(i), explain: true, ...asked });
          const overlap = viaGrpc.scores.find((s) => s.worker!.workerId === 1n)!.overlapBlocks;
          assert.equal(overlap, want, `gRPC: ${at}`);
          assert.equal(viaGrpc.promptBlocks, 3, `gRPC prompt blocks: ${at}`);
          const res = await fetch(`${base}/kvrouter.v1.KvRouterService/FindBestWorker`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ tokenIds: promptOf(i), explain: true, ...asked }),
          });
          assert.equal(res.status, 200);
          const viaConnect = (await res.json()) as { promptBlocks: number; scores: { worker: { workerId: string }; overlapBlocks?: number }[] };
          assert.equal(viaConnect.scores.find((s) => s.worker.workerId === "1")!.overlapBlocks ?? 0, want, `Connect: ${at}`);
          assert.equal(viaConnect.promptBlocks, 3, `Connect prompt blocks: ${at}`);
        }
      }
    });
  });

  it("requests held in the admission queue keep their own hashes while later ones are decoded", async () => {
    // Worker 1's step budget is 4 tokens: one routed prompt makes it busy, and the rest queue.
    const router = startTestRouter({ blockSize: B }, { admission: { queuePolicy: "fcfs", maxQueued: 64, thresholds: { routerQueueThreshold: 1 } } });
    await withRouter(router, async (r) => {
      await r.client.registerWorker({ workerId: 1n, maxNumBatchedTokens: 4n });
      await r.client.sendEvents(SEEDS.map((s, i) => stored(1, i + 1, promptOf(i), B, BigInt(100 * (i + 1)), s)));
      await r.client.findBestWorker({ tokenIds: tokens(8, 50_000), requestId: "first" });
      // Queued in turn: each seed's own prompt (3 blocks cached) and a long prompt nothing caches, alternating.
      const answers: Promise<{ id: string; overlap: number; blocks: number }>[] = [];
      const expected: Record<string, [number, number]> = {};
      for (let k = 0; k < 8; k++) {
        const i = k % SEEDS.length;
        const id = `q${k}`;
        const depth = r.server.admission.depth;
        const own = k % 2 === 0;
        const tokenIds = own ? promptOf(i) : tokens(40 * B + 3, 7_000 + 500 * k);
        expected[id] = own ? [3, 3] : [0, 40];
        answers.push(r.client.findBestWorker({ tokenIds, requestId: id, ...SEEDS[i] }).then((res) => ({ id, overlap: res.overlapBlocks, blocks: res.promptBlocks })));
        await waitFor(() => r.server.admission.depth === depth + 1, `${id} queued`);
      }
      let last = "first";
      for (let k = 0; k < 8; k++) {
        await r.client.markPrefillCompleted(last);
        last = `q${k}`;
      }
      for (const a of await Promise.all(answers)) assert.deepEqual([a.overlap, a.blocks], expected[a.id], a.id);
    });
  });

  it("a prompt past --max-tokens is refused as before (the hashing decoder hands it to protobuf-es)", async () => {
    await withRouter(startTestRouter({ blockSize: B }, { maxTokens: 10 }), async (r) => {
      await r.client.registerWorker({ workerId: 1n });
      // 60 tokens of 3-byte varints: more bytes than the decoder's space (5 ids per accepted token) holds.
      await assert.rejects(r.client.findBestWorker({ tokenIds: tokens(60, 100_000) }), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
        assert.match(err.details, /token_ids has 60 tokens; the limit is 10 \(--max-tokens\)/);
        return true;
      });
      // 11 one-byte tokens fit the space: hashed, then refused by the same check.
      await assert.rejects(r.client.findBestWorker({ tokenIds: tokens(11, 1) }), /token_ids has 11 tokens; the limit is 10/);
      const ok = await r.client.findBestWorker({ tokenIds: tokens(10, 1) });
      assert.equal(ok.promptBlocks, 2);
    });
  });
});
