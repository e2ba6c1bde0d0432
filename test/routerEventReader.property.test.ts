// The flat RouterEvent reader (src/decoding/dynamo/routerEventReader.ts)
// against its reference, the codec's eventPlaneEvents()
// (protocols/routerEventCodec.ts) + toEventBatch(): random event-plane
// messages as Dynamo's publishers write them (an rmp-serde named EventEnvelope
// whose bin payload is a Vec<RouterEvent>; one RouterEvent; a bare RouterEvent;
// the ZMQ plane's 4-frame message around the same envelope), every msgpack
// int width, u64 hashes >= 2^63 as uint64 and as negative int64, parents,
// start_position, mm_extra_info nil, residency_domain worker; and what it must
// hand back: clears, other tiers, cache-owner and unknown domains, state
// sources, floats and strings where ints go, negative dp ranks, missing and
// extra fields, maps where scalars go, deep nesting, duplicate keys,
// truncation, flipped bytes, trailing bytes. Whenever the reader answers, its
// batch must be word for word toEventBatch() of the reference's events, with
// no event skipped and no throw; when it hands back, the reference runs, so
// the outcome is the reference's by construction. Common-case messages must
// all be answered, so the comparison is not vacuous.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RouterEventReader } from "../src/decoding/dynamo/routerEventReader.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { eventPlaneEvents } from "../src/protocols/routerEventCodec.js";
import { decodeEventPlaneMessage } from "../src/sources/dynamoZmq/dynamoZmqSource.js";
import { seededRandom } from "../src/util/random.js";
import { DEEP, F, M, Raw, type Rnd, Writer, oddMsgpackValue, pick } from "./support/msgpackWriter.js";


interface Gen {
  rnd: Rnd;
  /** Cleared when the message uses anything beyond the reader's common case. */
  common: boolean;
  /** Probability of an unusual value. */
  odd: number;
}

/** A u64 as a publisher may write it: small, >= 2^63 (uint64), negative (int64, its bits reinterpreted), any width. */
function u64Value(g: Gen): bigint {
  const r = g.rnd();
  if (r < 0.35) return BigInt.asUintN(64, BigInt(Math.floor(g.rnd() * 2 ** 32)) * 2n ** 32n + BigInt(Math.floor(g.rnd() * 2 ** 32)));
  if (r < 0.55) return BigInt(Math.floor(g.rnd() * 1000));
  if (r < 0.7) return -BigInt(Math.floor(g.rnd() * 2 ** 40)) - 1n;
  if (r < 0.8) return -BigInt(Math.floor(g.rnd() * 32)) - 1n; // negative fixint
  return BigInt(Math.floor(g.rnd() * 2 ** 53));
}


/** An unusual value for a field: the reader must hand it back, or read it exactly as the reference does. */
function oddValue(g: Gen): unknown {
  g.common = false;
  return oddMsgpackValue(g.rnd, ["7", "device", "worker"]);
}

/** Entries of a map, each value sometimes replaced by an odd one, sometimes a key repeated, sometimes one left out. */
function entries(g: Gen, fields: [string, unknown][], required: readonly string[]): M {
  const { rnd } = g;
  let out: [unknown, unknown][] = fields.map(([k, v]) => [k, rnd() < g.odd / 5 ? oddValue(g) : v]);
  if (rnd() < g.odd / 4 && out.length > 0) {
    const [k] = out.splice(Math.floor(rnd() * out.length), 1)[0];
    if (required.includes(k as string)) g.common = false;
  }
  if (rnd() < 0.08) out.push([pick(rnd, ["future_field", "note", "x"]), pick(rnd, [null, 1, "x", [1, 2], 2n ** 63n])]); // fields the reference ignores
  if (rnd() < g.odd / 4 && out.length > 0) {
    out.push([pick(rnd, [...fields.map(([k]) => k), "__proto__"]), out[0][1]]); // a repeated key
    g.common = false;
  }
  if (rnd() < 0.3) out = out.reverse(); // any order is valid msgpack
  return new M(out);
}

