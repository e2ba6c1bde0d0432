// The flat engine-payload reader (src/decoding/engine/flatReader.ts) against
// its reference, decode.ts + convert.ts (decodeForShardReference: the events
// the index would get, the counts, or "the main thread must log, clear or
// tier something"): random vLLM and SGLang batches in the array and map
// encodings, every msgpack int width, signed and unsigned 64-bit hashes and
// byte hashes, dp ranks under each name, parents, removals, quiet skips,
// clears, Eagle pairs, LoRA, offload tiers, multimodal extra keys; and
// hostile bytes: truncation, flipped bytes, floats and 64-bit ints where
// u32s go, negative ints, str for bin, huge declared lengths, deep nesting,
// duplicate keys, trailing bytes. Whenever the reader answers, its batch
// (every word: hashes bit-identical), dp_rank and counts must be exactly the
// reference's; when it hands a payload back, the reference runs, so the
// outcome is the reference's by construction. Payloads of the common case
// must all be answered by the reader, so the comparison is not vacuous.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encode } from "@msgpack/msgpack";
import { FEED_COUNT_WORDS } from "../src/decoding/engine/feedCounts.js";
import { EngineBatchReader } from "../src/decoding/engine/flatReader.js";
import { decodeForShardReference } from "../src/decoding/engine/shardFeed.js";
import type { EngineKind } from "../src/decoding/engine/decode.js";
import { toEventBatch } from "../src/protocols/eventBatch.js";
import { seededRandom } from "../src/util/random.js";
import { F, M, Raw, type Rnd, Writer, oddMsgpackValue, pick } from "./support/msgpackWriter.js";

// ---- random batches -------------------------------------------------------------------------

const STORED_NAMES = {
  vllm: ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind"],
  sglang: ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "cache_salt"],
};
const REMOVED_NAMES = { vllm: ["block_hashes", "medium", "group_idx"], sglang: ["block_hashes", "medium"] };

interface Gen {
  rnd: Rnd;
  engine: EngineKind;
  blockSize: number;
  /** Cleared when the payload uses anything beyond the reader's common case. */
  common: boolean;
  /** Probability of an unusual field value. */
  odd: number;
}

function hashValue(g: Gen): unknown {
  const r = g.rnd();
  if (r < 0.35) return BigInt.asUintN(64, BigInt(Math.floor(g.rnd() * 2 ** 32)) * 2n ** 32n + BigInt(Math.floor(g.rnd() * 2 ** 32))); // often >= 2^63
  if (r < 0.55) return BigInt(Math.floor(g.rnd() * 1000));
  if (r < 0.7) return -BigInt(Math.floor(g.rnd() * 2 ** 40)) - 1n;
  if (r < 0.85) return Uint8Array.from({ length: pick(g.rnd, [1, 3, 8, 9, 32]) }, () => Math.floor(g.rnd() * 256));
  return BigInt(Math.floor(g.rnd() * 2 ** 53));
}


/** An unusual value for a field: what the reader must hand back, or read exactly as the reference does. */
function oddValue(g: Gen): unknown {
  g.common = false;
  return oddMsgpackValue(g.rnd, ["GPU", "x"]);
}

function tokenList(g: Gen, n: number): unknown[] {
  const tokens: unknown[] = Array.from({ length: n }, () => {
    const r = g.rnd();
    return r < 0.5 ? Math.floor(g.rnd() * 128) : r < 0.9 ? Math.floor(g.rnd() * 150_000) : Math.floor(g.rnd() * 2 ** 32);
  });
  if (n > 0 && g.rnd() < g.odd) tokens[Math.floor(g.rnd() * n)] = oddValue(g);
  return tokens;
}

