// The hot-path IngestKvEvents decoder (src/decoding/ingestDecoder.ts) against
// its oracle, protobuf-es + convert.ts: random and hostile wire bytes —
// fields in any order, packed and unpacked lists, repeated scalars and
// oneofs, unknown fields of every wire type, groups, over-long and
// overflowing varints, wrong wire types, bad UTF-8, truncation, flipped
// bytes. Whenever the decoder answers, its events must be exactly the
// oracle's; when it hands a message back, the server uses the oracle, so
// the outcome (events or the INVALID_ARGUMENT message) is the oracle's by
// construction. The suite also checks that the decoder does answer for the
// great majority of valid messages, so the comparison is not vacuous.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { eventsOf } from "../src/protocols/eventBatch.js";
import { RouterError } from "../src/router/errors.js";
import { decodeIngestRequest } from "../src/server/convert.js";
import { IngestDecoder } from "../src/decoding/ingestDecoder.js";
import { seededRandom } from "../src/util/random.js";
import { type Rnd, Wire, fields, part, u64 } from "./support/wire.js";

function block(rnd: Rnd, blockSize: number): number[] {
  const parts: number[][] = [];
  parts.push(part(rnd, (w) => w.scalar(1, u64(rnd))));
  const r = rnd();
  const withTokens = r < 0.75;
  if (withTokens) {
    const n = rnd() < 0.05 ? Math.floor(rnd() * 2 * blockSize) : blockSize;
    const big = rnd() < 0.03;
    const tokens = Array.from({ length: n }, () => BigInt(big ? Math.floor(rnd() * 2 ** 40) : Math.floor(rnd() * 150_000)));
    if (tokens.length > 0) parts.push(part(rnd, (w) => w.repeated(2, tokens)));
  }
  if (!withTokens ? rnd() < 0.95 : rnd() < 0.03) parts.push(part(rnd, (w) => w.scalar(3, u64(rnd))));
  if (rnd() < 0.03) parts.push(part(rnd, (w) => w.repeated(4, [u64(rnd), u64(rnd)])));
  if (rnd() < 0.04) parts.push(part(rnd, (w) => w.scalar(1, u64(rnd)))); // repeated scalar: last wins
  return fields(rnd, parts);
}

function event(rnd: Rnd, blockSize: number): number[] {
  const parts: number[][] = [];
  parts.push(part(rnd, (w) => w.scalar(1, u64(rnd))));
  if (rnd() < 0.5) parts.push(part(rnd, (w) => w.scalar(2, rnd() < 0.05 ? u64(rnd) : BigInt(Math.floor(rnd() * 8)))));
  parts.push(part(rnd, (w) => w.scalar(3, u64(rnd))));
  if (rnd() < 0.04) parts.push(part(rnd, (w) => w.scalar(3, u64(rnd))));
  const data = () => {
    const r = rnd();
    if (r < 0.7) {
      const sp: number[][] = [];
      if (rnd() < 0.5) sp.push(part(rnd, (w) => w.scalar(1, u64(rnd))));
      const n = rnd() < 0.04 ? 0 : 1 + Math.floor(rnd() * 4);
      for (let i = 0; i < n; i++) sp.push(part(rnd, (w) => w.delimited(2, block(rnd, blockSize))));
      const l = rnd();
      if (l < 0.1) sp.push(part(rnd, (w) => w.delimited(3, [...Buffer.from(`lora-${Math.floor(rnd() * 3)}`)])));
      else if (l < 0.12) sp.push(part(rnd, (w) => w.delimited(3, [...Buffer.from("läufer")])));
      else if (l < 0.13) sp.push(part(rnd, (w) => w.delimited(3, [0x61, 0xff, 0xfe])));
      return part(rnd, (w) => w.delimited(4, fields(rnd, sp)));
    }
    if (r < 0.9) {
      const hashes = Array.from({ length: Math.floor(rnd() * 5) }, () => u64(rnd));
      return part(rnd, (w) => w.delimited(5, hashes.length > 0 ? part(rnd, (x) => x.repeated(1, hashes)) : []));
    }
    return part(rnd, (w) => w.delimited(6, new Wire(rnd).noise().bytes));
  };
  const d = rnd();
  if (d > 0.03) parts.push(data());
  if (d > 0.97 || rnd() < 0.03) parts.push(data()); // a oneof set twice
  return fields(rnd, parts);
}

function request(rnd: Rnd, blockSize: number): Uint8Array {
  const parts: number[][] = [];
  const n = Math.floor(rnd() * 5);
  for (let i = 0; i < n; i++) parts.push(part(rnd, (w) => w.delimited(1, event(rnd, blockSize))));
  if (rnd() < 0.2) parts.push(part(rnd, (w) => w.scalar(2, rnd() < 0.5 ? 1n : BigInt(Math.floor(rnd() * 300)))));
  let bytes = fields(rnd, parts);
  const h = rnd();
  if (h < 0.08) bytes = bytes.slice(0, Math.floor(rnd() * bytes.length)); // truncated
  else if (h < 0.11 && bytes.length > 0) {
    bytes = [...bytes];
    bytes[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256); // a flipped byte
  }
  return Uint8Array.from(bytes);
}

type Outcome = { events: unknown; restore: boolean } | { error: string };

function oracle(bytes: Uint8Array, blockSize: number): Outcome {
  try {
    return decodeIngestRequest(bytes, blockSize, "message 0");
  } catch (err) {
    assert.ok(err instanceof RouterError && err.code === "invalid_argument", `oracle threw ${err}`);
    return { error: err.message };
  }
}

