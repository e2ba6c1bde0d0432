// The FindBestWorker request decoder of the gRPC hot path
// (src/server/promptDecoder.ts) against its oracle, protobuf-es: random and
// hostile wire bytes (fields in any order, packed, split and unpacked token
// lists, repeated scalars, unknown fields of every wire type, groups,
// over-long and overflowing varints, wrong wire types, bad UTF-8, truncation).
// Whenever the decoder answers, its message and token ids must be exactly the
// oracle's; when it hands the bytes back, the server decodes them with the
// oracle, so the outcome is the oracle's by construction. The suite also
// checks that it answers the great majority of valid messages itself.
// The decoder's hashing mode (a PromptSpace: token ids decoded into the
// hasher's memory and hashed there) must answer the same messages with the
// same fields, the oracle's token count, and the native hasher's sequence
// hashes of the oracle's token ids, under the message's LoRA and namespace.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type FindBestWorkerRequest, FindBestWorkerRequestSchema } from "../gen/kvrouter/v1/router_pb.js";
import { hashPrompt } from "../src/hashing/blockHash.js";
import { HashedPrompt } from "../src/hashing/sequenceHashes.js";
import { decodeFindBestWorkerFast, promptSpace, promptTokens } from "../src/server/promptDecoder.js";
import { countField } from "../src/protocols/wireCount.js";
import { seededRandom } from "../src/util/random.js";
import { type Rnd, fields, part, u64 } from "./support/wire.js";

function text(rnd: Rnd): number[] {
  const r = rnd();
  if (r < 0.05) return [0xc3, 0x28]; // invalid UTF-8
  if (r < 0.1) return [...Buffer.from("ünïcode")];
  return [...Buffer.from(`id-${Math.floor(rnd() * 1e6)}`)];
}

function tokenValue(rnd: Rnd): bigint {
  const r = rnd();
  if (r < 0.01) return u64(rnd); // past u32 now and then
  if (r < 0.05) return BigInt(Math.floor(rnd() * 2 ** 32));
  return BigInt(Math.floor(rnd() * 150_000));
}

function request(rnd: Rnd): Uint8Array {
  const parts: number[][] = [];
  const n = rnd() < 0.05 ? 0 : rnd() < 0.1 ? 4096 : Math.floor(rnd() * 300);
  if (n > 0) parts.push(part(rnd, (w) => w.repeated(1, Array.from({ length: n }, () => tokenValue(rnd)))));
  if (rnd() < 0.5) parts.push(part(rnd, (w) => w.delimited(2, text(rnd))));
  if (rnd() < 0.3) parts.push(part(rnd, (w) => w.scalar(3, BigInt(Math.floor(rnd() * 3)))));
  const workers = rnd() < 0.3 ? Math.floor(rnd() * 4) : 0;
  for (let i = 0; i < workers; i++) {
    const ref = fields(rnd, [part(rnd, (w) => w.scalar(1, u64(rnd))), part(rnd, (w) => w.scalar(2, BigInt(Math.floor(rnd() * 8))))]);
    parts.push(part(rnd, (w) => w.delimited(4, ref)));
  }
  if (rnd() < 0.2) parts.push(part(rnd, (w) => w.delimited(5, text(rnd))));
  if (rnd() < 0.2) parts.push(part(rnd, (w) => w.delimited(6, text(rnd))));
  if (rnd() < 0.2) parts.push(part(rnd, (w) => w.scalar(7, rnd() < 0.3 ? BigInt.asUintN(64, -5n) : BigInt(Math.floor(rnd() * 100)))));
  if (rnd() < 0.2) parts.push(part(rnd, (w) => w.scalar(8, u64(rnd))));
  if (rnd() < 0.2) parts.push(part(rnd, (w) => w.delimited(9, text(rnd))));
  // A repeated scalar or a second token list now and then.
  if (rnd() < 0.05) parts.push(part(rnd, (w) => w.scalar(7, 3n)));
  if (rnd() < 0.05) parts.push(part(rnd, (w) => w.repeated(1, [tokenValue(rnd), tokenValue(rnd)])));
  const bytes = fields(rnd, parts);
  const r = rnd();
  if (r < 0.05) return Uint8Array.from(bytes.slice(0, Math.floor(rnd() * bytes.length))); // truncated
  if (r < 0.08 && bytes.length > 0) {
    const flipped = [...bytes];
    flipped[Math.floor(rnd() * bytes.length)] ^= 1 << Math.floor(rnd() * 8);
    return Uint8Array.from(flipped);
  }
  return Uint8Array.from(bytes);
}