function storedFields(g: Gen, asMap: boolean): Record<string, unknown> {
  const { rnd } = g;
  const n = 1 + Math.floor(rnd() * 6);
  const f: Record<string, unknown> = {
    block_hashes: Array.from({ length: n }, () => hashValue(g)),
    parent_block_hash: rnd() < 0.5 ? null : hashValue(g),
    token_ids: tokenList(g, n * g.blockSize),
    block_size: g.blockSize,
    lora_id: rnd() < 0.5 ? null : 0,
    medium: rnd() < 0.7 ? "GPU" : null,
    lora_name: null,
  };
  if (rnd() < 0.3) f.extra_keys = rnd() < 0.5 ? null : Array.from({ length: n }, () => null);
  if (rnd() < 0.15) f.group_idx = 0;
  if (rnd() < 0.1) f.kv_cache_spec_kind = pick(rnd, ["full_attention", "mla_attention", "sink_full_attention"]);
  // Quiet skips, which the reader counts itself.
  const q = rnd();
  if (q < 0.04) f.group_idx = 1 + Math.floor(rnd() * 3);
  else if (q < 0.07) f.kv_cache_spec_kind = pick(rnd, ["sliding_window", "mamba"]);
  // Another group's blocks are left out before their size is looked at (a sliding-window group may use another size).
  const spec = f.kv_cache_spec_kind as string | undefined;
  const otherGroup = spec !== undefined ? spec === "sliding_window" || spec === "mamba" : ((f.group_idx as number | undefined) ?? 0) !== 0;
  if (otherGroup && (asMap || g.engine === "vllm") && rnd() < 0.4) f.block_size = g.blockSize * 2;
  else if (q < 0.09) f.lora_id = 3;
  // What the reader hands back.
  const s = rnd();
  const special = (k: string, v: unknown) => ((f[k] = v), (g.common = false));
  if (s < 0.02) special("medium", pick(rnd, ["CPU", "DISK", "TAPE", "DEVICE"]));
  else if (s < 0.04) special("lora_name", pick(rnd, ["adapter-a", ""]));
  else if (s < 0.06) special("block_size", g.blockSize * 2);
  else if (s < 0.08) special("token_ids", tokenList(g, n * g.blockSize + 1));
  else if (s < 0.09) special("token_ids", Array.from({ length: n * g.blockSize + 1 }, (_, i) => [i, i + 1]).slice(0, n * g.blockSize)); // Eagle pairs
  else if (s < 0.1) special("extra_keys", [["a".repeat(64).replace(/a/g, () => "0123456789abcdef"[Math.floor(rnd() * 16)]), 0]]);
  else if (s < 0.11) special("kv_cache_spec_kind", "brand_new_attention");
  else if (s < 0.12) special("block_hashes", []);
  else if (s < 0.13) special("extra_keys", ["salt", 7]);
  else if (s < 0.14) special("cache_salt", "salty");
  else if (s < 0.15) special("block_size", null);
  for (const k of Object.keys(f)) if (rnd() < g.odd / 4) f[k] = oddValue(g);
  return f;
}

function removedFields(g: Gen): Record<string, unknown> {
  const { rnd } = g;
  const f: Record<string, unknown> = { block_hashes: Array.from({ length: Math.floor(rnd() * 6) }, () => hashValue(g)), medium: rnd() < 0.7 ? "GPU" : null };
  if (rnd() < 0.1) f.group_idx = rnd() < 0.6 ? 0 : 2;
  if (rnd() < 0.03) ((f.medium = "CPU"), (g.common = false));
  // Keys a map-encoded removal may carry that the reference does not read for it (positional removals have no such slot).
  if (rnd() < 0.1) f.parent_block_hash = hashValue(g);
  for (const k of Object.keys(f)) if (rnd() < g.odd / 4) f[k] = oddValue(g);
  return f;
}

function event(g: Gen, asMap: boolean): unknown {
  const { rnd } = g;
  const r = rnd();
  const tag = r < 0.6 ? "BlockStored" : r < 0.97 ? "BlockRemoved" : r < 0.985 ? "AllBlocksCleared" : "BlockMoved";
  if (tag !== "BlockStored" && tag !== "BlockRemoved") g.common = false;
  const f = tag === "BlockStored" ? storedFields(g, asMap) : tag === "BlockRemoved" ? removedFields(g) : {};
  if (asMap) {
    const entries: [unknown, unknown][] = Object.entries(f);
    if (rnd() < 0.1) entries.push([pick(rnd, ["cache_salt", "future_field", "ts"]), pick(rnd, [null, 1, "x", [1, 2]])]);
    // msgspec puts the tag first; any order is valid msgpack.
    const at = rnd() < 0.8 ? 0 : Math.floor(rnd() * (entries.length + 1));
    entries.splice(at, 0, ["type", tag]);
    if (rnd() < g.odd / 2) {
      entries.push([pick(rnd, ["type", "block_hashes", "medium", "__proto__"]), entries[0][1]]); // a repeated key
      g.common = false;
    }
    return new M(entries);
  }
  // Positional: the engine's field order; trailing fields holding their default (nil) may be left out.
  const names = tag === "BlockStored" ? STORED_NAMES[g.engine] : tag === "BlockRemoved" ? REMOVED_NAMES[g.engine] : [];
  const items: unknown[] = [tag, ...names.map((n) => f[n] ?? null)];
  while (items.length > 1 && items[items.length - 1] === null && rnd() < 0.6) items.pop();
  if (items.length === 1 + names.length && rnd() < 0.05) items.push(pick(rnd, [null, 7, "extra", [1]])); // newer fields the reference ignores
  return items;
}

