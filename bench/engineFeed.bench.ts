// Engine ZeroMQ feeds in process (issue 21 §3): vLLM's msgpack payloads (the
// array encoding, token ids, blocks of 16) from W workers, one feed each,
// applied three ways:
// - "this thread": read and hashed here (the flat reader), applied to the index in this thread (the 2-core default);
// - "decoded here": read and hashed here, the batch queued to N shard threads (the default with one shard thread);
// - "on shard": the payload bytes queued to the shard that owns the worker, which reads, hashes and applies them (EngineFeed).
// The flat reader (src/decoding/engine/flatReader.ts) takes every payload here; before it, each path
// decoded with @msgpack/msgpack and convert.ts (engineDecode.bench.ts compares the two).
// Every feed's first payload takes the decoded path (its worker is new), as in the server. Rounds
// alternate between the variants (a shared 2-core machine is noisy); figures are stored blocks per
// second over the whole feed, medians of the rounds, with the core count and this thread's CPU per block.
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { encode } from "@msgpack/msgpack";
import { toIndexEvent } from "../src/decoding/engine/convert.js";
import { decodeBatch } from "../src/decoding/engine/decode.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import type { EngineFeedApplied, EngineFeedMessage } from "../src/indexer/types.js";
import { FEED_COUNT_WORDS } from "../src/decoding/engine/feedCounts.js";
import { engineReader, numberEvents } from "../src/decoding/engine/shardFeed.js";
import { type EventBatch, toEventBatch } from "../src/protocols/eventBatch.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { gc, median, usSince } from "./stats.js";

const BLOCK = 16;

export interface FeedShape {
  workers: number;
  payloads: number;
  eventsPerPayload: number;
  blocksPerEvent: number;
}

/** Each worker's payloads: chains of stored blocks, every event's parent the previous event's last block. */
export function enginePayloads(shape: FeedShape): Uint8Array[][] {
  let seed = 12345;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % 150_000;
  return Array.from({ length: shape.workers }, (_, w) => {
    let hash = BigInt(w + 1) << 40n;
    let parent: bigint | null = null;
    return Array.from({ length: shape.payloads }, () => {
      const events = Array.from({ length: shape.eventsPerPayload }, () => {
        const hashes = Array.from({ length: shape.blocksPerEvent }, () => ++hash);
        const tokens = Array.from({ length: shape.blocksPerEvent * BLOCK }, rand);
        const e = ["BlockStored", hashes, parent, tokens, BLOCK, null, "GPU", null];
        parent = hashes[hashes.length - 1];
        return e;
      });
      return encode([Date.now() / 1000, events, 0], { useBigInt64: true });
    });
  });
}

type Mode = "this thread" | "decoded here" | "on shard";

/** Reads, hashes and numbers a payload here with the flat reader, as the subscriber does on the main thread. */
function decodeHere(payload: Uint8Array, workerId: bigint, next: () => bigint): EventBatch {
  const flat = engineReader(BLOCK).read(payload, "vllm", workerId, 0, counts);
  if (flat === undefined) return toEventBatch(decodeWithLibrary(payload, workerId, next));
  let last = 0n;
  for (let i = 0; i < flat.batch.count; i++) last = next();
  numberEvents(flat.batch, last - BigInt(flat.batch.count));
  return flat.batch;
}
const counts = new Int32Array(FEED_COUNT_WORDS);

/** Decodes, converts and hashes a payload through @msgpack/msgpack and convert.ts (what the flat reader hands back). */
function decodeWithLibrary(payload: Uint8Array, workerId: bigint, next: () => bigint): IndexEvent[] {
  const batch = decodeBatch(payload, "vllm");
  const worker = { workerId, dpRank: batch.dpRank ?? 0 };
  const events: IndexEvent[] = [];
  for (const e of batch.events) {
    if (e.type === "bad") throw new Error(e.reason);
    const c = toIndexEvent(e, worker, 0n, BLOCK);
    if ("skip" in c) throw new Error(c.detail);
    c.event.eventId = next();
    events.push(c.event);
  }
  return events;
}