function blocks(g: Gen): M[] {
  return Array.from({ length: Math.floor(g.rnd() * 5) }, () => {
    const f: [string, unknown][] = [
      ["block_hash", u64Value(g)],
      ["tokens_hash", u64Value(g)],
    ];
    // rmp-serde writes mm_extra_info (nil when absent); older publishers leave it out.
    if (g.rnd() < 0.6) f.push(["mm_extra_info", null]);
    if (g.rnd() < 0.03) (f.push(["mm_extra_info", new M([["mm_objects", [new M([["mm_hash", 5], ["offsets", [[0, 3]]]])]]])]), (g.common = false));
    if (g.rnd() < 0.05) f.push(["sequence_hash", u64Value(g)]); // our snapshots' field: ignored on the event plane
    return entries(g, f, ["block_hash", "tokens_hash"]);
  });
}

function data(g: Gen): unknown {
  const { rnd } = g;
  const r = rnd();
  if (r < 0.6) {
    const f: [string, unknown][] = [
      ["parent_hash", rnd() < 0.4 ? null : u64Value(g)],
      ["blocks", blocks(g)],
    ];
    if (rnd() < 0.4) f.splice(1, 0, ["start_position", rnd() < 0.3 ? null : Math.floor(rnd() * 5000)]);
    const variant: [unknown, unknown][] = [["stored", entries(g, f, ["blocks"])]];
    if (rnd() < g.odd / 4) (variant.push([pick(rnd, ["extra", "removed", "cleared"]), pick(rnd, [1, null, "x"])]), (g.common = false)); // not one variant
    return new M(variant);
  }
  if (r < 0.95) {
    const hashes = Array.from({ length: Math.floor(rnd() * 5) }, () => u64Value(g));
    return new M([["removed", entries(g, [["block_hashes", hashes]], ["block_hashes"])]]);
  }
  g.common = false;
  return pick(rnd, ["cleared", new M([["cleared", null]]), new M([["moved", 1]]), new M([]), new M([["stored", new M([["blocks", []]])], ["removed", new M([["block_hashes", []]])]])]);
}

function routerEvent(g: Gen): M {
  const { rnd } = g;
  const ev: [string, unknown][] = [
    ["event_id", u64Value(g)],
    ["data", data(g)],
  ];
  if (rnd() < 0.8) ev.push(["dp_rank", rnd() < 0.1 ? null : pick(rnd, [0, 1, 7, 2 ** 32 - 1])]);
  const f: [string, unknown][] = [["worker_id", u64Value(g)]];
  const t = rnd();
  if (t < 0.5) f.push(["storage_tier", "device"]);
  else if (t < 0.55) f.push(["storage_tier", null]);
  else if (t < 0.62) (f.push(["storage_tier", pick(rnd, ["host_pinned", "disk", "external", "Device", "gpu"])]), (g.common = false));
  const d = rnd();
  if (d < 0.5) f.push(["residency_domain", "worker"]); // current publishers
  else if (d < 0.56) (f.push(["residency_domain", pick(rnd, ["cache_owner", null, "owner", 1])]), (g.common = false));
  f.push(["event", entries(g, ev, ["event_id", "data"])]);
  if (rnd() < 0.05) f.push(["state_source", null]);
  else if (rnd() < 0.03) (f.push(["state_source", new M([["pool", 1]])]), (g.common = false));
  return entries(g, f, ["worker_id", "event"]);
}

