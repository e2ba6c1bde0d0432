// In-process ingest of relay messages (issue 21 §3): one stream publishing the
// whole fleet, each IngestKvEvents message holding one event of each of up to
// `perMessage` workers (64 on the Mooncake workload: every worker in every
// message), as Dynamo's publisher relay or a single-connection benchmark
// sends them. Such a message names workers of every shard, so:
// - "this thread": decoded here (the hot-path decoder) and applied to the index in this thread;
// - "decoded here": decoded here, the records queued to N shard threads (what a relay message got before);
// - "raw": each shard gets its own events' bytes and decodes, hashes and applies them, committed
//   together (two-phase, RawStream); with one shard the whole message goes to it.
// The first message names new workers and takes the decoded path, as in the server. Configurations
// run in alternating rounds (a noisy shared machine drifts between rounds, not within a
// comparison); figures are medians over rounds, stored blocks per second, with the main thread's
// CPU per stored block and the core count.
import { availableParallelism } from "node:os";
import { readFileSync } from "node:fs";
import { create, toBinary } from "@bufbuild/protobuf";
import { IngestKvEventsRequestSchema } from "../gen/kvrouter/v1/router_pb.js";
import { IngestDecoder } from "../src/decoding/ingestDecoder.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { toKvEvent } from "./rawIngest.bench.js";
import { gc, median, usSince } from "./stats.js";
import { BLOCK, type Workload } from "./workload.js";

/** The workload's events as relay messages: message k holds the k-th event of each of up to `perMessage` workers. */
export function relayMessages(events: readonly IndexEvent[], perMessage: number): Uint8Array[] {
  const byWorker = new Map<string, IndexEvent[]>();
  for (const e of events) {
    const key = `${e.workerId}:${e.dpRank}`;
    if (!byWorker.has(key)) byWorker.set(key, []);
    byWorker.get(key)!.push(e);
  }
  const lists = [...byWorker.values()];
  const messages: Uint8Array[] = [];
  for (let g = 0; g < lists.length; g += perMessage) {
    const group = lists.slice(g, g + perMessage);
    const longest = Math.max(...group.map((l) => l.length));
    for (let k = 0; k < longest; k++) {
      const kv = group.filter((l) => k < l.length).map((l) => toKvEvent(l[k]));
      messages.push(toBinary(IngestKvEventsRequestSchema, create(IngestKvEventsRequestSchema, { events: kv })));
    }
  }
  return messages;
}

type Mode = "this thread" | "decoded here" | "raw";

/** This thread's CPU time in µs (Linux: /proc/thread-self/stat, 10 ms ticks), or NaN. */
function threadCpuUs(): number {
  try {
    const f = readFileSync("/proc/thread-self/stat", "utf8").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) * 10_000; // utime + stime, in clock ticks of 10 ms
  } catch {
    return NaN;
  }
}

interface Pass {
  blocksPerSec: number;
  mainCpuUsPerBlock: number;
  /** Messages that went raw (whole or in parts), and that took the decoded path. */
  raw: number;
  decoded: number;
}

/** Applies the relay stream (at most `window` messages in flight) to a fresh index, twice (the first pass warms the shard threads); the second pass's figures. */
async function applyRelay(mode: Mode, shards: number, messages: Uint8Array[], storedBlocks: number, window: number): Promise<Pass> {
  const index = await CompactIndex.create({ shards, maxBlocks: storedBlocks, blockSize: mode === "raw" ? BLOCK : undefined });
  const decoder = new IngestDecoder(BLOCK);
  const counts = { raw: 0, decoded: 0 };
  const run = async () => {
    counts.raw = counts.decoded = 0;
    const stream = mode === "raw" ? index.openRawStream() : undefined;
    const inFlight: Promise<unknown>[] = [];
    for (const m of messages) {
      if (inFlight.length >= window) await inFlight.shift();
      const submitted = stream?.submit(m);
      if (submitted !== undefined) {
        counts.raw++;
        inFlight.push(submitted.then((r) => assertApplied(r)));
        continue;
      }
      // The decoded path (new workers, or a ring with no room): after the stream's raw messages are back, as the server does.
      counts.decoded++;
      if (stream !== undefined) await Promise.all(inFlight.splice(0));
      const decoded = decoder.decode(m)!;
      if (mode === "this thread") index.applyBatch(decoded.batch);
      else inFlight.push(index.applyBatchAsync(decoded.batch));
    }
    await Promise.all(inFlight);
    stream?.close();
  };
  await run();
  for (const key of index.workers()) index.removeWorker(key.workerId);
  gc();
  const cpu0 = threadCpuUs();
  const t0 = process.hrtime.bigint();
  await run();
  const seconds = usSince(t0) / 1e6;
  const cpu = threadCpuUs() - cpu0;
  await index.close();
  return { blocksPerSec: storedBlocks / seconds, mainCpuUsPerBlock: cpu / storedBlocks, ...counts };
}

function assertApplied(r: unknown): void {
  if (r === "refused") throw new Error("a raw message was refused: the bench traffic should decode on the hot path");
}

export async function runRelayIngestScaling(w: Workload, threads: number[], rounds: number, perMessage = 64, window = 16) {
  const messages = relayMessages(w.events, perMessage);
  const configs: { mode: Mode; shards: number }[] = [{ mode: "this thread", shards: 0 }];
  for (const t of threads) configs.push({ mode: "decoded here", shards: t }, { mode: "raw", shards: t });
  const passes = configs.map(() => [] as Pass[]);
  for (let r = 0; r < rounds; r++) {
    for (let c = 0; c < configs.length; c++) passes[c].push(await applyRelay(configs[c].mode, configs[c].shards, messages, w.storedBlocks, window));
  }
  const rate = (c: number) => median(passes[c].map((p) => p.blocksPerSec));
  const cpu = (c: number) => median(passes[c].map((p) => p.mainCpuUsPerBlock));
  const inThread = rate(0);
  const oneRaw = rate(configs.findIndex((c) => c.mode === "raw"));
  const rows = threads.map((t) => {
    const d = configs.findIndex((c) => c.mode === "decoded here" && c.shards === t);
    const r = configs.findIndex((c) => c.mode === "raw" && c.shards === t);
    return {
      threads: t,
      rawBlocksPerSec: rate(r),
      decodedHereBlocksPerSec: rate(d),
      rawVsDecodedHere: rate(r) / rate(d),
      rawVsThisThread: rate(r) / inThread,
      rawVsOneThreadRaw: rate(r) / oneRaw,
      mainCpuUsPerBlock: { raw: cpu(r), decodedHere: cpu(d) },
      rawMessages: passes[r][0].raw,
      decodedMessages: passes[r][0].decoded,
      roundsBlocksPerSec: { raw: passes[r].map((p) => p.blocksPerSec), decodedHere: passes[d].map((p) => p.blocksPerSec) },
    };
  });
  return {
    cores: availableParallelism(),
    messages: messages.length,
    perMessage,
    window,
    rounds,
    thisThreadBlocksPerSec: inThread,
    thisThreadMainCpuUsPerBlock: cpu(0),
    thisThreadRoundsBlocksPerSec: passes[0].map((p) => p.blocksPerSec),
    rows,
  };
}
