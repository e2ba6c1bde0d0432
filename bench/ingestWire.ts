// Pre-encoded IngestKvEvents traffic for the gRPC ingest benchmarks, and a
// raw-bytes client that writes it: the client does the same work whatever
// the server, so figures compare servers, not encoders.
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { IngestKvEventsRequestSchema, type KvEvent, KvEventSchema } from "../gen/kvrouter/v1/router_pb.js";
import { seededRandom } from "../src/util/random.js";
import { RAW_INGEST } from "./ingestServers.js";
import { BLOCK, WORKERS } from "./workload.js";

export const BLOCKS_PER_EVENT = 32;
export const EVENTS_PER_MESSAGE = 16;
const MAX_MESSAGE = 64 * 1024 * 1024;

export interface IngestTraffic {
  messages: Buffer[];
  blocks: number;
  bytes: number;
  /** Per worker, the token ids its chain starts with (up to 4096): prompts that hit the index. */
  prefixes: number[][];
}

/**
 * `blocks` stored blocks for 64 workers, 32 blocks per event (each event
 * extends its worker's chain), 16 events per message; with token ids (64 per
 * block) or with tokens_hash. Worker ids start at `firstWorker`; `workers`
 * of them (64 by default: a relay of a fleet; 1: one engine's publisher).
 */
export function ingestTraffic(blocks: number, withTokens: boolean, seed = 7, firstWorker = 1, workers = WORKERS): IngestTraffic {
  const rnd = seededRandom(seed);
  const nextId = new Array<bigint>(workers).fill(1n);
  const last = new Array<bigint | undefined>(workers).fill(undefined);
  let ext = BigInt(seed) << 40n;
  const messages: Buffer[] = [];
  let events: KvEvent[] = [];
  let bytes = 0;
  const prefixes: number[][] = Array.from({ length: workers }, () => []);
  const flush = () => {
    const b = Buffer.from(toBinary(IngestKvEventsRequestSchema, create(IngestKvEventsRequestSchema, { events })));
    messages.push(b);
    bytes += b.length;
    events = [];
  };
  for (let n = 0; n * BLOCKS_PER_EVENT < blocks; n++) {
    const w = n % workers;
    const stored = [];
    for (let j = 0; j < BLOCKS_PER_EVENT; j++) {
      ext++;
      if (withTokens) {
        const tokenIds = Array.from({ length: BLOCK }, () => Math.floor(rnd() * 128_000));
        if (prefixes[w].length < 4096) prefixes[w].push(...tokenIds);
        stored.push({ blockHash: ext, tokenIds });
      } else stored.push({ blockHash: ext, tokensHash: BigInt(Math.floor(rnd() * 2 ** 32)) * 0x100000001n });
    }
    events.push(
      create(KvEventSchema, {
        workerId: BigInt(firstWorker + w),
        eventId: nextId[w]++,
        data: { case: "stored", value: { parentBlockHash: last[w], blocks: stored } },
      }),
    );
    last[w] = ext;
    if (events.length === EVENTS_PER_MESSAGE) flush();
  }
  if (events.length > 0) flush();
  return { messages, blocks: Math.ceil(blocks / BLOCKS_PER_EVENT) * BLOCKS_PER_EVENT, bytes, prefixes };
}

const RawClient = grpc.makeGenericClientConstructor(RAW_INGEST, "RawIngest");

export type RawStream = grpc.ClientWritableStream<Buffer> & { done: Promise<void> };

/** A client that writes pre-encoded IngestKvEventsRequest bytes; `own`: a connection of its own (not shared with other clients). */
export function rawIngestClient(port: number, own = false): { open(): RawStream; close(): void } {
  const client = new RawClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": MAX_MESSAGE,
    ...(own ? { "grpc.use_local_subchannel_pool": 1 } : {}),
  }) as unknown as { ingestKvEvents(cb: (e: Error | null) => void): grpc.ClientWritableStream<Buffer>; close(): void };
  return {
    open() {
      let settle!: (e: Error | null) => void;
      const done = new Promise<void>((resolve, reject) => (settle = (e) => (e ? reject(e) : resolve())));
      const stream = client.ingestKvEvents((e) => settle(e)) as RawStream;
      stream.done = done;
      return stream;
    },
    close: () => client.close(),
  };
}

