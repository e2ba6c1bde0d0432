// CompactIndex.openEngineFeed (vLLM/SGLang payloads decoded on the shard that owns the worker):
// the feed hands each applied payload's new last event id to the caller (setLastEventId) before it
// stops carrying the (worker, dp_rank), so a payload submitted in the very next microtask is numbered
// on from it. Until that hand-back existed the caller stored the id in its own result handler, a
// microtask too late: a submit between the two gave the shard a stale id, and the payload's events were
// refused as stale (then parent_block_not_found for the rest of the chain). The payloads are the bytes
// vLLM's ZmqEventPublisher sends (a msgpack [ts, events, dp_rank] batch of positional BlockStored events).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encode } from "@msgpack/msgpack";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import type { EngineFeedApplied, EngineFeedMessage } from "../src/indexer/types.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";

const BLOCK = 16;
const EVENTS = 2;
const BLOCKS = 2;

/** One worker's chain of payloads: each event's parent is the previous event's last block. */
function payloads(worker: number, n: number): Uint8Array[] {
  let hash = BigInt(worker) << 40n;
  let parent: bigint | null = null;
  let token = worker * 1000;
  return Array.from({ length: n }, () => {
    const events = Array.from({ length: EVENTS }, () => {
      const hashes = Array.from({ length: BLOCKS }, () => ++hash);
      const tokens = Array.from({ length: BLOCKS * BLOCK }, () => token++ % 150_000);
      const e = ["BlockStored", hashes, parent, tokens, BLOCK, null, "GPU", null];
      parent = hashes[hashes.length - 1];
      return e;
    });
    return encode([0, events, 0], { useBigInt64: true });
  });
}

describe("engine feeds on the shards: event ids", () => {
  it("numbers every payload on from the last applied one, with submissions in the microtask after a result", async () => {
    const index = await CompactIndex.create({ shards: 2, feedBlockSize: BLOCK });
    try {
      const workers = 6;
      const perWorker = 120;
      await Promise.all(
        Array.from({ length: workers }, async (_, w) => {
          const workerId = BigInt(w + 1);
          const all = payloads(w + 1, perWorker);
          // Event 1, applied the main thread's way, gives the worker a slot the feed may name.
          index.applyBatch(toEventBatch([{ kind: "stored", workerId, dpRank: 0, eventId: 1n, blocks: [{ externalHash: 1n, localHash: 1n }] }]));
          let last = 1n;
          const feed = index.openEngineFeed()!;
          assert.ok(feed, "a feed");
          const message: EngineFeedMessage = {
            engine: "vllm",
            workerId,
            defaultRank: 0,
            ranks: [0],
            lastEventId: () => last,
            setLastEventId: (_, id) => (last = id),
          };
          const results: (EngineFeedApplied | "refused")[] = [];
          const inFlight: Promise<unknown>[] = [];
          let i = 0;
          for (const p of all) {
            // At most 8 in flight; the next submit runs in the microtask after the oldest result.
            if (inFlight.length >= 8) await inFlight.shift();
            const submitted = feed.submit(message, p);
            assert.ok(submitted !== undefined, `payload ${i} of worker ${w + 1} queued`);
            inFlight.push(submitted.then((r) => results.push(r)));
            i++;
          }
          await Promise.all(inFlight);
          feed.close();
          for (const [k, r] of results.entries()) {
            assert.notEqual(r, "refused", `worker ${w + 1} payload ${k}`);
            const rejected = (r as EngineFeedApplied).results.filter((x) => x.outcome !== "applied");
            assert.deepEqual(rejected.map((x) => x.outcome), [], `worker ${w + 1} payload ${k}`);
          }
          assert.equal(last, BigInt(1 + perWorker * EVENTS), `worker ${w + 1}'s last event id`);
        }),
      );
      for (let w = 1; w <= workers; w++) assert.equal(index.lastEventIds().get(`${w}:0`), BigInt(1 + perWorker * EVENTS));
    } finally {
      await index.close();
    }
  });
});
