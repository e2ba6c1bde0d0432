// `node --import tsx bench/sharedReads.run.ts [entries] [queries] [rounds]`:
// find_matches on an index with shard threads, answered by reading the
// shards' shared memory (issue 21 §1) against asking the shard threads (the
// path before, kept as `sharedReads: false`), in the same run: idle, and
// while the shards apply a queued ingest stream paced at 90% of what they
// apply with no queries (measured first, in the same run). The
// index is the Mooncake one of the index bench (64 workers, block 64); the
// queries are 8,192-token prompts with their sequence hashes given; the busy
// stream is single-block stores from bench/workload.ts's steady generator.
import { availableParallelism, cpus } from "node:os";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { hashPromptWords } from "../src/hashing/prompt.js";
import { BLOCK, mooncake, steadyEvents } from "./workload.js";
import { type Latency, latency, median, usSince } from "./stats.js";

const entries = Number(process.argv[2] ?? 500_000);
const queries = Number(process.argv[3] ?? 2000);
const rounds = Number(process.argv[4] ?? 3);
/** Batches kept queued while measuring capacity, events per batch, batches made, and the busy rate's share of capacity. */
const WINDOW = 8;
const BATCH = 256;
const BATCHES = 1200;
const BUSY_SHARE = 0.9;

console.log(`${availableParallelism()} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}, ${process.arch}; Mooncake index of ${entries} entries, ${queries} prompts of 8,192 tokens, ${rounds} rounds`);
const w = mooncake(entries);
const prompts = w.prompts(8192, queries).map((p) => hashPromptWords(p, BLOCK).words);

interface Figures {
  idle: Latency;
  busy: Latency;
  capacity: number;
  busyBlocksPerSec: number;
  read: number;
  asked: number;
}

async function measure(shards: number, sharedReads: boolean, seed: number): Promise<Figures> {
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
    const stats = index.stats();
    return { idle: latency(idle), busy: latency(busy), capacity, busyBlocksPerSec: applied / busySecs, read: stats.findsRead, asked: stats.findsAsked };
  } finally {
    await index.close();
  }
}

const f = (x: number, d = 1) => x.toFixed(d).padStart(7);
for (const shards of [1, 2]) {
  const rows: Record<string, Figures[]> = { asked: [], read: [] };
  for (let r = 0; r < rounds; r++) {
    // Alternate which goes first, so drift on a shared machine does not favour one.
    const order = r % 2 === 0 ? (["asked", "read"] as const) : (["read", "asked"] as const);
    for (const mode of order) rows[mode].push(await measure(shards, mode === "read", 7 + r));
  }
  const med = (mode: string, pick: (x: Figures) => number) => median(rows[mode].map(pick));
  console.log(`\n${shards} shard thread${shards === 1 ? "" : "s"} (${availableParallelism()} cores), medians of ${rounds} rounds; us`);
  console.log(`${"".padEnd(26)} ${"idle p50".padStart(8)} ${"idle p99".padStart(8)} ${"busy p50".padStart(8)} ${"busy p99".padStart(8)}  capacity / busy ingest blocks/s  answers read / asked`);
  for (const mode of ["asked", "read"]) {
    console.log(
      `${(mode === "read" ? "read shared memory" : "ask the shard (before)").padEnd(26)} ${f(med(mode, (x) => x.idle.p50))}  ${f(med(mode, (x) => x.idle.p99))}  ${f(med(mode, (x) => x.busy.p50))}  ${f(med(mode, (x) => x.busy.p99))}  ${f(med(mode, (x) => x.capacity), 0)} / ${f(med(mode, (x) => x.busyBlocksPerSec), 0)}  ${rows[mode].reduce((n, x) => n + x.read, 0)} / ${rows[mode].reduce((n, x) => n + x.asked, 0)}`,
    );
  }
  const ratio = (pick: (x: Figures) => number) => (med("read", pick) / med("asked", pick)).toFixed(2);
  console.log(`read / asked: idle p50 ${ratio((x) => x.idle.p50)}x, p99 ${ratio((x) => x.idle.p99)}x; busy p50 ${ratio((x) => x.busy.p50)}x, p99 ${ratio((x) => x.busy.p99)}x; busy p99 / idle p99: asked ${(med("asked", (x) => x.busy.p99) / med("asked", (x) => x.idle.p99)).toFixed(2)}x, read ${(med("read", (x) => x.busy.p99) / med("read", (x) => x.idle.p99)).toFixed(2)}x`);
}
