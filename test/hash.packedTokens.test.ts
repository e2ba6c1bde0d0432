// The hasher's packed-varint decoder (WasmHasher.packedTokens: FindBestWorker's
// token ids decoded in WebAssembly, straight into the token space) against
// its oracle, the JavaScript reader of the hot-path decoders
// (WireReader.packedU32): on random, valid and hostile byte strings (1..10-byte
// varints, over-long and overflowing ones, a 10th byte over 1, varints cut by
// the end, ranges inside a larger buffer, offsets into the space) both give
// the same count and the same token ids, or both refuse (-1); also when the
// whole buffer is first copied in (loadMessage, as the ingest decoder does).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WireReader } from "../src/protocols/wireReader.js";
import { createWasmHasher } from "../src/hashing/wasmXxh3.js";
import { seededRandom } from "../src/util/random.js";

const rnd = seededRandom(2112);
const int = (n: number) => Math.floor(rnd() * n);

/** A varint of `value` (a bigint up to 2^70) in its shortest form, or padded with 0x80 continuation bytes to `width`. */
function varint(value: bigint, width = 0): number[] {
  const out: number[] = [];
  do {
    out.push(Number(value & 0x7fn) | 0x80);
    value >>= 7n;
  } while (value > 0n);
  while (out.length < width) out.push(0x80);
  out[out.length - 1] &= 0x7f;
  return out;
}

function randomVarints(): number[] {
  const bytes: number[] = [];
  const n = int(3) === 0 ? int(5000) : int(40);
  for (let i = 0; i < n; i++) {
    const r = rnd();
    if (r < 0.6) bytes.push(...varint(BigInt(int(150_000))));
    else if (r < 0.7) bytes.push(...varint(BigInt(int(2 ** 32))));
    else if (r < 0.78) bytes.push(...varint(BigInt(int(2 ** 32)) * BigInt(1 + int(2 ** 20)))); // past u32: its low 32 bits
    else if (r < 0.86) bytes.push(...varint(BigInt(int(128)), 1 + int(10))); // over-long forms, up to 10 bytes
    else if (r < 0.9) bytes.push(...varint(BigInt(int(128)), 11)); // 11 bytes: irregular
    else if (r < 0.93) bytes.push(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2 + int(126)); // 10th byte over 1
    else if (r < 0.96) bytes.push(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01); // 2^64 - 1
    else bytes.push(int(256)); // any byte
  }
  if (rnd() < 0.2) bytes.push(0x80 | int(128)); // cut by the end
  return bytes;
}

describe("packed token ids decoded in WebAssembly match the JavaScript reader", () => {
  it("random, over-long, overflowing and cut varints, ranges inside larger buffers, offsets into the space", () => {
    const hasher = createWasmHasher();
    const reader = new WireReader();
    let refused = 0;
    let loadedRefused = 0;
    for (let c = 0; c < 3000; c++) {
      const body = randomVarints();
      // The range sits inside a buffer with bytes around it (read past `to` as the JS reader does).
      const before = Array.from({ length: int(4) }, () => int(256));
      const after = Array.from({ length: int(12) }, () => (rnd() < 0.5 ? 0x80 : int(256)));
      const buf = Uint8Array.from([...before, ...body, ...after]);
      const from = before.length;
      const to = from + body.length;
      const at = int(3) === 0 ? int(20) : 0;
      const room = at + body.length + int(3);
      const want = new Uint32Array(room);
      reader.reset(buf);
      reader.pos = from;
      const wantN = reader.packedU32(to, want, at);
      const space = hasher.tokenSpace(room, 16);
      space.fill(0xdeadbeef);
      const gotN = hasher.packedTokens(buf, from, to, at);
      const where = `case ${c}: bytes ${Buffer.from(body).toString("hex").slice(0, 200)}`;
      assert.equal(gotN, wantN, where);
      if (wantN < 0) refused++;
      else assert.deepEqual([...space.subarray(at, gotN)], [...want.subarray(at, wantN)], where);
      // The same range read from the whole buffer copied in once (the ingest decoder's way), when the space holds it.
      const whole = hasher.tokenSpace(Math.max(room, buf.length), 16);
      whole.fill(0xdeadbeef);
      assert.equal(hasher.loadMessage(buf), true, where);
      const wholeN = hasher.packedTokensOfMessage(from, to, at);
      assert.equal(wholeN, wantN, `${where} (loaded whole)`);
      if (wantN >= 0) assert.deepEqual([...whole.subarray(at, wholeN)], [...want.subarray(at, wantN)], `${where} (loaded whole)`);
      else loadedRefused++;
    }
    assert.ok(refused > 100 && refused < 2500, `refused ${refused} of 3000`);
    assert.equal(loadedRefused, refused);
  });

  it("refuses a range that may not fit the space, as the JavaScript reader does", () => {
    const hasher = createWasmHasher();
    const bytes = Uint8Array.from([1, 2, 3, 4]);
    hasher.tokenSpace(5, 4);
    assert.equal(hasher.packedTokens(bytes, 0, 4, 1), 5);
    assert.equal(hasher.packedTokens(bytes, 0, 4, 2), -1);
    assert.equal(hasher.packedTokens(bytes, 0, 0, 5), 5);
    assert.equal(hasher.loadMessage(Uint8Array.from([1, 2, 3, 4, 5, 6])), false, "a message longer than the space is not copied in");
    assert.equal(hasher.loadMessage(bytes), true);
    assert.equal(hasher.packedTokensOfMessage(0, 4, 1), 5);
    assert.equal(hasher.packedTokensOfMessage(0, 4, 2), -1);
  });
});
