// Index benchmarks, all in one run so every figure has its baseline next to
// it: event ingest, find_matches latency (hashing included), ingest with
// concurrent queries, query wait behind a steady background ingest, and
// memory per (block, worker) entry. Implementations compared: the compact
// index in the main thread, the compact index on shard threads, the naive
// Map<string, Set> baseline, and PrefixIndex (the reference model).
import { availableParallelism } from "node:os";
import { hashPrompt } from "../src/hashing/blockHash.js";
import { hashPromptFast, hashPromptJs, hashPromptSequence, hashPromptWords } from "../src/hashing/prompt.js";
import { runQueryComparison } from "./query.bench.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { PrefixIndex } from "../src/indexer/prefixIndex.js";
import type { Overlaps } from "../src/indexer/types.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { NaiveIndex } from "./naiveIndex.js";
import { hashPromptLoopSimd, hashSequenceLoopSimd } from "./wasmXxh3Loop.js";
import { hashPromptScalarWasm } from "./wasmXxh3Scalar.js";
import { type Latency, gc, gcAndSettle, latency, median, usSince } from "./stats.js";
import { BLOCK, type Workload, steadyEvents } from "./workload.js";
import { type EventBatch, toEventBatch } from "../src/protocols/eventBatch.js";

export interface IndexBenchConfig {
  repeats: number;
  queries: number;
  /** Shard threads for the sharded variant. */
  shards: number;
  steadyMs: number;
  steadyEventsPerSec: number;
}

interface Impl {
  name: string;
  /** Applies events in one call (one round trip for shards), as a batching event source would. */
  applyNow(events: IndexEvent[]): void;
  /**
   * Hashes a prompt and finds its overlaps: as routing does for compact ones
   * (WebAssembly XXH3, sequence hashes as u32 words, findMatchesWords), the
   * native hasher per block and bigint keys for the others.
   */
  query(tokens: Uint32Array): Overlaps;
  applyAll(events: readonly IndexEvent[]): void;
  close(): Promise<void>;
}

/** Events handed over per call, as an event source would deliver them. */
const BATCH = 16;

const nativeHash = (t: Uint32Array) => hashPrompt(t, BLOCK).sequence;

/** Compact variants run as with --max-blocks set to the workload's size: sized up front, no eviction. */
async function makeImpl(kind: string, shards: number, entries: number): Promise<Impl> {
  if (kind === "naive") {
    const n = new NaiveIndex();
    return { name: kind, query: (t) => n.findMatches(nativeHash(t)), applyNow: (es) => es.forEach((e) => n.apply(e)), applyAll: (es) => es.forEach((e) => n.apply(e)), close: async () => {} };
  }
  if (kind === "reference") {
    const p = new PrefixIndex();
    return { name: kind, query: (t) => p.findMatches(nativeHash(t)), applyNow: (es) => es.forEach((e) => p.apply(e)), applyAll: (es) => es.forEach((e) => p.apply(e)), close: async () => {} };
  }
  const c = await CompactIndex.create({
    shards: kind === "compact" || kind === "compact-grown" ? 0 : shards,
    ...(kind === "compact-grown" ? {} : { maxBlocks: entries }),
  });
  return {
    name: kind,
    query: (t) => {
      const s = hashPromptWords(t, BLOCK);
      return c.findMatchesWords(s.words, s.length);
    },
    applyNow: (es) => c.applyBatch(toEventBatch(es)),
    applyAll: (es) => {
      for (let i = 0; i < es.length; i += BATCH) c.applyBatch(toEventBatch(es.slice(i, i + BATCH)));
    },
    close: () => c.close(),
  };
}

/**
 * In-process ingest as threads are added: the index in this thread (the
 * baseline), then T shard threads fed as before (each batch waits for the
 * shards: applyBatch) and queued (applyBatchAsync: this thread writes the
 * next batch's records while the shards apply, up to `window` batches ahead).
 * Blocks per second of a second pass (the first warms the code), median of
 * repeats; the core count goes beside it.
 */
