// Dynamo's RouterEvent <-> our IndexEvent. The same decoder serves JSON
// (JetStream mode; parsed losslessly so u64 hashes keep every bit) and
// MessagePack (the core-NATS event plane; bigints via useBigInt64).
//
// RouterEvent = { worker_id, storage_tier?, residency_domain?, event: { event_id, dp_rank?, data } }
// data = {"stored": {parent_hash, start_position?, blocks: [{block_hash, tokens_hash, ...}]}}
//      | {"removed": {block_hashes}} | "cleared"
// (lib/kv-router/src/protocols.rs; see docs/dynamo.md for what each field does here.)
import { decode as msgpackDecode, encode as msgpackEncode } from "@msgpack/msgpack";
import { parse as losslessParse, stringify as losslessStringify } from "lossless-json";
import type { ClearScope, IndexEvent, StorageTier } from "./events.js";
import { MAX_NESTING_DEPTH, jsonDepth, valueDepth } from "../util/nesting.js";

export class DecodeError extends Error {}

const U64_MAX = (1n << 64n) - 1n;

function parseNumber(text: string): bigint | number {
  return /^-?\d+$/.test(text) ? BigInt(text) : Number(text);
}

/** JSON with every integer as a bigint (u64 hashes exceed 2^53); DecodeError past MAX_NESTING_DEPTH. */
export function parseJsonLossless(text: string): unknown {
  // lossless-json parses recursively: refuse deep nesting before it overflows the stack.
  if (jsonDepth(text) > MAX_NESTING_DEPTH) throw new DecodeError(`JSON nested deeper than ${MAX_NESTING_DEPTH} levels`);
  return losslessParse(text, undefined, parseNumber);
}

export function stringifyJson(value: unknown): string {
  return losslessStringify(value) ?? "null";
}

const MSGPACK_OPTS = { useBigInt64: true } as const;

/** MessagePack to a value; DecodeError past MAX_NESTING_DEPTH (the decoder is iterative, so checking after is safe). */
export function decodeMsgpack(bytes: Uint8Array): unknown {
  const value = msgpackDecode(bytes, MSGPACK_OPTS);
  if (valueDepth(value) > MAX_NESTING_DEPTH) throw new DecodeError(`nested deeper than ${MAX_NESTING_DEPTH} levels`);
  return value;
}

export function encodeMsgpack(value: unknown): Uint8Array {
  return msgpackEncode(value, MSGPACK_OPTS);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** A u64 (hashes may arrive as signed i64: reinterpret the bits, as Dynamo does). */
function u64(v: unknown, path: string): bigint {
  let b: bigint;
  if (typeof v === "bigint") b = v;
  else if (typeof v === "number" && Number.isSafeInteger(v)) b = BigInt(v);
  else if (typeof v === "string" && /^-?\d+$/.test(v)) b = BigInt(v);
  else throw new DecodeError(`${path}: expected an unsigned 64-bit integer, got ${describe(v)}`);
  if (b < -(1n << 63n) || b > U64_MAX) throw new DecodeError(`${path}: ${b} does not fit in 64 bits`);
  return BigInt.asUintN(64, b);
}

function u32(v: unknown, path: string): number {
  const b = u64(v, path);
  if (b > 0xffffffffn) throw new DecodeError(`${path}: ${b} does not fit in 32 bits`);
  return Number(b);
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing (field missing)";
  if (v === null) return "null";
  if (typeof v === "bigint") return `${v}`;
  // Nested bigints (a list where a hash belongs) or deep nesting must not make the error message itself throw.
  if (valueDepth(v, 4) > 4) return Array.isArray(v) ? "a deeply nested list" : "a deeply nested value";
  let s: string | undefined;
  try {
    s = JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x));
  } catch {
    return typeof v;
  }
  return s === undefined ? typeof v : s.length > 60 ? s.slice(0, 60) + "…" : s;
}

const STORAGE_TIERS: ReadonlySet<string> = new Set<StorageTier>(["device", "host_pinned", "disk", "external"]);

/** Why a well-formed RouterEvent was left out (counted by reason, logged once per worker). */
export type SkipReason = "unknown_storage_tier" | "unknown_residency_domain" | "cache_owner_residency";

