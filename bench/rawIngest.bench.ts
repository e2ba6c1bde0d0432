// In-process ingest from wire bytes (issue 21 §3): the workload's events
// encoded as IngestKvEvents messages (tokens_hash: the local hash the trace
// gives; one event, about 200 blocks on Mooncake, per message), one stream
// per worker as engines publish, applied three ways:
// - "this thread": decoded here (the hot-path decoder) and applied to the index in this thread;
// - "decoded here": decoded here, the records queued to N shard threads (the path before raw messages);
// - "raw": the bytes queued to the owning shard, which decodes and applies them (RawStream).
// Every stream's first message takes the decoded path (its worker is new), as in the server.
// Figures are stored blocks per second over the whole workload, medians of repeats, with the core count.
import { availableParallelism } from "node:os";
import { create, toBinary } from "@bufbuild/protobuf";
import { IngestKvEventsRequestSchema, type KvEvent, KvEventSchema } from "../gen/kvrouter/v1/router_pb.js";
import { IngestDecoder } from "../src/decoding/ingestDecoder.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { gcAndSettle, median, usSince } from "./stats.js";
import { BLOCK, type Workload } from "./workload.js";

/** Each worker's events as IngestKvEvents messages of `perMessage` events, in order. */
export function workerStreams(events: readonly IndexEvent[], perMessage: number): Uint8Array[][] {
  const byWorker = new Map<string, KvEvent[]>();
  for (const e of events) {
    const key = `${e.workerId}:${e.dpRank}`;
    if (!byWorker.has(key)) byWorker.set(key, []);
    byWorker.get(key)!.push(toKvEvent(e));
  }
  return [...byWorker.values()].map((list) => {
    const messages: Uint8Array[] = [];
    for (let i = 0; i < list.length; i += perMessage) {
      messages.push(toBinary(IngestKvEventsRequestSchema, create(IngestKvEventsRequestSchema, { events: list.slice(i, i + perMessage) })));
    }
    return messages;
  });
}

export function toKvEvent(e: IndexEvent): KvEvent {
  const base = { workerId: e.workerId, dpRank: e.dpRank, eventId: e.eventId };
  if (e.kind === "stored") {
    const blocks = e.blocks.map((b) => ({ blockHash: b.externalHash, tokensHash: b.localHash }));
    return create(KvEventSchema, { ...base, data: { case: "stored", value: { parentBlockHash: e.parentHash, blocks } } });
  }
  if (e.kind === "removed") return create(KvEventSchema, { ...base, data: { case: "removed", value: { blockHashes: e.blockHashes } } });
  return create(KvEventSchema, { ...base, data: { case: "cleared", value: {} } });
}

type Mode = "this thread" | "decoded here" | "raw";

/** Applies every stream (concurrently, at most `window` messages in flight per stream) to a fresh index; blocks per second. */
async function applyStreams(mode: Mode, shards: number, streams: Uint8Array[][], storedBlocks: number, window: number): Promise<number> {
  const index = await CompactIndex.create({ shards, maxBlocks: storedBlocks, blockSize: mode === "raw" ? BLOCK : undefined });
  const decoder = new IngestDecoder(BLOCK);
  const run = async () => {
    await Promise.all(
      streams.map(async (messages) => {
        const raw = mode === "raw" ? index.openRawStream() : undefined;
        const inFlight: Promise<unknown>[] = [];
        for (const m of messages) {
          if (inFlight.length >= window) await inFlight.shift();
          const submitted = raw?.submit(m);
          if (submitted !== undefined) {
            inFlight.push(submitted.then((r) => assertApplied(r)));
            continue;
          }
          // The decoded path (a new worker, or no raw streams): after this stream's raw messages are back.
          await Promise.all(inFlight.splice(0));
          const decoded = decoder.decode(m)!;
          if (mode === "this thread") index.applyBatch(decoded.batch);
          else inFlight.push(index.applyBatchAsync(decoded.batch));
          // Yield now and then, as a server's event loop does, so every stream makes progress.
          if (mode === "this thread") await new Promise<void>((resolve) => setImmediate(resolve));
        }
        await Promise.all(inFlight);
        raw?.close();
      }),
    );
  };
  // Shard threads start with cold code: a first pass (then every worker removed) warms every variant alike.
  await run();
  for (const key of index.workers()) index.removeWorker(key.workerId);
  await gcAndSettle();
  const t0 = process.hrtime.bigint();
  await run();
  const rate = storedBlocks / (usSince(t0) / 1e6);
  await index.close();
  return rate;
}

function assertApplied(r: unknown): void {
  if (r === "refused") throw new Error("a raw message was refused: the bench traffic should decode on the hot path");
}

export async function runRawIngestScaling(w: Workload, threads: number[], repeats: number, perMessage = 1, window = 16) {
  const streams = workerStreams(w.events, perMessage);
  const rate = async (mode: Mode, shards: number) => {
    const rates: number[] = [];
    for (let r = 0; r < repeats; r++) rates.push(await applyStreams(mode, shards, streams, w.storedBlocks, window));
    return median(rates);
  };
  const inThread = await rate("this thread", 0);
  const rows: Record<string, unknown>[] = [];
  let oneRaw = 0;
  for (const t of threads) {
    const decodedHere = await rate("decoded here", t);
    const raw = await rate("raw", t);
    if (t === 1) oneRaw = raw;
    rows.push({
      threads: t,
      rawBlocksPerSec: raw,
      decodedHereBlocksPerSec: decodedHere,
      rawVsThisThread: raw / inThread,
      rawVsDecodedHere: raw / decodedHere,
      ...(oneRaw > 0 ? { rawVsOneThread: raw / oneRaw } : {}),
    });
  }
  return { cores: availableParallelism(), streams: streams.length, perMessage, window, thisThreadBlocksPerSec: inThread, rows };
}
