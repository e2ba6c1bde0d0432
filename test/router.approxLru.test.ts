// Approximate mode's lru retention (--router-approximate-cache-policy lru, Dynamo's
// capacity-bounded model of lib/kv-router/src/indexer) over real gRPC: a rank of
// known size (RegisterWorker total_kv_blocks) keeps what fits, never evicts the
// blocks of an active request, evicts the least recently released first (deepest
// block first), and a rank of unknown size keeps Dynamo's TTL.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type TestRouter, tokens, withTestRouter } from "./support/router.js";

const B = 4;
const P1 = tokens(16, 0); // 4 blocks each
const P2 = tokens(16, 1000);
const P3 = tokens(8, 2000); // 2 blocks

async function cached(r: TestRouter, workerId: bigint): Promise<number> {
  return Number((await r.client.listWorkers()).workers.find((w) => w.worker!.workerId === workerId)?.cachedBlocks ?? 0);
}

const route = (r: TestRouter, tokenIds: number[], requestId: string, workerId = 1n) =>
  r.client.findBestWorker({ tokenIds, requestId, allowedWorkers: [{ workerId }] });

describe("approximate mode, lru retention", () => {
  it("holds what fits the rank, leases active requests' blocks, evicts the least recently released deepest-first", async () => {
    await withTestRouter({ blockSize: B, useKvEvents: false, approxCachePolicy: "lru" }, async (r) => {
      await r.client.registerWorker({ workerId: 1n, totalKvBlocks: 4n });
      await route(r, P1, "a");
      await route(r, P2, "b");
      assert.equal(await cached(r, 1n), 8, "over capacity, but every block is leased by an active request");
      await r.client.free("a");
      assert.equal(await cached(r, 1n), 4, "P1 released: evicted down to the capacity");
      await r.client.free("b");
      assert.equal(await cached(r, 1n), 4, "P2 released: it fits, it stays");
      await route(r, P3, "c");
      assert.equal(await cached(r, 1n), 4, "P3's 2 blocks push out P2's 2 deepest");
      const d = await r.client.findBestWorker({ tokenIds: P2, allowedWorkers: [{ workerId: 1n }] });
      assert.equal(d.overlapBlocks, 2, "P2's prefix survives, its tail went first");
    });
  });

  it("a rank that reports no size keeps the TTL; ttl policy never evicts on Free", async () => {
    await withTestRouter({ blockSize: B, useKvEvents: false, approxCachePolicy: "lru" }, async (r) => {
      await r.client.registerWorker({ workerId: 2n });
      await route(r, P1, "a", 2n);
      await route(r, P2, "b", 2n);
      await r.client.free("a");
      assert.equal(await cached(r, 2n), 8);
    });
    await withTestRouter({ blockSize: B, useKvEvents: false }, async (r) => {
      await r.client.registerWorker({ workerId: 1n, totalKvBlocks: 4n });
      await route(r, P1, "a");
      await route(r, P2, "b");
      await r.client.free("a");
      assert.equal(await cached(r, 1n), 8, "ttl (the default) keeps blocks for --router-ttl-secs, whatever the size");
    });
  });
});
