// find_matches on an index with shard threads, answered by reading the
// shards' shared memory (issue 21 §1) against asking the shard threads (the
// path before, kept as `sharedReads: false`), in the same run: idle, and
// while the shards apply a queued ingest stream paced at 90% of what they
// apply with no queries (measured first, in the same run). Queries are
// 8,192-token prompts with their sequence hashes given; the busy stream is
// single-block stores from workload.ts's steady generator.
import { availableParallelism } from "node:os";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { hashPromptWords } from "../src/hashing/prompt.js";
import { BLOCK, type Workload, steadyEvents } from "./workload.js";
import { type Latency, latency, median, usSince } from "./stats.js";

/** Batches kept queued while measuring capacity, events per batch, batches made, and the busy rate's share of capacity. */
const WINDOW = 8;
const BATCH = 256;
const BATCHES = 1200;
const BUSY_SHARE = 0.9;

export interface SharedReadFigures {
  idle: Latency;
  busy: Latency;
  capacity: number;
  busyBlocksPerSec: number;
  read: number;
  asked: number;
}

async function measure(w: Workload, entries: number, prompts: Uint32Array[], shards: number, sharedReads: boolean, seed: number): Promise<SharedReadFigures> {
  const index = await CompactIndex.create({ shards, initialEntries: entries * 2, sharedReads });
  try {
    for (let i = 0; i < w.events.length; i += 16) index.applyBatch(toEventBatch(w.events.slice(i, i + 16)));
    const query = (words: Uint32Array) => index.findMatchesWords(words, words.length >>> 1);
    for (const p of prompts.slice(0, 200)) query(p); // warm-up
    const timed = (): number[] => {
      const samples: number[] = [];
      for (const p of prompts) {
        const t = process.hrtime.bigint();
        query(p);
        samples.push(usSince(t));
      }
      return samples;
    };
    const idle = timed();
    // Capacity: the batches queued WINDOW at a time, nothing else running. Then busy: the same stream paced at
    // BUSY_SHARE of that, a query every time one is due (as a fleet's queries come), each timed.
    const stream = steadyEvents(seed, 1n << 40n);
    const batches = Array.from({ length: BATCHES }, () => {
      const events: IndexEvent[] = [];
      for (let i = 0; i < BATCH; i++) events.push(stream.next().value as IndexEvent);
      return toEventBatch(events);
    });
    let next = 0;
    const t0 = performance.now();
    const queued: Promise<unknown>[] = [];
    for (; next < BATCHES / 2; next++) {
      queued.push(index.applyBatchAsync(batches[next]));
      if (queued.length >= WINDOW) await queued.shift();
    }
    await Promise.all(queued.splice(0));
    const capacity = ((BATCHES / 2) * BATCH) / ((performance.now() - t0) / 1000);
    const rate = capacity * BUSY_SHARE;
    const busy: number[] = [];
    const start = performance.now();
    let sent = 0;
    let q = 0;
    while (q < prompts.length && next < BATCHES) {
      const due = Math.floor((((performance.now() - start) / 1000) * rate) / BATCH) - sent;
      for (let i = 0; i < due && next < BATCHES; i++, sent++) queued.push(index.applyBatchAsync(batches[next++]));
      const t = process.hrtime.bigint();
      query(prompts[q++]);
      busy.push(usSince(t));
      await new Promise((resolve) => setImmediate(resolve)); // results land
    }
    const busySecs = (performance.now() - start) / 1000;
    await Promise.all(queued);
    const applied = sent * BATCH;
    return { idle: latency(idle), busy: latency(busy), capacity, busyBlocksPerSec: applied / busySecs, ...index.queryAnswers() };
  } finally {
    await index.close();
  }
}

/** Per shard count: each mode's rounds ("asked", "read"), alternating which goes first. */
export async function runSharedReadsBench(w: Workload, entries: number, queries: number, rounds: number, shardCounts = [1, 2]) {
  const prompts = w.prompts(8192, queries).map((p) => hashPromptWords(p, BLOCK).words);
  const out: Record<string, { asked: SharedReadFigures[]; read: SharedReadFigures[]; summary: Record<string, number> }> = {};
  for (const shards of shardCounts) {
    const rows = { asked: [] as SharedReadFigures[], read: [] as SharedReadFigures[] };
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? (["asked", "read"] as const) : (["read", "asked"] as const);
      for (const mode of order) rows[mode].push(await measure(w, entries, prompts, shards, mode === "read", 7 + r));
    }
    const med = (mode: "asked" | "read", pick: (x: SharedReadFigures) => number) => median(rows[mode].map(pick));
    const summary: Record<string, number> = {};
    for (const mode of ["asked", "read"] as const) {
      summary[`${mode}IdleP50`] = med(mode, (x) => x.idle.p50);
      summary[`${mode}IdleP99`] = med(mode, (x) => x.idle.p99);
      summary[`${mode}BusyP50`] = med(mode, (x) => x.busy.p50);
      summary[`${mode}BusyP99`] = med(mode, (x) => x.busy.p99);
      summary[`${mode}BusyP99VsIdle`] = summary[`${mode}BusyP99`] / summary[`${mode}IdleP99`];
    }
    out[`${shards} shard thread${shards === 1 ? "" : "s"}`] = { ...rows, summary };
  }
  return { cores: availableParallelism(), entries, queries, rounds, byShards: out };
}
