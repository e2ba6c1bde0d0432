// In-process ingest of relay messages (issue 21 §3): one stream publishing the
// whole fleet, each IngestKvEvents message holding one event of each of up to
// `perMessage` workers (64 on the Mooncake workload: every worker in every
// message), as Dynamo's publisher relay or a single-connection benchmark
// sends them; events cut to at most `blocksPerEvent` blocks, with token ids
// or tokens_hash. Such a message names workers of every shard, so:
// - "this thread": decoded here (the hot-path decoder) and applied to the index in this thread;
// - "decoded here": decoded here, the records queued to N shard threads (what a relay message got before);
// - "raw": each shard gets its own events' bytes and decodes, hashes and applies them, committed
//   together (two-phase, RawStream); with one shard the whole message goes to it.
// The first message names new workers and takes the decoded path, as in the server. Configurations
// run in alternating rounds (a noisy shared machine drifts between rounds, not within a
// comparison); figures are medians over rounds, stored blocks per second, with the main thread's
// busy time per stored block (event-loop utilization: running JavaScript or blocked in it) and the
// core count.
import { availableParallelism } from "node:os";
import { create, toBinary } from "@bufbuild/protobuf";
import { IngestKvEventsRequestSchema, type KvEvent, KvEventSchema } from "../gen/kvrouter/v1/router_pb.js";
import { IngestDecoder } from "../src/decoding/ingestDecoder.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { toKvEvent } from "./rawIngest.bench.js";
import { gcAndSettle, median, usSince } from "./stats.js";
import { BLOCK, type Workload } from "./workload.js";

export interface RelayShape {
  /** Workers per message (64: every worker of the Mooncake workload in every message). */
  perMessage: number;
  /** A stored event of more blocks is cut into a chain of events of at most this many (engines publish as they go), renumbered per worker. */
  blocksPerEvent: number;
  /** Blocks carry token ids (the shards hash them) instead of tokens_hash. */
  tokenIds: boolean;
}

/** The workload's events as relay messages: message k holds the k-th event of each of up to `perMessage` workers. */
export function relayMessages(events: readonly IndexEvent[], shape: RelayShape): Uint8Array[] {
  const byWorker = new Map<string, KvEvent[]>();
  const nextId = new Map<string, bigint>();
  for (const e of events) {
    const key = `${e.workerId}:${e.dpRank}`;
    if (!byWorker.has(key)) byWorker.set(key, []);
    const list = byWorker.get(key)!;
    const id = () => {
      const n = nextId.get(key) ?? 1n;
      nextId.set(key, n + 1n);
      return n;
    };
    if (e.kind !== "stored") {
      list.push(toKvEvent({ ...e, eventId: id() }));
      continue;
    }
    for (let from = 0; from < e.blocks.length; from += shape.blocksPerEvent) {
      const blocks = e.blocks.slice(from, from + shape.blocksPerEvent);
      const parentBlockHash = from === 0 ? e.parentHash : e.blocks[from - 1].externalHash;
      const base = { workerId: e.workerId, dpRank: e.dpRank, eventId: id() };
      const wire = blocks.map((b) => (shape.tokenIds ? { blockHash: b.externalHash, tokenIds: tokensOf(b.localHash) } : { blockHash: b.externalHash, tokensHash: b.localHash }));
      list.push(create(KvEventSchema, { ...base, data: { case: "stored", value: { parentBlockHash, blocks: wire } } }));
    }
  }
  const lists = [...byWorker.values()];
  const messages: Uint8Array[] = [];
  for (let g = 0; g < lists.length; g += shape.perMessage) {
    const group = lists.slice(g, g + shape.perMessage);
    const longest = Math.max(...group.map((l) => l.length));
    for (let k = 0; k < longest; k++) {
      const kv = group.filter((l) => k < l.length).map((l) => l[k]);
      messages.push(toBinary(IngestKvEventsRequestSchema, create(IngestKvEventsRequestSchema, { events: kv })));
    }
  }
  return messages;
}

/** BLOCK token ids standing for a block of the trace (equal local hashes, equal tokens), below 152,000 like a real vocabulary. */
function tokensOf(localHash: bigint): number[] {
  let x = Number(localHash & 0xffffffffn) | 1;
  const out = new Array<number>(BLOCK);
  for (let i = 0; i < BLOCK; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x >>> 0) % 152_000;
  }
  return out;
}

type Mode = "this thread" | "decoded here" | "raw";

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
  await gcAndSettle();
  const elu0 = performance.eventLoopUtilization();
  const t0 = process.hrtime.bigint();
  await run();
  const seconds = usSince(t0) / 1e6;
  // The main thread's busy time (running JavaScript, or blocked in it waiting for a shard), not its idle waits for results.
  const cpu = performance.eventLoopUtilization(elu0).active * 1000;
  await index.close();
  return { blocksPerSec: storedBlocks / seconds, mainCpuUsPerBlock: cpu / storedBlocks, ...counts };
}

function assertApplied(r: unknown): void {
  if (r === "refused") throw new Error("a raw message was refused: the bench traffic should decode on the hot path");
}

export async function runRelayIngestScaling(w: Workload, threads: number[], rounds: number, shape: RelayShape, window = 16) {
  const messages = relayMessages(w.events, shape);
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
    messageBytes: messages.reduce((n, m) => n + m.length, 0) / messages.length,
    ...shape,
    window,
    rounds,
    thisThreadBlocksPerSec: inThread,
    thisThreadMainCpuUsPerBlock: cpu(0),
    thisThreadRoundsBlocksPerSec: passes[0].map((p) => p.blocksPerSec),
    rows,
  };
}
