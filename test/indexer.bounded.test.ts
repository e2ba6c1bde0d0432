// An index sized by --max-blocks keeps its memory near the bound once full:
// every batch that stores more than it removes takes the entries past the
// bound until eviction runs after it, and the entry arrays and table used to
// grow by half each time that passed their capacity (79 array bytes per entry
// held at a full 250,000-entry bound, against 55 when just filled). Bounded
// cores now grow by an eighth there. In this thread and on 2 shard threads.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";

const BOUND = 20_000;

/** Batches of 8 workers storing fresh 64-block chains: each batch stores 512 entries and removes none. */
function batch(round: number): IndexEvent[] {
  return Array.from({ length: 8 }, (_, w) => ({
    kind: "stored" as const,
    workerId: BigInt(w + 1),
    dpRank: 0,
    eventId: BigInt(round + 1),
    blocks: Array.from({ length: 64 }, (_, b) => {
      const h = BigInt(round) * 100_000n + BigInt(w) * 1_000n + BigInt(b) + 1n;
      return { externalHash: h, localHash: h * 7n };
    }),
  }));
}

for (const shards of [0, 2]) {
  describe(`a full --max-blocks index (${shards === 0 ? "in this thread" : `${shards} shard threads`})`, () => {
    it("holds its bound through 10 bounds' worth of stores, and its arrays grow by a batch's overshoot, not by half", async () => {
      const index = await CompactIndex.create({ shards, maxBlocks: BOUND });
      try {
        // What the index was sized to when made (entry arrays and table for the bound).
        const sized = index.stats().arrayBytes;
        let round = 0;
        for (let i = 0; i < (11 * BOUND) / 512; i++) index.applyBatch(toEventBatch(batch(round++)));
        const after = index.stats();
        assert.equal(after.entries, BOUND);
        assert.ok(after.evictions >= 9 * BOUND, `evicted ${after.evictions}`);
        // Growing by half past the bound left 1.30x the sized bytes here; by an eighth, 1.18x (node arrays, sized at
        // half the bound, grow in both: every block here is a node of its own).
        assert.ok(after.arrayBytes < sized * 1.24, `array bytes ${sized} as sized, ${after.arrayBytes} after churn`);
      } finally {
        await index.close();
      }
    });
  });
}
