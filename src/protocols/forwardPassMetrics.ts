// Dynamo's ForwardPassMetrics (FPM): what an engine's scheduler reports after
// each forward pass, and about once a second when idle, on the event-plane
// topic `forward-pass-metrics`. The payload is a MessagePack map (msgspec's
// default struct encoding; rmp-serde's struct-map in Dynamo's Rust
// publisher) inside the event plane's MessagePack envelope:
//   {version: 1, worker_id: "<u64 as text>", dp_rank, counter_id, wall_time,
//    scheduled_requests: {num_prefill_requests, sum_prefill_tokens, ..., num_decode_requests, ...},
//    queued_requests:    {num_prefill_requests, sum_prefill_tokens, ..., num_decode_requests, ...}}
// The router reads only what Dynamo's router reads (fpm_subscriber.rs):
// running = scheduled prefill + decode requests, waiting = queued prefill +
// decode requests, each count clamped at 0; a negative dp_rank means rank 0;
// any other version is skipped. docs/dynamo.md cites the sources.
import { DecodeError, decodeMsgpack } from "./routerEventCodec.js";

/** Dynamo's FPM_TOPIC (lib/llm/src/fpm_publisher.rs). */
export const FPM_TOPIC = "forward-pass-metrics";
/** Dynamo's FPM_VERSION: the only schema version its router (and this one) reads. */
export const FPM_VERSION = 1;
/**
 * A real message is about 400 bytes (two small maps of counters); anything past
 * this is not an FPM message and is refused before it is decoded.
 */
export const MAX_FPM_MESSAGE_BYTES = 64 * 1024;

/** One engine rank's batch as its FPM message states it. */
export interface FpmReport {
  workerId: bigint;
  dpRank: number;
  running: number;
  waiting: number;
}

/** Why a message was left out; `detail` says what was wrong with it. */
export class FpmSkip extends Error {
  constructor(
    readonly reason: "malformed" | "oversized" | "unknown_version",
    detail: string,
  ) {
    super(detail);
  }
}

const U64_MAX = (1n << 64n) - 1n;
const I32_MIN = -(2 ** 31);
const I32_MAX = 2 ** 31 - 1;

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** An integer field; absent means `fallback` (Dynamo's serde(default)); anything else not an integer in range is malformed. */
function int(o: Record<string, unknown>, key: string, fallback: number, min: number, max: number, path: string): number {
  const v = o[key];
  if (v === undefined) return fallback;
  const n = typeof v === "bigint" ? (v >= BigInt(min) && v <= BigInt(max) ? Number(v) : NaN) : typeof v === "number" && Number.isInteger(v) ? v : NaN;
  if (Number.isNaN(n) || n < min || n > max) throw new FpmSkip("malformed", `${path}${key}: expected an integer in [${min}, ${max}], got ${String(v).slice(0, 40)}`);
  return n;
}

/** A nested request-count map; absent means all zero. */
function counts(o: Record<string, unknown>, key: string): { prefill: number; decode: number } {
  const v = o[key];
  if (v === undefined) return { prefill: 0, decode: 0 };
  if (!isMap(v)) throw new FpmSkip("malformed", `${key}: expected a map`);
  const path = `${key}.`;
  return {
    prefill: Math.max(0, int(v, "num_prefill_requests", 0, I32_MIN, I32_MAX, path)),
    decode: Math.max(0, int(v, "num_decode_requests", 0, I32_MIN, I32_MAX, path)),
  };
}

/**
 * The FPM payload (the bytes inside the envelope) → the rank's batch. Throws FpmSkip:
 * `unknown_version` for a version other than 1 (a missing version reads 0, as in Dynamo),
 * `malformed` for anything that is not such a map or whose worker_id is not a u64 in text.
 */
export function decodeFpmPayload(payload: Uint8Array): FpmReport {
  let v: unknown;
  try {
    v = decodeMsgpack(payload);
  } catch (err) {
    throw new FpmSkip("malformed", `payload is not MessagePack: ${(err as Error).message}`);
  }
  if (!isMap(v)) throw new FpmSkip("malformed", "payload: expected a map (ForwardPassMetrics)");
  const version = int(v, "version", 0, I32_MIN, I32_MAX, "");
  if (version !== FPM_VERSION) throw new FpmSkip("unknown_version", `version ${version}; this router reads version ${FPM_VERSION}`);
  const id = v.worker_id ?? "";
  // Dynamo's worker_id is the worker's runtime connection id, a u64, as decimal text.
  if (typeof id !== "string" || !/^\d{1,20}$/.test(id) || BigInt(id) > U64_MAX) {
    throw new FpmSkip("malformed", `worker_id: expected a u64 in decimal text, got ${JSON.stringify(typeof id === "string" ? id.slice(0, 40) : typeof id)}`);
  }
  const dpRank = int(v, "dp_rank", 0, Number.MIN_SAFE_INTEGER, 2 ** 32 - 1, "");
  const scheduled = counts(v, "scheduled_requests");
  const queued = counts(v, "queued_requests");
  return { workerId: BigInt(id), dpRank: Math.max(0, dpRank), running: scheduled.prefill + scheduled.decode, waiting: queued.prefill + queued.decode };
}

/**
 * An event-plane message (the MessagePack EventEnvelope {topic, publisher_id, sequence,
 * published_at, payload}) → its FPM report. An envelope of another topic is malformed here:
 * FPM subscriptions carry only this topic (Dynamo's subscriber filters on it too).
 */
export function decodeFpmEnvelope(bytes: Uint8Array): FpmReport {
  if (bytes.length > MAX_FPM_MESSAGE_BYTES) throw new FpmSkip("oversized", `${bytes.length} bytes; an FPM message is at most ${MAX_FPM_MESSAGE_BYTES}`);
  let envelope: unknown;
  try {
    envelope = decodeMsgpack(bytes);
  } catch (err) {
    throw new FpmSkip("malformed", `envelope is not MessagePack: ${err instanceof DecodeError ? err.message : (err as Error).message}`);
  }
  if (!isMap(envelope)) throw new FpmSkip("malformed", "envelope: expected a map");
  if (envelope.topic !== undefined && envelope.topic !== FPM_TOPIC) throw new FpmSkip("malformed", `envelope.topic: expected ${FPM_TOPIC}, got ${String(envelope.topic).slice(0, 40)}`);
  if (!(envelope.payload instanceof Uint8Array)) throw new FpmSkip("malformed", "envelope.payload: expected bytes");
  return decodeFpmPayload(envelope.payload);
}