export async function runIngestScaling(w: Workload, threads: number[], repeats: number, window = 64, batchEvents = BATCH) {
  // Batches built once, outside the timing: the figure is the index's (a decoder hands over flat batches).
  const batches: EventBatch[] = [];
  for (let i = 0; i < w.events.length; i += batchEvents) batches.push(toEventBatch(w.events.slice(i, i + batchEvents)));
  const rate = async (shards: number, queued: boolean) => {
    const rates: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const c = await CompactIndex.create({ shards, maxBlocks: w.storedBlocks });
      const applyAll = async () => {
        if (!queued) {
          for (const b of batches) c.applyBatch(b);
          return;
        }
        const inFlight: Promise<unknown>[] = [];
        for (const b of batches) {
          if (inFlight.length >= window) await inFlight.shift();
          inFlight.push(c.applyBatchAsync(b));
        }
        await Promise.all(inFlight);
      };
      // Shard threads start with cold code: a first pass (then every worker removed) warms every variant alike.
      await applyAll();
      for (const key of c.workers()) c.removeWorker(key.workerId);
      await gcAndSettle();
      const t0 = process.hrtime.bigint();
      await applyAll();
      rates.push(w.storedBlocks / (usSince(t0) / 1e6));
      await c.close();
    }
    return median(rates);
  };
  const inThread = await rate(0, false);
  const rows: Record<string, unknown>[] = [];
  for (const t of threads) {
    const waiting = await rate(t, false);
    const queued = await rate(t, true);
    rows.push({ threads: t, waitingBlocksPerSec: waiting, queuedBlocksPerSec: queued, queuedVsInThread: queued / inThread, queuedVsWaiting: queued / waiting });
  }
  return { cores: availableParallelism(), batchEvents, window, inThreadBlocksPerSec: inThread, rows };
}

export const IMPLS = ["compact", "compact-grown", "compact-1-thread", "compact-N-threads", "naive", "reference"] as const;

function shardsOf(kind: string, n: number): number {
  return kind === "compact-1-thread" ? 1 : n;
}

/** Stored blocks applied per second, median of repeats (fresh index each time). */
async function ingest(kind: string, w: Workload, cfg: IndexBenchConfig): Promise<number> {
  const rates: number[] = [];
  for (let r = 0; r < cfg.repeats; r++) {
    const impl = await makeImpl(kind, shardsOf(kind, cfg.shards), w.storedBlocks);
    gc();
    const t0 = process.hrtime.bigint();
    impl.applyAll(w.events);
    rates.push(w.storedBlocks / (usSince(t0) / 1e6));
    await impl.close();
  }
  return median(rates);
}

function queryLatency(impl: Impl, prompts: Uint32Array[]): Latency & { meanOverlap: number } {
  const samples: number[] = [];
  let overlap = 0;
  for (const p of prompts) {
    const t0 = process.hrtime.bigint();
    const m = impl.query(p);
    samples.push(usSince(t0));
    let best = 0;
    for (const v of m.values()) best = Math.max(best, v);
    overlap += best;
  }
  return { ...latency(samples), meanOverlap: overlap / prompts.length };
}

/** The prompts with `extra` more tokens each (their own first ones), built before timing and collected. */
function withTail(prompts: Uint32Array[], extra: number): Uint32Array[] {
  const out = prompts.map((p) => {
    const t = new Uint32Array(p.length + extra);
    t.set(p);
    t.set(p.subarray(0, extra), p.length);
    return t;
  });
  gc();
  return out;
}

function hashingLatency(prompts: Uint32Array[], hash: (t: Uint32Array) => unknown): Latency & { blocksPerSec: number } {
  const samples: number[] = [];
  const t0 = process.hrtime.bigint();
  for (const p of prompts) {
    const t = process.hrtime.bigint();
    hash(p);
    samples.push(usSince(t));
  }
  const blocks = prompts.reduce((n, p) => n + Math.floor(p.length / BLOCK), 0);
  return { ...latency(samples), blocksPerSec: blocks / (usSince(t0) / 1e6) };
}

/**
 * Prompt hashing now against an earlier hasher, in the same run: passes over
 * the same prompts alternate between the two (which one goes first flips
 * every pass), every call timed. The ratio is now / before of each pass
 * pair's p50. `now` is hashPromptFast (local and sequence hashes as
 * bigints), or with `sequenceAlone` the router's hashPromptSequence. The
 * default `before` is the hasher from before issue 21
 * (bench/wasmXxh3Scalar.ts: scalar WebAssembly for blocks of 61+ tokens,
 * the native hasher per block below that; local and sequence hashes as
 * bigints, which routing then used).
 */
export function hashingVsBefore(
  prompts: Uint32Array[],
  blockSize: number,
  { passes = 6, sequenceAlone = false, old = (t: Uint32Array) => hashPromptScalarWasm(t, blockSize) as unknown } = {},
) {
  const now: number[] = [];
  const before: number[] = [];
  const ratios: number[] = [];
  const pass = (hash: (t: Uint32Array) => unknown, into: number[]) => {
    const samples: number[] = [];
    for (const p of prompts) {
      const t = process.hrtime.bigint();
      hash(p);
      samples.push(usSince(t));
    }
    into.push(...samples);
    return median(samples);
  };
  const fresh = sequenceAlone ? (t: Uint32Array) => hashPromptSequence(t, blockSize) : (t: Uint32Array) => hashPromptFast(t, blockSize);
  for (let i = 0; i < passes; i++) {
    let nowP50: number;
    let beforeP50: number;
    if (i % 2 === 0) {
      beforeP50 = pass(old, before);
      nowP50 = pass(fresh, now);
    } else {
      nowP50 = pass(fresh, now);
      beforeP50 = pass(old, before);
    }
    ratios.push(nowP50 / beforeP50);
  }
  return { now: latency(now), before: latency(before), ratioP50: median(ratios), ratioMin: Math.min(...ratios), ratioMax: Math.max(...ratios) };
}