type Outcome = { message: string } | { error: string };

function oracle(bytes: Uint8Array): Outcome {
  try {
    return { message: canonical(fromBinary(FindBestWorkerRequestSchema, bytes), undefined) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** The message re-encoded (fields in number order, unknown fields after) with its tokens: equal outcomes, equal strings. */
function canonical(msg: FindBestWorkerRequest, tokens: Uint32Array | undefined): string {
  const copy = create(FindBestWorkerRequestSchema, msg);
  if (tokens !== undefined) {
    assert.equal(msg.tokenIds.length, 0, "the fast path leaves token_ids to promptTokens()");
    copy.tokenIds = [...tokens];
  }
  copy.$unknown = msg.$unknown;
  return Buffer.from(toBinary(FindBestWorkerRequestSchema, copy)).toString("hex");
}

/** Hashing decoders: block 16 with room for any prompt, and block 4 whose space (5 x 30 ids) is smaller than many prompts. */
const spaces = [promptSpace(16, 1 << 20)!, promptSpace(4, 30)!];

/** The hashing mode on bytes the plain fast path decoded (`expected`: the oracle's canonical message). */
function checkHashed(bytes: Uint8Array, expected: string, at: string): void {
  const want = fromBinary(FindBestWorkerRequestSchema, bytes);
  const tokens = want.tokenIds;
  for (const space of spaces) {
    const hashed = decodeFindBestWorkerFast(bytes, space);
    if (hashed === undefined) {
      // Handed back only when the token ids may not fit its space (the server then decodes with protobuf-es).
      assert.ok(bytes.length > space.maxTokens, `hashing decoder (block ${space.blockSize}) handed back a message that fits; ${at}`);
      continue;
    }
    const prompt = promptTokens(hashed);
    assert.ok(prompt instanceof HashedPrompt, at);
    assert.equal(prompt.length, tokens.length, `token count; ${at}`);
    assert.ok(prompt.fits(space.blockSize, want.loraName, want.cacheNamespace), at);
    assert.deepEqual(prompt.sequence.bigints, hashPrompt(tokens, space.blockSize, want.loraName, want.cacheNamespace).sequence, `sequence hashes, block ${space.blockSize}; ${at}`);
    assert.equal(canonical(hashed, Uint32Array.from(tokens)), expected, at);
  }
}

/** Checks one message; says whether the fast path answered and whether the bytes are valid. */
function check(bytes: Uint8Array): { fast: boolean; valid: boolean } {
  const expected = oracle(bytes);
  const fast = decodeFindBestWorkerFast(bytes);
  const at = `bytes ${Buffer.from(bytes).toString("hex").slice(0, 400)}`;
  if (fast === undefined) {
    for (const space of spaces) assert.equal(decodeFindBestWorkerFast(bytes, space), undefined, `hashing decoder answered where the plain one did not; ${at}`);
  }
  if (!("error" in expected)) {
    // The count that refuses long lists before decoding is exact on every message protobuf-es accepts.
    assert.equal(countField(bytes, 4), fromBinary(FindBestWorkerRequestSchema, bytes).allowedWorkers.length, `allowed_workers count; ${at}`);
  }
  if (fast === undefined) return { fast: false, valid: !("error" in expected) };
  assert.ok(!("error" in expected), `the fast path accepted what protobuf-es rejects (${"error" in expected ? expected.error : ""}); ${at}`);
  assert.equal(canonical(fast, promptTokens(fast) as Uint32Array), expected.message, at);
  checkHashed(bytes, expected.message, at);
  return { fast: true, valid: true };
}

describe("FindBestWorker hot-path decoder vs protobuf-es", () => {
  it("2,500 random and hostile messages give the oracle's message or are handed back", () => {
    const rnd = seededRandom(12);
    let valid = 0;
    let fast = 0;
    const n = 2500;
    for (let i = 0; i < n; i++) {
      const r = check(request(rnd));
      if (r.valid) valid++;
      if (r.fast) fast++;
    }
    if (process.env.DEBUG_DECODER) console.log({ n, valid, fast });
    assert.ok(valid > n / 2 && valid < n, `valid ${valid} of ${n}`);
    assert.ok(fast > valid * 0.9, `the fast path answered ${fast} of ${valid} valid messages`);
  });

  const plain = [...toBinary(FindBestWorkerRequestSchema, create(FindBestWorkerRequestSchema, { tokenIds: [1, 300, 70_000, 2 ** 32 - 1], requestId: "r1", allowedWorkers: [{ workerId: 5n, dpRank: 1 }] }))];

  it("a well-formed message is decoded by the fast path, and its tokens are the prompt", () => {
    const msg = decodeFindBestWorkerFast(Uint8Array.from(plain));
    assert.ok(msg !== undefined);
    assert.deepEqual([...(promptTokens(msg) as Uint32Array)], [1, 300, 70_000, 2 ** 32 - 1]);
    assert.equal(msg.requestId, "r1");
    check(Uint8Array.from(plain));
  });

  it("every truncation of a message gives the oracle's outcome", () => {
    for (let cut = 0; cut <= plain.length; cut++) check(Uint8Array.from(plain.slice(0, cut)));
  });

  it("over-long and overflowing varints, wrong wire types, groups, duplicate and unknown fields", () => {
    const cases: number[][] = [
      [0x0a, 0x02, 0x80, 0x01], // packed: 128
      [0x0a, 0x05, 0xff, 0xff, 0xff, 0xff, 0x0f], // packed: 2^32 - 1
      [0x0a, 0x05, 0xff, 0xff, 0xff, 0xff, 0x1f], // packed: past u32 in 5 bytes
      [0x0a, 0x0a, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], // packed: a 10-byte 1
      [0x0a, 0x03, 0x81, 0x80, 0x80], // packed: a varint cut by its length
      [0x08, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], // unpacked: 11 bytes
      [0x08, 0x05, 0x08, 0x06, 0x0a, 0x01, 0x07], // unpacked then packed
      [0x0d, 1, 0, 0, 0], // token_ids as fixed32
      [0x09, 1, 0, 0, 0, 0, 0, 0, 0], // token_ids as fixed64
      [0x0b, 0x0c], // token_ids as a group
      [0x00, 0x01], // field number 0
      [0x0e], // wire type 6
      [0x12, 0x7f, 0x41], // request_id longer than the message
      [0x3a, 0x01, 0x41], // priority as length-delimited
      [0xfb, 0x3e, 0xfc, 0x3e], // an unknown group
      [0xc0, 0x3e, 0x05, 0xc1, 0x3e, 1, 2, 3, 4, 5, 6, 7, 8, 0xc2, 0x3e, 0x02, 0xaa, 0xbb, 0xc5, 0x3e, 1, 2, 3, 4], // unknown fields
      [0x12, 0x01, 0x41, 0x12, 0x01, 0x42], // request_id twice: last wins
    ];
    for (const c of cases) {
      check(Uint8Array.from(c));
      check(Uint8Array.from([...plain, ...c]));
      check(Uint8Array.from([...c, ...plain]));
    }
  });
});