export type DecodedRouterEvent =
  | { kind: "event"; event: IndexEvent }
  | { kind: "skipped"; workerId: bigint; reason: SkipReason; detail: string };

type Domain = "worker" | "cache_owner" | undefined;

/**
 * Decodes one RouterEvent object (already parsed from JSON or MessagePack).
 * `snapshot`: it comes from our own snapshot, whose blocks also state their
 * `sequence_hash` (restored exactly; ignored anywhere else).
 */
export function decodeRouterEvent(value: unknown, snapshot = false): DecodedRouterEvent {
  if (!isObject(value)) throw new DecodeError(`RouterEvent: expected an object, got ${describe(value)}`);
  const workerId = u64(value.worker_id, "worker_id");
  if (!isObject(value.event)) throw new DecodeError(`event: expected an object, got ${describe(value.event)}`);
  // storage_tier: serde default (device) when absent; Dynamo's snake_case names only.
  const rawTier = value.storage_tier ?? "device";
  if (typeof rawTier !== "string" || !STORAGE_TIERS.has(rawTier)) {
    return { kind: "skipped", workerId, reason: "unknown_storage_tier", detail: `storage_tier ${describe(rawTier)}` };
  }
  const tier = rawTier as StorageTier;
  // residency_domain: absent = legacy; an explicit null or unknown value is unsupported (as in Dynamo).
  let domain: Domain;
  if ("residency_domain" in value && value.residency_domain !== undefined) {
    const d = value.residency_domain;
    if (d !== "worker" && d !== "cache_owner") {
      return { kind: "skipped", workerId, reason: "unknown_residency_domain", detail: `residency_domain ${describe(d)}` };
    }
    domain = d;
  }
  const ev = value.event;
  const eventId = u64(ev.event_id, "event.event_id");
  const dpRank = ev.dp_rank === undefined || ev.dp_rank === null ? 0 : u32(ev.dp_rank, "event.dp_rank");
  const head = tier === "device" ? { workerId, dpRank, eventId } : { workerId, dpRank, eventId, tier };
  const data = ev.data;
  if (data === "cleared" || (isObject(data) && "cleared" in data)) {
    // A clear names no tier (device is its placeholder): it acts on every tier of the rank.
    const scope: ClearScope = domain ?? "all";
    return { kind: "event", event: { workerId, dpRank, eventId, kind: "cleared", scope } };
  }
  if (!isObject(data)) throw new DecodeError(`event.data: expected "cleared", {"stored":…} or {"removed":…}, got ${describe(data)}`);
  // Cache-owner residency belongs to a stable cache owner that only Dynamo's
  // control plane maps to workers; kv-router cannot route to it.
  const cacheOwned = (): DecodedRouterEvent => ({
    kind: "skipped",
    workerId,
    reason: "cache_owner_residency",
    detail: `residency_domain cache_owner on ${tier}`,
  });
  if (isObject(data.stored)) {
    const st = data.stored;
    if (!Array.isArray(st.blocks)) throw new DecodeError(`event.data.stored.blocks: expected a list, got ${describe(st.blocks)}`);
    if (st.start_position !== undefined && st.start_position !== null) u32(st.start_position, "event.data.stored.start_position");
    const blocks = st.blocks.map((b: unknown, i: number) => {
      const p = `event.data.stored.blocks[${i}]`;
      if (!isObject(b)) throw new DecodeError(`${p}: expected an object, got ${describe(b)}`);
      const block = { externalHash: u64(b.block_hash, `${p}.block_hash`), localHash: u64(b.tokens_hash, `${p}.tokens_hash`) };
      return snapshot && b.sequence_hash !== undefined ? { ...block, sequenceHash: u64(b.sequence_hash, `${p}.sequence_hash`) } : block;
    });
    const parent = st.parent_hash === undefined || st.parent_hash === null ? undefined : u64(st.parent_hash, "event.data.stored.parent_hash");
    if (domain === "cache_owner") return cacheOwned();
    return { kind: "event", event: { ...head, kind: "stored", parentHash: parent, blocks } };
  }
  if (isObject(data.removed)) {
    const hashes = data.removed.block_hashes;
    if (!Array.isArray(hashes)) throw new DecodeError(`event.data.removed.block_hashes: expected a list, got ${describe(hashes)}`);
    const blockHashes = hashes.map((h: unknown, i: number) => u64(h, `event.data.removed.block_hashes[${i}]`));
    if (domain === "cache_owner") return cacheOwned();
    return { kind: "event", event: { ...head, kind: "removed", blockHashes } };
  }
  throw new DecodeError(`event.data: unknown variant ${describe(Object.keys(data))}`);
}