function payload(g: Gen): Uint8Array {
  const { rnd } = g;
  const mapEvents = rnd() < 0.5;
  const events = Array.from({ length: Math.floor(rnd() * 6) }, () => event(g, mapEvents));
  const ts = pick(rnd, [new F(1733300000.25), 1733300000, new F(0.5)]);
  const rank = rnd() < 0.3 ? null : Math.floor(rnd() * 8);
  let batch: unknown;
  if (rnd() < 0.5) {
    const items: unknown[] = [ts, events, rank];
    if (rank === null && rnd() < 0.5) items.pop(); // older releases: no rank
    batch = items;
  } else {
    const entries: [unknown, unknown][] = [
      ["ts", ts],
      ["events", events],
    ];
    if (rank !== null || rnd() < 0.5) entries.push([pick(rnd, ["data_parallel_rank", "attn_dp_rank", "dp_rank"]), rank]);
    if (rnd() < 0.2) {
      const key = pick(rnd, ["dp_rank", "attn_dp_rank"]);
      if (entries.some(([k]) => k === key)) g.common = false; // a repeated key: the reference keeps the last, the reader hands back
      entries.push([key, Math.floor(rnd() * 8)]);
    }
    if (rnd() < 0.1) entries.push(["extra", pick(rnd, [null, 1, "x"])]);
    if (rnd() < 0.5) entries.reverse();
    batch = new M(entries);
  }
  const w = new Writer(rnd);
  w.value(batch);
  let bytes = w.out;
  const h = rnd();
  if (h < g.odd) {
    g.common = false;
    const m = rnd();
    if (m < 0.4) bytes = bytes.slice(0, Math.floor(rnd() * bytes.length));
    else if (m < 0.7) bytes[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256);
    else if (m < 0.85) bytes = [...bytes, pick(rnd, [0x00, 0xc0, 0x91])]; // trailing bytes
    else bytes = [0x92, ...bytes, 0x90]; // wrapped: not a batch
  }
  return Uint8Array.from(bytes);
}

// ---- the comparison -------------------------------------------------------------------------

const WORKER = 0x1_0000_0007n;

/** Reader vs reference on one payload; true when the reader answered. */
function check(reader: EngineBatchReader, bytes: Uint8Array, engine: EngineKind, blockSize: number, defaultRank: number, transient: boolean): boolean {
  const want = new Int32Array(FEED_COUNT_WORDS);
  const got = new Int32Array(FEED_COUNT_WORDS);
  const expected = decodeForShardReference(bytes, engine, { workerId: WORKER, defaultRank }, blockSize, want);
  const flat = reader.read(bytes, engine, WORKER, defaultRank, got, transient);
  const where = `${engine} payload ${Buffer.from(bytes).toString("hex")}`;
  if (flat === undefined) {
    assert.deepStrictEqual([...got], new Array(FEED_COUNT_WORDS).fill(0), `counts written for a payload handed back: ${where}`);
    return false;
  }
  assert.ok(expected !== undefined, `the reader answered a payload the reference refuses: ${where}`);
  assert.equal(flat.dpRank, expected.dpRank, where);
  const ref = toEventBatch(expected.events);
  assert.equal(flat.batch.count, ref.count, where);
  assert.deepStrictEqual([...flat.batch.events], [...ref.events], `event words: ${where}`);
  assert.deepStrictEqual([...flat.batch.items], [...ref.items], `item words (hashes): ${where}`);
  assert.deepStrictEqual([...got], [...want], `counts: ${where}`);
  return true;
}