/** An event-plane message: mostly the named envelope over a Vec<RouterEvent>, as Dynamo's event plane sends it. */
function message(g: Gen): Uint8Array {
  const { rnd } = g;
  const list = Array.from({ length: Math.floor(rnd() * 4) }, () => routerEvent(g));
  const shape = rnd();
  let value: unknown;
  if (shape < 0.1) value = list.length > 0 ? list[0] : routerEvent(g); // a bare RouterEvent (no envelope)
  else {
    const inner = new Writer(rnd);
    inner.value(shape < 0.2 ? (list[0] ?? routerEvent(g)) : list); // one RouterEvent (older publishers) or the list
    let payload = inner.out;
    if (rnd() < g.odd / 3) {
      g.common = false;
      payload = rnd() < 0.5 ? payload.slice(0, Math.floor(rnd() * payload.length)) : [...payload, 0xc0];
    }
    const env: [string, unknown][] = [
      ["topic", "kv-events"],
      ["publisher_id", u64Value(g)],
      ["sequence", BigInt(Math.floor(rnd() * 1e6))],
      ["published_at", BigInt(1_733_300_000_000 + Math.floor(rnd() * 1e6))],
      ["payload", Uint8Array.from(payload)],
    ];
    if (rnd() < 0.3) env.push(["published_at_ns", 1_733_300_000_000_000_000n]);
    if (rnd() < g.odd / 5) (env.splice(4, 1, ["payload", pick(rnd, [null, "bytes", [1, 2]])]), (g.common = false));
    if (rnd() < 0.2) env.reverse();
    value = new M(env);
  }
  const w = new Writer(rnd);
  w.value(value);
  let bytes = w.out;
  if (rnd() < g.odd) {
    g.common = false;
    const m = rnd();
    if (m < 0.4) bytes = bytes.slice(0, Math.floor(rnd() * bytes.length));
    else if (m < 0.75) bytes[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256);
    else if (m < 0.9) bytes = [...bytes, pick(rnd, [0x00, 0xc0, 0x91])]; // trailing bytes
    else bytes = [0x91, ...bytes]; // wrapped: not an envelope
  }
  return Uint8Array.from(bytes);
}

/** The ZMQ plane's framing (zmq_transport.rs): topic, publisher_id and sequence (u64 BE), then a version-1 frame with a u32 BE length. */
function zmqFrames(envelope: Uint8Array, sequence: bigint): Buffer[] {
  const u64be = (v: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(v);
    return b;
  };
  const frame = Buffer.alloc(5 + envelope.length);
  frame[0] = 1;
  frame.writeUInt32BE(envelope.length, 1);
  frame.set(envelope, 5);
  return [Buffer.from("kv-events"), u64be(7n), u64be(sequence), frame];
}

/** Reader vs reference on one message; true when the reader answered. */
function check(reader: RouterEventReader, bytes: Uint8Array): boolean {
  const where = Buffer.from(bytes).toString("hex");
  let expected: IndexEvent[] | undefined;
  let skipped = 0;
  try {
    expected = eventPlaneEvents(bytes, () => skipped++);
  } catch {
    expected = undefined;
  }
  const got = reader.read(bytes);
  if (got === undefined) return false;
  assert.ok(expected !== undefined, `the reader answered a message the reference refuses: ${where}`);
  assert.equal(skipped, 0, `the reader answered a message the reference skips events of: ${where}`);
  const ref = toEventBatch(expected);
  assert.equal(got.count, ref.count, where);
  assert.deepStrictEqual([...got.events], [...ref.events], `event words: ${where}`);
  assert.deepStrictEqual([...got.items], [...ref.items], `item words (hashes): ${where}`);
  return true;
}

