// Queries that read the shards' memory while the shards write it
// (src/indexer/sharedNodes.ts, sharedReader.ts). Shard threads apply queued
// batches in parallel with this thread, which queries without waiting: the
// answer for workers no batch touches must be exact every time, however the
// nodes they share with churning workers change container, move to new
// buffers, or leave and re-enter the node table meanwhile.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { sequenceHash } from "../src/hashing/blockHash.js";
import { seededRandom } from "../src/util/random.js";

const PROMPT = 48;
const locals = Array.from({ length: PROMPT }, (_, i) => (BigInt(i + 7) * 0x9e3779b97f4a7c15n) % (1n << 64n));
const prompt: bigint[] = [];
{
  let parent: bigint | undefined;
  for (const l of locals) prompt.push((parent = sequenceHash(parent, l)));
}

/** A stored chain of the prompt's first `depth` blocks (external hashes from `ext`). */
function storePrefix(workerId: bigint, eventId: bigint, depth: number, ext: bigint): IndexEvent {
  return {
    kind: "stored",
    workerId,
    dpRank: 0,
    eventId,
    blocks: locals.slice(0, depth).map((localHash, i) => ({ externalHash: ext + BigInt(i), localHash })),
  };
}

async function churnWhileReading(shards: number, seed: number): Promise<{ queries: number; read: number; asked: number }> {
  const rnd = seededRandom(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  // Tiny initial arrays: node arrays, the node table and the holder pool are replaced again and again while queries run.
  const index = await CompactIndex.create({ shards, initialEntries: 64 });
  try {
    // Slots are given in order of first sight. 1,000 workers first (slots 0-999), each with a block of its own;
    // every 40th of them churns on the prompt, so the prompt's nodes hold a few dozen sparse slots: LIST sets
    // that grow and shrink in place, become RANGE sets and back. The stable workers come last (slots 1000+),
    // at the end of those lists, where an insert shifts them; one more (slot 0) keeps LOW sets in play.
    const stable = new Map<bigint, number>();
    const first: IndexEvent[] = [];
    const all = Array.from({ length: 1000 }, (_, i) => BigInt(1000 + i));
    for (const w of all) first.push({ kind: "stored", workerId: w, dpRank: 0, eventId: 1n, blocks: [{ externalHash: w, localHash: w }] });
    const churn = all.filter((_, i) => i % 40 === 0 && i > 0);
    // The prompt's nodes are made one block at a time between other nodes, so node numbers along the prompt are
    // not consecutive and every step of the walk probes the node table (while clears free nodes and shift buckets).
    const builder = 5n;
    stable.set(builder, PROMPT);
    for (let i = 0; i < PROMPT; i++) {
      const ext = BigInt(builder) * 1_000_000n + BigInt(i);
      first.push({ kind: "stored", workerId: builder, dpRank: 0, eventId: BigInt(i + 1), parentHash: i === 0 ? undefined : ext - 1n, blocks: [{ externalHash: ext, localHash: locals[i] }] });
      const idle = all[1 + 40 * (i % 20) + 7];
      first.push({ kind: "stored", workerId: idle, dpRank: 0, eventId: BigInt(2 + i), blocks: [{ externalHash: 1n << 50n | BigInt(i), localHash: 1n << 50n | BigInt(i) }] });
    }
    stable.set(1000n, 30);
    first.push(storePrefix(1000n, 2n, 30, 1_000_000n));
    for (let i = 0; i < 3; i++) {
      const w = BigInt(2 + i);
      const depth = [1, 17, 40][i];
      stable.set(w, depth);
      first.push(storePrefix(w, 1n, depth, BigInt(w) * 1_000_000n));
    }
    await index.applyBatchAsync(toEventBatch(first));

    const next = new Map<bigint, bigint>(churn.map((w) => [w, 2n]));
    let fresh = 1n << 40n;
    const churnBatch = (): IndexEvent[] =>
      Array.from({ length: 16 }, (): IndexEvent => {
        const w = churn[int(churn.length)];
        const eventId = next.get(w)!;
        next.set(w, eventId + 1n);
        const r = int(10);
        // Clear and store again: the prompt's nodes lose and regain holders (and empty nodes leave the table).
        if (r < 4) return { kind: "cleared", workerId: w, dpRank: 0, eventId };
        if (r < 8) return storePrefix(w, eventId, 1 + int(PROMPT), (fresh += 1000n));
        // Blocks of no prompt: new nodes, so the arrays and the table keep growing.
        return {
          kind: "stored",
          workerId: w,
          dpRank: 0,
          eventId,
          blocks: Array.from({ length: 20 }, () => ({ externalHash: ++fresh, localHash: fresh * 0x2545f4914f6cdd1dn % (1n << 64n) })),
        };
      });

    let queries = 0;
    for (let round = 0; round < 6; round++) {
      const queued: Promise<unknown>[] = [];
      for (let b = 0; b < 150; b++) queued.push(index.applyBatchAsync(toEventBatch(churnBatch())));
      // Query while the shards apply what was just queued (this thread does not yield in between).
      for (let q = 0; q < 1500; q++) {
        const got = index.findMatches(prompt);
        queries++;
        for (const [w, depth] of stable) assert.equal(got.get(`${w}:0`), depth, `round ${round}, query ${q}: stable worker ${w}`);
        for (const [key, depth] of got) {
          assert.ok(depth >= 1 && depth <= PROMPT, `${key} matched ${depth}`);
          assert.ok(stable.has(BigInt(key.split(":")[0])) || churn.includes(BigInt(key.split(":")[0])), `worker ${key} holds no prompt block`);
        }
      }
      await Promise.all(queued);
    }
    return { queries, ...index.queryAnswers() };
  } finally {
    await index.close();
  }
}

describe("queries read shard memory while shards apply", { skip: process.arch !== "x64" && "shared reads are on for x86-64 only" }, () => {
  for (const shards of [1, 2]) {
    test(`${shards} shard${shards === 1 ? "" : "s"}: workers no batch touches match exactly on every query`, async () => {
      const { queries, read, asked } = await churnWhileReading(shards, 11 + shards);
      // Every shard answers each query, read or asked; most are read.
      assert.equal(read + asked, queries * shards);
      assert.ok(read > asked, `read ${read}, asked ${asked}`);
    });
  }
});