/** Ingest with a query after every batch: both rates, and the queries' latency. */
function ingestWithQueries(impl: Impl, w: Workload, prompts: Uint32Array[]) {
  const samples: number[] = [];
  const t0 = process.hrtime.bigint();
  let q = 0;
  for (let i = 0; i < w.events.length; i += BATCH) {
    impl.applyAll(w.events.slice(i, i + BATCH));
    const t = process.hrtime.bigint();
    impl.query(prompts[q++ % prompts.length]);
    samples.push(usSince(t));
  }
  const secs = usSince(t0) / 1e6;
  return { storedBlocksPerSec: w.storedBlocks / secs, queriesPerSec: samples.length / secs, query: latency(samples) };
}

/**
 * A steady background stream of single-block events at `rate` per second,
 * applied in whatever batch has come due, with a query arriving every
 * millisecond: how long does a query wait (arrival to answer)?
 */
function steadyIngest(impl: Impl, prompts: Uint32Array[], ms: number, rate: number) {
  const stream = steadyEvents(3 + Math.floor(performance.now()), 1n << 40n);
  const waits: number[] = [];
  const start = performance.now();
  let applied = 0;
  let nextQuery = start + 1;
  let q = 0;
  const batch: IndexEvent[] = [];
  for (;;) {
    const now = performance.now();
    if (now - start > ms) break;
    const due = Math.floor(((now - start) / 1000) * rate) - applied;
    batch.length = 0;
    for (let i = 0; i < Math.min(due, 4096); i++) batch.push(stream.next().value as IndexEvent);
    if (batch.length > 0) {
      impl.applyNow(batch);
      applied += batch.length;
    }
    if (performance.now() >= nextQuery) {
      impl.query(prompts[q++ % prompts.length]);
      waits.push((performance.now() - nextQuery) * 1000);
      nextQuery += 1;
    }
  }
  const secs = (performance.now() - start) / 1000;
  return { eventsPerSec: applied / secs, queries: waits.length, waitUs: latency(waits) };
}

/** Heap + array buffer bytes per (block, worker) entry, and RSS, after building the index. */
async function memory(kind: string, w: Workload, shards: number) {
  gc();
  gc();
  const m0 = process.memoryUsage();
  const impl = await makeImpl(kind, shards, w.storedBlocks);
  impl.applyAll(w.events);
  gc();
  gc();
  const m1 = process.memoryUsage();
  const bytes = m1.heapUsed + m1.arrayBuffers - (m0.heapUsed + m0.arrayBuffers);
  const result = { bytesPerEntry: bytes / w.storedBlocks, rssMB: m1.rss / 2 ** 20 };
  await impl.close();
  return result;
}

/**
 * Query wait behind a steady background ingest, on an index first filled to
 * `entries` from the same steady stream (no event list kept: the benchmark's
 * own heap stays small, as a router's would, so its GC pauses do not pose as
 * index stalls). Run it after the other benchmarks dropped their workloads.
 */
export async function runSteadyBench(prompts: Uint32Array[], entries: number, cfg: IndexBenchConfig) {
  const out: Record<string, unknown> = {};
  for (const kind of ["compact", "compact-1-thread", "compact-N-threads"]) {
    const impl = await makeImpl(kind, shardsOf(kind, cfg.shards), entries * 2);
    const fill = steadyEvents(9);
    for (let n = 0; n < entries; n += 4096) {
      const batch: IndexEvent[] = [];
      for (let i = 0; i < 4096; i++) batch.push(fill.next().value as IndexEvent);
      impl.applyAll(batch);
    }
    gc();
    steadyIngest(impl, prompts, Math.min(200, cfg.steadyMs), cfg.steadyEventsPerSec); // warm-up
    out[kind] = steadyIngest(impl, prompts, cfg.steadyMs, cfg.steadyEventsPerSec);
    await impl.close();
  }
  return out;
}