/** Writes every message with back-pressure and waits for the response: seconds taken. */
export async function sendAll(port: number, messages: readonly Buffer[]): Promise<number> {
  const c = rawIngestClient(port);
  const t0 = performance.now();
  const s = c.open();
  for (const m of messages) {
    if (!s.write(m)) await new Promise((resolve) => s.once("drain", resolve));
  }
  s.end();
  await s.done;
  const secs = (performance.now() - t0) / 1000;
  c.close();
  return secs;
}

/** Streams each message list on a connection of its own, all at once: seconds until the last response. */
export async function sendParallel(port: number, lists: readonly (readonly Buffer[])[]): Promise<number> {
  const clients = lists.map(() => rawIngestClient(port, true));
  const t0 = performance.now();
  await Promise.all(
    lists.map(async (messages, i) => {
      const s = clients[i].open();
      for (const m of messages) {
        if (!s.write(m)) await new Promise((resolve) => s.once("drain", resolve));
      }
      s.end();
      await s.done;
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  for (const c of clients) c.close();
  return secs;
}

/** Event ids from 2^56 up always take 9 varint bytes, so a template's ids can be rewritten in place. */
const ID_BASE = 1n << 56n;

function readVarint(b: Buffer, o: number): [number, number] {
  let v = 0;
  let shift = 1;
  for (;;) {
    const x = b[o++];
    v += (x & 0x7f) * shift;
    shift *= 128;
    if (x < 0x80) return [v, o];
  }
}

/**
 * A message that stores 32 blocks (token ids) on each of 4 workers and removes
 * them again, so repeating it keeps the index the same size while doing a
 * store and a removal per block; next() rewrites the event ids in place.
 */
export class RepeatingTraffic {
  readonly blocksPerMessage: number;
  private readonly bytes: Buffer;
  private readonly idAt: number[] = [];
  private id = 0n;

  constructor(firstWorker: number, seed = 3) {
    const rnd = seededRandom(seed);
    const events: KvEvent[] = [];
    for (let w = 0; w < 4; w++) {
      const hashes = Array.from({ length: BLOCKS_PER_EVENT }, (_, j) => BigInt((w + 1) * 1000 + j));
      const blocks = hashes.map((blockHash) => ({ blockHash, tokenIds: Array.from({ length: BLOCK }, () => Math.floor(rnd() * 128_000)) }));
      const workerId = BigInt(firstWorker + w);
      events.push(create(KvEventSchema, { workerId, eventId: ID_BASE, data: { case: "stored", value: { blocks } } }));
      events.push(create(KvEventSchema, { workerId, eventId: ID_BASE, data: { case: "removed", value: { blockHashes: hashes } } }));
    }
    this.blocksPerMessage = 4 * BLOCKS_PER_EVENT;
    this.bytes = Buffer.from(toBinary(IngestKvEventsRequestSchema, create(IngestKvEventsRequestSchema, { events })));
    // Find each event's event_id (field 3) bytes: events are field 1 of the request.
    for (let o = 0; o < this.bytes.length; ) {
      const [len, body] = readVarint(this.bytes, o + 1);
      let p = readVarint(this.bytes, body + 1)[1]; // worker_id (field 1)
      if (this.bytes[p] !== 0x18) throw new Error("template: event_id does not follow worker_id");
      this.idAt.push(p + 1);
      o = body + len;
    }
  }

  /** The template with fresh event ids (per worker: stored then removed, consecutive). */
  next(): Buffer {
    const out = Buffer.from(this.bytes);
    for (let e = 0; e < this.idAt.length; e++) {
      let v = ID_BASE + this.id + BigInt(e & 1);
      let p = this.idAt[e];
      for (let k = 0; k < 8; k++, v >>= 7n) out[p++] = Number(v & 0x7fn) | 0x80;
      out[p] = Number(v);
    }
    this.id += 2n;
    return out;
  }
}