/** One pass over every feed (at most `window` payloads in flight per feed); blocks per second and this thread's CPU µs per block. */
async function applyFeeds(mode: Mode, shards: number, feeds: Uint8Array[][], blocks: number, window: number, events: number) {
  const index = await CompactIndex.create({ shards, feedBlockSize: mode === "on shard" ? BLOCK : undefined });
  const run = () =>
    Promise.all(
      feeds.map(async (payloads, w) => {
        const workerId = BigInt(w + 1);
        let last = 0n;
        const feed = mode === "on shard" ? index.openEngineFeed() : undefined;
        // The feed hands each applied payload's last event id back (setLastEventId) before the next submit can read it.
        const message: EngineFeedMessage = { engine: "vllm", workerId, defaultRank: 0, ranks: [0], lastEventId: () => last, setLastEventId: (_, id) => (last = id) };
        let submittedEvents = 0n;
        const inFlight: Promise<unknown>[] = [];
        for (const p of payloads) {
          if (inFlight.length >= window) await inFlight.shift();
          const submitted = feed?.submit(message, p);
          if (submitted !== undefined) {
            // Every event of the bench converts: each result's last id is the events submitted so far.
            const expected = (submittedEvents += BigInt(events));
            inFlight.push(
              submitted.then((r) => {
                if (applied(r).lastEventId !== expected) throw new Error(`last event id ${applied(r).lastEventId}, ${expected} expected`);
              }),
            );
            continue;
          }
          await Promise.all(inFlight.splice(0)); // the decoded path comes after what is queued
          const batch = decodeHere(p, workerId, () => ++last);
          submittedEvents = last;
          if (mode === "this thread") {
            index.applyBatch(batch);
            // Yield now and then, as a server's event loop does, so every feed makes progress.
            await new Promise<void>((resolve) => setImmediate(resolve));
          } else inFlight.push(index.applyBatchAsync(batch));
        }
        await Promise.all(inFlight);
        feed?.close();
      }),
    );
  // Shard threads start with cold code: a first pass (then every worker removed) warms every variant alike.
  await run();
  for (const key of index.workers()) index.removeWorker(key.workerId);
  gc();
  const cpu0 = mainThreadCpuUs();
  const t0 = process.hrtime.bigint();
  await run();
  const seconds = usSince(t0) / 1e6;
  const cpu = mainThreadCpuUs() - cpu0;
  const entries = index.stats().entries;
  if (entries !== blocks) throw new Error(`${mode}: ${entries} entries held, ${blocks} expected`);
  await index.close();
  return { rate: blocks / seconds, mainCpuUsPerBlock: cpu / blocks };
}

/** This (main) thread's CPU time from /proc (Linux; 10 ms ticks): process.cpuUsage() would count the shard threads too. */
function mainThreadCpuUs(): number {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * 10_000; // utime, stime (fields 14 and 15) in 100 Hz ticks
  } catch {
    return Number.NaN;
  }
}

function applied(r: EngineFeedApplied | "refused"): EngineFeedApplied {
  if (r === "refused") throw new Error("a payload was refused: the bench traffic should decode on the shard");
  return r;
}

export async function runEngineFeed(shape: FeedShape, threads: number[], rounds: number, window = 16) {
  const feeds = enginePayloads(shape);
  const blocks = shape.workers * shape.payloads * shape.eventsPerPayload * shape.blocksPerEvent;
  const variants: [Mode, number][] = [["this thread", 0], ...threads.flatMap((t): [Mode, number][] => [["decoded here", t], ["on shard", t]])];
  const rates = new Map<string, number[]>();
  const cpus = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++) {
    for (const [mode, shards] of variants) {
      const key = `${mode}/${shards}`;
      const { rate, mainCpuUsPerBlock } = await applyFeeds(mode, shards, feeds, blocks, window, shape.eventsPerPayload);
      rates.set(key, [...(rates.get(key) ?? []), rate]);
      cpus.set(key, [...(cpus.get(key) ?? []), mainCpuUsPerBlock]);
    }
  }
  const med = (mode: Mode, shards: number) => median(rates.get(`${mode}/${shards}`)!);
  const cpu = (mode: Mode, shards: number) => median(cpus.get(`${mode}/${shards}`)!);
  const inThread = med("this thread", 0);
  const oneOnShard = threads.includes(1) ? med("on shard", 1) : undefined;
  return {
    cores: availableParallelism(),
    ...shape,
    blockSize: BLOCK,
    blocks,
    rounds,
    window,
    thisThreadBlocksPerSec: inThread,
    thisThreadMainCpuUsPerBlock: cpu("this thread", 0),
    rows: threads.map((t) => ({
      threads: t,
      onShardMainCpuUsPerBlock: cpu("on shard", t),
      decodedHereMainCpuUsPerBlock: cpu("decoded here", t),
      onShardBlocksPerSec: med("on shard", t),
      decodedHereBlocksPerSec: med("decoded here", t),
      onShardVsDecodedHere: med("on shard", t) / med("decoded here", t),
      onShardVsThisThread: med("on shard", t) / inThread,
      ...(oneOnShard !== undefined ? { onShardVsOneShard: med("on shard", t) / oneOnShard } : {}),
    })),
    allRounds: Object.fromEntries(rates),
  };
}