export async function runIndexBench(workloads: Workload[], cfg: IndexBenchConfig) {
  const out: Record<string, unknown> = {};
  for (const w of workloads) {
    const prompts = w.prompts(8192, cfg.queries);
    const res: Record<string, unknown> = { events: w.events.length, storedBlocks: w.storedBlocks };
    const ingestRates: Record<string, number> = {};
    for (const kind of IMPLS) ingestRates[kind] = await ingest(kind, w, cfg);
    res.ingestBlocksPerSec = ingestRates;

    // V8 runs fresh WebAssembly as baseline code until its optimized code is ready (about 20 ms
    // here): warm both hashers up first, or the first rows time the baseline code.
    const warm = performance.now();
    for (let i = 0; performance.now() - warm < 200; i++) {
      hashPromptFast(prompts[i % prompts.length], BLOCK);
      hashPromptScalarWasm(prompts[i % prompts.length], BLOCK);
      hashPromptLoopSimd(prompts[i % prompts.length], BLOCK);
    }
    res.hashing8192 = {
      "wasm (router)": hashingLatency(prompts, (t) => hashPromptFast(t, BLOCK)),
      // Real prompts seldom end on a block boundary: the same prompts with 37 more tokens.
      "wasm (router), partial last block": hashingLatency(withTail(prompts, 37), (t) => hashPromptFast(t, BLOCK)),
      "js fallback": hashingLatency(prompts, (t) => hashPromptJs(t, BLOCK)),
      "napi-per-block": hashingLatency(prompts, (t) => hashPrompt(t, BLOCK)),
    };
    // Issue 21's figure: prompt hashing now vs before, in this run (block 16 hashed natively per block before: 200 prompts).
    const tailed = withTail(prompts, 37);
    res.hashing8192VsBefore = {
      [`block ${BLOCK}, local + sequence`]: hashingVsBefore(prompts, BLOCK),
      [`block ${BLOCK}, sequence alone (routing)`]: hashingVsBefore(prompts, BLOCK, { sequenceAlone: true }),
      [`block ${BLOCK}, partial last block, local + sequence`]: hashingVsBefore(tailed, BLOCK),
      [`block ${BLOCK}, partial last block, sequence alone (routing)`]: hashingVsBefore(tailed, BLOCK, { sequenceAlone: true }),
      "block 128, local + sequence": hashingVsBefore(prompts, 128),
      "block 16, local + sequence": hashingVsBefore(prompts.slice(0, 200), 16, { passes: 2 }),
    };
    // The unrolled, pipelined long path against the SIMD hasher as it was before (bench/wasmXxh3Loop.ts).
    res.hashing8192VsLoopSimd = {
      [`block ${BLOCK}, local + sequence`]: hashingVsBefore(prompts, BLOCK, { old: (t) => hashPromptLoopSimd(t, BLOCK) }),
      [`block ${BLOCK}, sequence alone (routing)`]: hashingVsBefore(prompts, BLOCK, { sequenceAlone: true, old: (t) => hashSequenceLoopSimd(t, BLOCK) }),
      "block 128, local + sequence": hashingVsBefore(prompts, 128, { old: (t) => hashPromptLoopSimd(t, 128) }),
    };
    const query: Record<string, unknown> = {};
    const underIngest: Record<string, unknown> = {};
    for (const kind of IMPLS) {
      if (kind === "compact-grown") continue; // measured for ingest and memory only
      const impl = await makeImpl(kind, shardsOf(kind, cfg.shards), w.storedBlocks);
      impl.applyAll(w.events);
      queryLatency(impl, prompts.slice(0, Math.min(200, prompts.length))); // warm-up
      query[kind] = queryLatency(impl, prompts);
      await impl.close();
      if (kind.startsWith("compact") || kind === "naive") {
        const fresh = await makeImpl(kind, shardsOf(kind, cfg.shards), w.storedBlocks);
        underIngest[kind] = ingestWithQueries(fresh, w, prompts);
        await fresh.close();
      }
    }
    res.findMatches8192Us = query;
    // The query path now (u32 words; from wire bytes, decoded into the hasher) against the bigint path and before issue 21.
    {
      const c = await CompactIndex.create({ shards: 0, maxBlocks: w.storedBlocks });
      for (let i = 0; i < w.events.length; i += BATCH) c.applyBatch(toEventBatch(w.events.slice(i, i + BATCH)));
      runQueryComparison(c, prompts.slice(0, Math.min(200, prompts.length)), BLOCK, 1); // warm-up
      res.queryVsBefore = runQueryComparison(c, prompts, BLOCK, 2 * cfg.repeats);
      await c.close();
    }
    res.ingestWithQueries = underIngest;

    const mem: Record<string, unknown> = {};
    for (const kind of ["compact", "compact-grown", "naive", "reference"]) mem[kind] = await memory(kind, w, 0);
    res.memory = mem;
    out[w.name] = res;
  }
  return out;
}
