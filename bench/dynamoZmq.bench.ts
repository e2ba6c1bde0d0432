// Dynamo's ZMQ event plane, decoding: multipart messages (Dynamo's frames
// around a MessagePack envelope of one stored RouterEvent of 4 blocks) into
// index events, against the baseline of decoding the same envelope as it
// arrives on the core-NATS event plane (no frame split). Both in this run.
import { decodeEventPlaneMessage } from "../src/sources/dynamoZmq/dynamoZmqSource.js";
import { DecodeError, decodeRouterEvent, encodeMsgpack, parseEventPlane } from "../src/protocols/routerEventCodec.js";

export interface ZmqPlaneBench {
  messages: number;
  eventsPerSec: { natsEnvelope: number; zmqFrames: number };
}

function envelopeOf(i: number): Uint8Array {
  const event = {
    worker_id: 0xfedc_ba98_7654_3210n,
    event: {
      event_id: BigInt(i + 1),
      data: {
        stored: {
          parent_hash: null,
          blocks: Array.from({ length: 4 }, (_, b) => ({ block_hash: BigInt(i * 4 + b) * 0x9e37_79b9n, tokens_hash: BigInt(i * 7 + b) })),
        },
      },
      dp_rank: 0n,
    },
  };
  return encodeMsgpack({ topic: "kv-events", publisher_id: 7n, sequence: BigInt(i), published_at: 1_700_000_000_000n, payload: encodeMsgpack(event) });
}

function framesOf(envelope: Uint8Array, seq: number): Uint8Array[] {
  const u64 = (v: bigint) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v);
    return b;
  };
  const frame = new Uint8Array(5 + envelope.length);
  frame[0] = 1;
  new DataView(frame.buffer).setUint32(1, envelope.length);
  frame.set(envelope, 5);
  return [new TextEncoder().encode("kv-events"), u64(7n), u64(BigInt(seq)), frame];
}

function decodeAll(envelope: Uint8Array): number {
  let n = 0;
  for (const v of parseEventPlane(envelope)) if (decodeRouterEvent(v).kind === "event") n++;
  return n;
}

export function runDynamoZmqBench(messages: number, repeats: number): ZmqPlaneBench {
  const envelopes = Array.from({ length: messages }, (_, i) => envelopeOf(i));
  const multiparts = envelopes.map((e, i) => framesOf(e, i));
  const sides = {
    natsEnvelope: () => envelopes.reduce((n, e) => n + decodeAll(e), 0),
    zmqFrames: () => multiparts.reduce((n, m) => n + decodeAll(decodeEventPlaneMessage(m).envelope), 0),
  };
  const best = { natsEnvelope: 0, zmqFrames: 0 };
  for (const fn of Object.values(sides)) fn(); // warm-up, so neither side pays the JIT
  // Interleaved repeats, best of each: both sides see the same machine load and GC pressure.
  for (let r = 0; r < repeats; r++) {
    for (const [name, fn] of Object.entries(sides) as [keyof typeof best, () => number][]) {
      const t0 = performance.now();
      const events = fn();
      if (events !== messages) throw new DecodeError(`decoded ${events} of ${messages} events`);
      best[name] = Math.max(best[name], events / ((performance.now() - t0) / 1000));
    }
  }
  return { messages, eventsPerSec: best };
}