/** Best-effort worker id of an undecodable message, for once-per-worker logging. */
export function workerIdOf(value: unknown): string {
  if (isObject(value)) {
    try {
      return String(u64(value.worker_id, "worker_id"));
    } catch {
      /* fall through */
    }
  }
  return "unknown";
}

/** The Dynamo RouterEvent object for an IndexEvent (bigints; encode with stringifyJson or encodeMsgpack). */
export function toRouterEvent(e: IndexEvent): Record<string, unknown> {
  let data: unknown;
  switch (e.kind) {
    case "stored":
      data = {
        stored: {
          parent_hash: e.parentHash ?? null,
          // sequence_hash only in our own snapshots (dumped blocks state it).
          blocks: e.blocks.map((b) =>
            b.sequenceHash === undefined
              ? { block_hash: b.externalHash, tokens_hash: b.localHash }
              : { block_hash: b.externalHash, tokens_hash: b.localHash, sequence_hash: b.sequenceHash },
          ),
        },
      };
      break;
    case "removed":
      data = { removed: { block_hashes: e.blockHashes } };
      break;
    case "cleared":
      data = "cleared";
      break;
  }
  const out: Record<string, unknown> = { worker_id: e.workerId };
  if (e.tier !== undefined && e.tier !== "device") out.storage_tier = e.tier;
  if (e.kind === "cleared" && e.scope !== undefined && e.scope !== "all") out.residency_domain = e.scope;
  out.event = { event_id: e.eventId, data, dp_rank: e.dpRank };
  return out;
}

/** Parses a JetStream message body: one RouterEvent, or (our extension) a list of them. */
export function parseJsonEvents(bytes: Uint8Array): unknown[] {
  let value: unknown;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (err) {
    throw new DecodeError(`not UTF-8 JSON: ${(err as Error).message}`);
  }
  try {
    value = parseJsonLossless(text);
  } catch (err) {
    throw err instanceof DecodeError ? err : new DecodeError(`not JSON: ${(err as Error).message}`);
  }
  return Array.isArray(value) ? value : [value];
}

/**
 * Parses an event-plane message: a MessagePack envelope {topic, publisher_id,
 * sequence, published_at, payload} whose payload bytes hold a Vec<RouterEvent>
 * (current publishers) or one RouterEvent (older ones).
 */
export function parseEventPlane(bytes: Uint8Array): unknown[] {
  let envelope: unknown;
  try {
    envelope = decodeMsgpack(bytes);
  } catch (err) {
    throw new DecodeError(`not MessagePack: ${(err as Error).message}`);
  }
  if (!isObject(envelope)) throw new DecodeError(`envelope: expected a map, got ${describe(envelope)}`);
  // A bare RouterEvent (no envelope) is accepted too.
  if ("worker_id" in envelope) return [envelope];
  const payload = envelope.payload;
  if (!(payload instanceof Uint8Array)) throw new DecodeError(`envelope.payload: expected bytes, got ${describe(payload)}`);
  let inner: unknown;
  try {
    inner = decodeMsgpack(payload);
  } catch (err) {
    throw new DecodeError(`envelope.payload: not MessagePack: ${(err as Error).message}`);
  }
  return Array.isArray(inner) ? inner : [inner];
}

/** A RouterEvent decodeRouterEvent() left out (unknown tier, cache-owner blocks, ...). */
export type SkippedRouterEvent = Extract<DecodedRouterEvent, { kind: "skipped" }>;

/**
 * The events of one event-plane message (parseEventPlane + decodeRouterEvent),
 * telling `onSkip` about each one left out. Any throw means the message is
 * poison: callers count and skip it whole.
 */
export function eventPlaneEvents(bytes: Uint8Array, onSkip: (skipped: SkippedRouterEvent) => void): IndexEvent[] {
  const events: IndexEvent[] = [];
  for (const v of parseEventPlane(bytes)) {
    const d = decodeRouterEvent(v);
    if (d.kind === "event") events.push(d.event);
    else onSkip(d);
  }
  return events;
}