/** What the server does: the decoder, else the oracle. */
function served(decoder: IngestDecoder, bytes: Uint8Array, blockSize: number): { outcome: Outcome; fast: boolean } {
  const fast = decoder.decode(bytes);
  if (fast === undefined) return { outcome: oracle(bytes, blockSize), fast: false };
  return { outcome: { events: eventsOf(fast.batch), restore: fast.restore }, fast: true };
}

function check(decoder: IngestDecoder, bytes: Uint8Array, blockSize: number): { fast: boolean; valid: boolean } {
  const expected = oracle(bytes, blockSize);
  const got = served(decoder, bytes, blockSize);
  assert.deepStrictEqual(got.outcome, expected, `bytes ${Buffer.from(bytes).toString("hex")}`);
  return { fast: got.fast, valid: !("error" in expected) };
}

describe("IngestKvEvents hot-path decoder vs protobuf-es", () => {
  for (const blockSize of [64, 16]) {
    it(`random and hostile messages give the oracle's events or error (block size ${blockSize})`, () => {
      const rnd = seededRandom(blockSize);
      const decoder = new IngestDecoder(blockSize);
      let valid = 0;
      let fast = 0;
      let invalid = 0;
      const n = blockSize === 64 ? 2500 : 600;
      for (let i = 0; i < n; i++) {
        const r = check(decoder, request(rnd, blockSize), blockSize);
        if (r.valid) valid++;
        else invalid++;
        if (r.fast) fast++;
      }
      // Not vacuous: plenty of both outcomes, and the decoder answers most valid messages itself.
      assert.ok(valid > n / 4 && invalid > n / 10, `valid ${valid}, invalid ${invalid}`);
      assert.ok(fast > valid / 2, `decoder answered ${fast} of ${valid} valid messages`);
      if (process.env.DEBUG_DECODER) console.log({ n, valid, invalid, fast });
    });
  }

  const B = 64;
  const tokens = (w: Wire) => w.repeated(2, Array.from({ length: B }, (_, i) => BigInt(i * 1000)));
  const plainRnd = () => 0.5; // no noise, no padding, packed
  const wrapEvent = (ev: number[]) => part(plainRnd, (w) => w.delimited(1, ev));
  const plainEvent = () => {
    const blk = part(plainRnd, (w) => w.tag(1, 0).varint(7n)).concat(part(plainRnd, tokens));
    const stored = part(plainRnd, (w) => w.delimited(2, blk));
    return part(plainRnd, (w) => w.tag(1, 0).varint(3n).tag(3, 0).varint(1n).delimited(4, stored));
  };
  const plain = () => wrapEvent(plainEvent());

  it("a well-formed message is decoded by the hot path itself", () => {
    const decoder = new IngestDecoder(B);
    const bytes = Uint8Array.from(plain());
    assert.ok(decoder.decode(bytes) !== undefined);
    check(decoder, bytes, B);
  });

  it("every truncation of a message gives the oracle's outcome", () => {
    const decoder = new IngestDecoder(B);
    const bytes = plain();
    for (let cut = 0; cut < bytes.length; cut++) check(decoder, Uint8Array.from(bytes.slice(0, cut)), B);
  });

  it("over-long varints, 11-byte varints, wrong wire types, duplicate and unknown fields", () => {
    const decoder = new IngestDecoder(B);
    const base = plain();
    const cases: number[][] = [
      // worker_id as a 10-byte varint (valid) and an 11-byte one (invalid)
      [0x0a, 0, 0x08, 0x83, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
      [0x0a, 0, 0x08, 0x83, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
      // a varint whose 10th byte overflows 64 bits
      [0x0a, 0, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
      // event_id with wire type 5, 1 and 2
      [0x0a, 0, 0x1d, 1, 0, 0, 0],
      [0x0a, 0, 0x19, 1, 0, 0, 0, 0, 0, 0, 0],
      [0x0a, 0, 0x1a, 1, 5],
      // events (field 1) as a varint; restore as length-delimited
      [0x08, 5],
      [0x12, 1, 1],
      // a group, an end-group without start, field number 0, wire types 6 and 7
      [0xfb, 0x3e, 0xfc, 0x3e],
      [0xfc, 0x3e],
      [0x00, 0x01],
      [0x0e],
      [0x0f],
      // unknown fields of every wire type at the top level
      [0xc0, 0x3e, 0x05, 0xc1, 0x3e, 1, 2, 3, 4, 5, 6, 7, 8, 0xc2, 0x3e, 0x02, 0xaa, 0xbb, 0xc5, 0x3e, 1, 2, 3, 4],
      // a length past the end
      [0x0a, 0x7f, 0x08, 0x01],
    ];
    for (const c of cases) {
      // Fix up the event length (second byte) where a case wraps an event.
      const bytes = [...c];
      if (bytes[0] === 0x0a && bytes[1] === 0) bytes[1] = bytes.length - 2;
      check(decoder, Uint8Array.from(bytes), B);
      check(decoder, Uint8Array.from([...base, ...bytes]), B);
    }
    // The same message twice in a row (duplicate events) and a duplicated event header.
    check(decoder, Uint8Array.from([...base, ...base]), B);
    check(decoder, Uint8Array.from(wrapEvent([0x08, 0x09, ...plainEvent()])), B);
  });
});