describe("flat engine-payload reader vs decode.ts + convert.ts", () => {
  for (const [engine, blockSize, n] of [
    ["vllm", 16, 1500],
    ["sglang", 16, 700],
    ["vllm", 64, 500],
  ] as const) {
    it(`random and hostile ${engine} payloads, block size ${blockSize}: the reference's batch, hashes and counts, or handed back`, () => {
      const rnd = seededRandom(blockSize * 7 + engine.length);
      const reader = new EngineBatchReader(blockSize);
      let common = 0;
      let answered = 0;
      let refused = 0;
      for (let i = 0; i < n; i++) {
        const g: Gen = { rnd, engine, blockSize, common: true, odd: i % 3 === 0 ? 0 : 0.15 };
        const bytes = payload(g);
        const defaultRank = Math.floor(rnd() * 3);
        const fast = check(reader, bytes, engine, blockSize, defaultRank, i % 2 === 0);
        if (g.common) {
          common++;
          // Not vacuous: every payload of the common case is the reader's own.
          assert.ok(fast, `a common-case payload was handed back: ${engine} ${Buffer.from(bytes).toString("hex")}`);
        }
        if (fast) answered++;
        else refused++;
      }
      assert.ok(common > n / 4 && refused > n / 10, `common ${common}, answered ${answered}, handed back ${refused} of ${n}`);
      if (process.env.DEBUG_DECODER) console.log({ engine, blockSize, n, common, answered, refused });
    });
  }

  const B = 16;
  const tokens = Array.from({ length: 2 * B }, (_, i) => i * 997);
  const stored = (over: Partial<Record<number, unknown>> = {}) => {
    const e: unknown[] = ["BlockStored", [2n ** 64n - 1n, 5n], null, tokens, B, null, "GPU", null];
    for (const [k, v] of Object.entries(over)) e[Number(k)] = v;
    return e;
  };
  const bytesOf = (v: unknown) => encode(v, { useBigInt64: true });

  it("named cases: uint64 hashes above 2^63, negative ints, byte hashes, parents, dp ranks", () => {
    const reader = new EngineBatchReader(B);
    const fast = (v: unknown) => assert.ok(check(reader, bytesOf(v), "vllm", B, 1, false), JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x)));
    fast([1.5, [stored()], 0]);
    fast([1.5, [stored({ 1: [-1n, -(2n ** 63n)], 2: 2n ** 63n })], 3]);
    fast([1.5, [stored({ 1: [Uint8Array.from({ length: 32 }, (_, i) => i), Uint8Array.from([7])], 2: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]) })]]);
    fast([1, [["BlockRemoved", [1, -1, 2n ** 63n + 5n], "GPU"], ["BlockRemoved", []]], null]);
    fast({ ts: 1.5, events: [{ type: "BlockStored", block_hashes: [9], parent_block_hash: 8, token_ids: tokens.slice(0, B), block_size: B, lora_id: null, medium: "GPU", lora_name: null }], data_parallel_rank: 5 });
    fast({ events: [], attn_dp_rank: null, dp_rank: 4, ts: 0 });
    fast([1.5, [stored({ 9: 1 }), stored({ 5: 7 })], 0]); // other_group and lora_id_without_name: counted, not applied
  });

  it("named cases handed back: floats, 64-bit and negative token ids, str hashes, clears, deep nesting, huge lengths, trailing bytes", () => {
    const reader = new EngineBatchReader(B);
    const back = (bytes: Uint8Array) => assert.equal(check(reader, bytes, "vllm", B, 0, false), false, Buffer.from(bytes).toString("hex"));
    const tokensWith = (at: number, v: unknown) => tokens.map((t, i) => (i === at ? v : t));
    back(bytesOf([1.5, [stored({ 3: tokensWith(3, 2.5) })], 0]));
    back(bytesOf([1.5, [stored({ 3: tokensWith(3, -4) })], 0]));
    const w = new Writer(() => 0.5);
    w.value([new F(1.5), [stored({ 3: tokensWith(3, new Raw([0xd0, 0xfc])) })], 0]); // -4 as an int8
    back(Uint8Array.from(w.out));
    back(bytesOf([1.5, [stored({ 3: tokensWith(3, 2n ** 32n) })], 0]));
    back(bytesOf([1.5, [stored({ 1: ["abc", 1] })], 0]));
    back(bytesOf([1.5, [stored({ 1: [new Uint8Array(0), 1] })], 0]));
    back(bytesOf([1.5, [stored({ 4: 16.0000001 })], 0]));
    back(bytesOf([1.5, [stored(), ["AllBlocksCleared"]], 0]));
    back(bytesOf([1.5, [stored()], 2 ** 32]));
    back(bytesOf([1.5, [stored()], -1]));
    back(bytesOf([1.5, [stored()], 1.5]));
    let deep: unknown = 1;
    for (let i = 0; i < 40; i++) deep = [deep];
    back(bytesOf([1.5, [stored()], 0, deep]));
    back(bytesOf({ ts: 1, events: [], future: deep }));
    back(Uint8Array.from([0x93, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x90]));
    back(Uint8Array.from([...bytesOf([1.5, [stored()], 0]), 0xc0]));
    const whole = bytesOf([1.5, [stored(), ["BlockRemoved", [1, 2]]], 0]);
    for (let cut = 0; cut < whole.length; cut++) back(whole.subarray(0, cut));
  });

  it("hashes are bit-identical to the native hasher's for every block size the router takes", () => {
    for (const bs of [1, 4, 15, 16, 17, 32, 64, 100, 128, 256]) {
      const reader = new EngineBatchReader(bs);
      const rnd = seededRandom(bs);
      const toks = Array.from({ length: 5 * bs }, () => Math.floor(rnd() * 2 ** 32));
      assert.ok(check(reader, bytesOf([0, [["BlockStored", [1, 2, 3, 4, 5], null, toks, bs]], 0]), "vllm", bs, 0, true), `block size ${bs}`);
    }
  });
});