describe("flat RouterEvent reader vs the codec + toEventBatch", () => {
  it("random and hostile event-plane messages, both planes' framing: the reference's batch, or handed back", () => {
    const rnd = seededRandom(21);
    const reader = new RouterEventReader();
    let common = 0;
    let answered = 0;
    let refused = 0;
    const n = 3000;
    for (let i = 0; i < n; i++) {
      const g: Gen = { rnd, common: true, odd: i % 3 === 0 ? 0 : 0.2 };
      let bytes = message(g);
      // The ZMQ plane: the same envelope inside its frames, as the source unwraps it.
      if (i % 4 === 1) bytes = decodeEventPlaneMessage(zmqFrames(bytes, BigInt(i))).envelope;
      const fast = check(reader, bytes);
      if (g.common) {
        common++;
        assert.ok(fast, `a common-case message was handed back: ${Buffer.from(bytes).toString("hex")}`);
      }
      if (fast) answered++;
      else refused++;
    }
    assert.ok(common > n / 4 && refused > n / 10, `common ${common}, answered ${answered}, handed back ${refused} of ${n}`);
    if (process.env.DEBUG_DECODER) console.log({ n, common, answered, refused });
  });

  const w = (v: unknown) => {
    const writer = new Writer(() => 0);
    writer.value(v);
    return Uint8Array.from(writer.out);
  };
  const envelope = (payload: unknown) => w(new M([["topic", "kv-events"], ["publisher_id", 1], ["sequence", 2], ["published_at", 3], ["payload", w(payload)]]));
  const stored = (over: [string, unknown][] = []) =>
    new M([
      ["worker_id", 2n ** 64n - 1n],
      ["storage_tier", "device"],
      ["residency_domain", "worker"],
      ["event", new M([["event_id", 2n ** 63n + 9n], ["data", new M([["stored", new M([["parent_hash", -5n], ["start_position", 3], ["blocks", [new M([["block_hash", 2n ** 63n], ["tokens_hash", -1n], ["mm_extra_info", null]])]]])]])], ["dp_rank", 3]])],
      ...over,
    ]);

  it("named cases: u64 above 2^63, negative int64 hashes, parents, dp ranks, bare and single RouterEvents", () => {
    const reader = new RouterEventReader();
    const fast = (bytes: Uint8Array) => assert.ok(check(reader, bytes), Buffer.from(bytes).toString("hex"));
    fast(envelope([stored()]));
    fast(envelope(stored()));
    fast(w(stored()));
    fast(envelope([]));
    fast(envelope([stored(), new M([["worker_id", 5], ["event", new M([["event_id", 1], ["data", new M([["removed", new M([["block_hashes", [1, -1n, 2n ** 63n]]])]])]])]])]));
  });

  it("named cases handed back: clears, lower tiers, cache owners, state sources, floats, negative dp ranks, deep nesting, repeated keys, truncation, trailing bytes", () => {
    const reader = new RouterEventReader();
    const back = (bytes: Uint8Array) => assert.equal(check(reader, bytes), false, Buffer.from(bytes).toString("hex"));
    const withEvent = (ev: [string, unknown][]) => new M([["worker_id", 1], ["event", new M(ev)]]);
    back(envelope([withEvent([["event_id", 1], ["data", "cleared"]])]));
    back(envelope([new M([...stored().entries.filter(([k]) => k !== "storage_tier"), ["storage_tier", "host_pinned"]])]));
    back(envelope([new M([...stored().entries.filter(([k]) => k !== "residency_domain"), ["residency_domain", "cache_owner"]])]));
    back(envelope([new M([...stored().entries.filter(([k]) => k !== "residency_domain"), ["residency_domain", null]])]));
    back(envelope([stored([["state_source", new M([["pool", 1]])]])]));
    back(envelope([withEvent([["event_id", new F(1.5)], ["data", new M([["removed", new M([["block_hashes", []]])]])]])]));
    back(envelope([withEvent([["event_id", 1], ["dp_rank", -1], ["data", new M([["removed", new M([["block_hashes", []]])]])]])]));
    back(envelope([withEvent([["event_id", 1], ["data", new M([["removed", new M([["block_hashes", [DEEP]]])]])]])]));
    back(envelope([withEvent([["event_id", 1], ["data", new M([["removed", new M([["block_hashes", []]])]])], ["future", DEEP]])]));
    back(envelope([stored([["worker_id", 3]])]));
    back(Uint8Array.from([...envelope([stored()]), 0xc0]));
    const whole = envelope([stored()]);
    for (let cut = 0; cut < whole.length; cut++) back(whole.subarray(0, cut));
  });
});
