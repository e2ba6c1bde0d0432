// Worker membership (leases), approximate mode, and graceful behaviour.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import type { RouterConfig } from "../src/router/types.js";
import { type TestRouter, tokens, withTestRouter } from "./support/router.js";
import { stored } from "./support/events.js";
import { waitFor } from "./support/wait.js";

const B = 4;

function withRouter(config: Partial<RouterConfig>, body: (r: TestRouter) => Promise<void>) {
  return withTestRouter({ blockSize: B, ...config }, body);
}

const workerIds = async (r: TestRouter) =>
  (await r.client.listWorkers()).workers.map((w) => `${w.worker!.workerId}:${w.worker!.dpRank}`).sort();

describe("worker leases", () => {
  it("registers dp ranks, lists them, and removes a worker whose lease expires", async () => {
    await withRouter({}, async (r) => {
      const res = await r.client.registerWorker({ workerId: 1n, dpRanks: [0, 1], leaseTtlSeconds: 1 });
      assert.equal(res.leaseTtlSeconds, 1);
      await r.client.registerWorker({ workerId: 2n, leaseTtlSeconds: 60 });
      await r.client.sendEvents([stored(1, 1, tokens(16, 0), B, 100n)]);
      assert.deepEqual(await workerIds(r), ["1:0", "1:1", "2:0"]);
      const listed = (await r.client.listWorkers()).workers.find((w) => w.worker!.workerId === 1n)!;
      assert.equal(listed.registered, true);
      assert.ok(listed.leaseRemainingMs > 0n && listed.leaseRemainingMs <= 1000n);
      assert.equal((await r.client.findBestWorker({ tokenIds: tokens(16, 0) })).worker!.workerId, 1n);

      await waitFor(async () => (await workerIds(r)).join() === "2:0", "worker 1's lease to expire");
      const d = await r.client.findBestWorker({ tokenIds: tokens(16, 0), explain: true });
      assert.equal(d.worker!.workerId, 2n);
      assert.equal(d.overlapBlocks, 0, "the expired worker's blocks are gone");
    });
  });

  it("KeepAlive renews a lease; re-registering renews it too", async () => {
    await withRouter({}, async (r) => {
      await r.client.registerWorker({ workerId: 1n, leaseTtlSeconds: 1 });
      await r.client.registerWorker({ workerId: 2n, leaseTtlSeconds: 1 });
      const until = Date.now() + 1600;
      while (Date.now() < until) {
        await r.client.keepAlive(1n);
        await r.client.registerWorker({ workerId: 2n, leaseTtlSeconds: 1 });
        await new Promise((res) => setTimeout(res, 200));
      }
      assert.deepEqual(await workerIds(r), ["1:0", "2:0"]);
    });
  });

  it("knows workers first seen through their events, and deregisters them with their blocks", async () => {
    await withRouter({}, async (r) => {
      await r.client.sendEvents([stored(7, 1, tokens(16, 0), B, 100n)]);
      const [w] = (await r.client.listWorkers()).workers;
      assert.equal(w.registered, false);
      assert.equal(w.cachedBlocks, 4n);
      assert.equal((await r.client.deregisterWorker(7n)).removedBlocks, 4n);
      assert.deepEqual(await workerIds(r), []);
      await assert.rejects(r.client.deregisterWorker(7n), (e: { code: number; details: string }) => {
        assert.equal(e.code, status.NOT_FOUND);
        assert.match(e.details, /worker 7 is not known/);
        return true;
      });
    });
  });

  // The router caches its candidate list between queries: every way the
  // worker set changes must show in the very next FindBestWorker.
  it("routes to exactly the current worker set after each change, query after query", async () => {
    await withRouter({}, async (r) => {
      const routable = async (workerId: bigint) => {
        try {
          const d = await r.client.findBestWorker({ tokenIds: tokens(16, 0), allowedWorkers: [{ workerId, dpRank: 0 }] });
          return d.worker!.workerId === workerId;
        } catch (e) {
          assert.equal((e as { code: number }).code, status.INVALID_ARGUMENT);
          return false;
        }
      };
      await r.client.registerWorker({ workerId: 1n, leaseTtlSeconds: 1 });
      assert.equal(await routable(1n), true);
      assert.equal(await routable(2n), false);
      await r.client.sendEvents([stored(2, 1, tokens(16, 0), B, 100n)]); // first seen through its events
      assert.equal(await routable(2n), true);
      await r.client.deregisterWorker(2n);
      assert.equal(await routable(2n), false);
      await r.client.registerWorker({ workerId: 3n, dpRanks: [1] });
      assert.equal(await routable(3n), false, "only dp rank 1 is registered");
      await r.client.registerWorker({ workerId: 3n, dpRanks: [0, 1] }); // re-registered with more ranks
      assert.equal(await routable(3n), true);
      await waitFor(async () => !(await routable(1n)), "worker 1's lease to expire");
      assert.equal(await routable(3n), true);
    });
  });

  it("drops the load of requests routed to a worker that leaves", async () => {
    await withRouter({}, async (r) => {
      await r.client.registerWorker({ workerId: 1n });
      await r.client.findBestWorker({ tokenIds: tokens(16, 0), requestId: "a" });
      await r.client.deregisterWorker(1n);
      assert.equal((await r.client.free("a")).found, false);
    });
  });
});

describe("approximate mode (--no-kv-events)", () => {
  it("assumes a routed prompt is cached on its worker until the TTL passes", async () => {
    await withRouter({ useKvEvents: false, approxTtlMs: 400 }, async (r) => {
      await r.client.registerWorker({ workerId: 1n });
      await r.client.registerWorker({ workerId: 2n });
      const prompt = tokens(20, 0);
      const first = await r.client.findBestWorker({ tokenIds: prompt });
      assert.equal(first.overlapBlocks, 0);
      const again = await r.client.findBestWorker({ tokenIds: prompt, explain: true });
      assert.equal(again.worker!.workerId, first.worker!.workerId);
      assert.equal(again.overlapBlocks, 5);
      // A prompt sharing 2 blocks matches those 2.
      const partial = await r.client.findBestWorker({ tokenIds: [...tokens(8, 0), ...tokens(8, 999)], explain: true });
      assert.equal(partial.scores.find((s) => s.worker!.workerId === first.worker!.workerId)!.overlapBlocks, 2);

      await waitFor(
        async () => (await r.client.listWorkers()).workers.every((w) => w.cachedBlocks === 0n),
        "routed blocks to expire",
      );
      const later = await r.client.findBestWorker({ tokenIds: prompt, explain: true });
      assert.ok(later.scores.every((s) => s.overlapBlocks === 0));
    });
  });

  it("prunes to 80% of --router-max-tree-size, earliest expiry first", async () => {
    await withRouter({ useKvEvents: false, approxMaxBlocks: 10 }, async (r) => {
      await r.client.registerWorker({ workerId: 1n });
      for (let i = 0; i < 6; i++) {
        await r.client.findBestWorker({ tokenIds: tokens(8, i * 100) }); // 2 blocks each
        await new Promise((res) => setTimeout(res, 5));
      }
      const [w] = (await r.client.listWorkers()).workers;
      assert.ok(w.cachedBlocks <= 10n, `cached ${w.cachedBlocks}`);
      const newest = await r.client.findBestWorker({ tokenIds: tokens(8, 500), explain: true });
      assert.equal(newest.overlapBlocks, 2, "the newest prompt survives pruning");
      const oldest = await r.client.findBestWorker({ tokenIds: tokens(8, 0), explain: true });
      assert.equal(oldest.overlapBlocks, 0, "the oldest prompt was pruned");
    });
  });
});
