// Fuzzing the event decoders and configuration parsers: valid Dynamo JSON /
// MessagePack events, vLLM msgpack batches, --zmq-worker specs and workers
// files are mutated (structurally and byte by byte). A decoder must either
// produce well-formed events or refuse with its own DecodeError — never throw
// anything else — and whatever it produces must apply to the router cleanly.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encode } from "@msgpack/msgpack";
import { hashPrompt } from "../src/hashing/blockHash.js";
import { PrefixIndex } from "../src/indexer/prefixIndex.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { DecodeError as NatsDecodeError, decodeRouterEvent, encodeMsgpack, parseEventPlane, parseJsonEvents, stringifyJson, toRouterEvent } from "../src/protocols/routerEventCodec.js";
import { KvRouter } from "../src/router/router.js";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { toIndexEvent as engineToIndexEvent } from "../src/decoding/engine/convert.js";
import { DecodeError as ZmqDecodeError, decodeBatch, decodeFrames, encodeSeq } from "../src/decoding/engine/decode.js";
import { EndpointSpecError, parseWorkersFile, parseZmqWorkerSpec } from "../src/sources/engineZmq/endpoints.js";
import { seededRandom } from "../src/util/random.js";

const CASES = Number(process.env.FUZZ_CASES ?? 1500);
const B = 4;
type Rnd = () => number;

const WEIRD: unknown[] = [null, undefined, -1, -1n, 0, 2 ** 53 + 1, 2n ** 64n, 2n ** 63n, 1.5, Number.NaN, "", "x", "18446744073709551615", [], {}, [1, 2], { a: 1 }, true, new Uint8Array([1, 2, 3]), "cleared"];

/** Returns a copy of `value` with one random node replaced, removed, or a list cut short. */
function mutate(value: unknown, rnd: Rnd, depth = 0): unknown {
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
  if (depth > 0 && rnd() < 0.25) return pick(WEIRD);
  if (Array.isArray(value) && value.length > 0) {
    const copy = [...value];
    if (rnd() < 0.15) return copy.slice(0, Math.floor(rnd() * copy.length));
    const i = Math.floor(rnd() * copy.length);
    copy[i] = mutate(copy[i], rnd, depth + 1);
    return copy;
  }
  if (value !== null && typeof value === "object" && !(value instanceof Uint8Array)) {
    const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
    const keys = Object.keys(copy);
    if (keys.length === 0) return pick(WEIRD);
    const k = pick(keys);
    if (rnd() < 0.15) delete copy[k];
    else copy[k] = mutate(copy[k], rnd, depth + 1);
    return copy;
  }
  return pick(WEIRD);
}

function flipBytes(bytes: Uint8Array, rnd: Rnd): Uint8Array {
  const out = Uint8Array.from(bytes);
  const n = 1 + Math.floor(rnd() * 4);
  for (let i = 0; i < n && out.length > 0; i++) out[Math.floor(rnd() * out.length)] = Math.floor(rnd() * 256);
  return rnd() < 0.2 ? out.subarray(0, Math.floor(rnd() * out.length)) : out;
}

function assertWellFormed(e: IndexEvent): void {
  const u64 = (v: bigint) => typeof v === "bigint" && v >= 0n && v < 2n ** 64n;
  assert.ok(u64(e.workerId) && u64(e.eventId), "ids are u64");
  assert.ok(Number.isInteger(e.dpRank) && e.dpRank >= 0 && e.dpRank <= 0xffffffff, "dp rank is u32");
  if (e.kind === "stored") {
    assert.ok(e.parentHash === undefined || u64(e.parentHash));
    for (const b of e.blocks) assert.ok(u64(b.externalHash) && u64(b.localHash));
  }
  if (e.kind === "removed") for (const h of e.blockHashes) assert.ok(u64(h));
}

function sampleEvents(rnd: Rnd): IndexEvent[] {
  const local = hashPrompt(Array.from({ length: 12 }, (_, i) => i + Math.floor(rnd() * 100)), B).local;
  return [
    { kind: "stored", workerId: 2n ** 63n + 5n, dpRank: 1, eventId: 7n, parentHash: 2n ** 64n - 1n, blocks: local.map((h, i) => ({ externalHash: BigInt(i) + 2n ** 60n, localHash: h })) },
    { kind: "removed", workerId: 3n, dpRank: 0, eventId: 8n, blockHashes: [1n, 2n ** 64n - 2n] },
    { kind: "cleared", workerId: 4n, dpRank: 2, eventId: 9n },
  ];
}

describe("fuzzing the decoders", () => {
  it(`Dynamo RouterEvents (JSON and the MessagePack event plane): ${CASES} mutated messages`, () => {
    const rnd = seededRandom(77);
    const router = new KvRouter({ ...DEFAULT_ROUTER_CONFIG, blockSize: B }, new PrefixIndex(), rnd);
    let decoded = 0;
    let refused = 0;
    for (let i = 0; i < CASES; i++) {
      const base = toRouterEvent(sampleEvents(rnd)[Math.floor(rnd() * 3)]);
      const json = rnd() < 0.5;
      let bytes: Uint8Array = json ? new TextEncoder().encode(stringifyJson(mutate(base, rnd))) : encodeMsgpack(mutate(base, rnd));
      if (rnd() < 0.3) bytes = flipBytes(bytes, rnd);
      try {
        for (const value of json ? parseJsonEvents(bytes) : parseEventPlane(bytes)) {
          const d = decodeRouterEvent(value);
          if (d.kind !== "event") continue;
          assertWellFormed(d.event);
          router.applyEvents([d.event]);
          decoded++;
        }
      } catch (err) {
        if (!(err instanceof NatsDecodeError)) throw new Error(`case ${i}: ${(err as Error).stack}`);
        refused++;
      }
    }
    assert.ok(decoded > CASES / 10 && refused > CASES / 10, `decoded ${decoded}, refused ${refused}`);
  });

  it(`vLLM/SGLang ZeroMQ batches: ${CASES} mutated multipart messages`, () => {
    const rnd = seededRandom(78);
    const index = new PrefixIndex();
    const tokens = Array.from({ length: 8 }, (_, i) => i);
    const batch = () => [
      1_700_000_000.5,
      [
        ["BlockStored", [2n ** 63n + 1n, -5], null, tokens, B, null, "GPU", null, null],
        ["BlockRemoved", [-5, new Uint8Array(32).fill(7)], "GPU"],
        ["AllBlocksCleared"],
        { type: "BlockStored", block_hashes: [11, 12], parent_block_hash: 10, token_ids: tokens, block_size: B },
      ],
      rnd() < 0.5 ? 0 : 1,
    ];
    let events = 0;
    let refused = 0;
    for (let i = 0; i < CASES; i++) {
      let payload: Uint8Array = encode(rnd() < 0.8 ? mutate(batch(), rnd) : batch(), { useBigInt64: true });
      if (rnd() < 0.3) payload = flipBytes(payload, rnd);
      let frames: Uint8Array[] = [Buffer.from("kv-events"), encodeSeq(BigInt(i)), payload];
      if (rnd() < 0.1) frames = frames.slice(0, Math.floor(rnd() * 3));
      if (rnd() < 0.05) frames[1] = flipBytes(frames[1] ?? new Uint8Array(), rnd);
      try {
        const decodedBatch = decodeBatch(decodeFrames(frames).payload, rnd() < 0.5 ? "vllm" : "sglang");
        for (const e of decodedBatch.events) {
          if (e.type === "bad") continue;
          const converted = engineToIndexEvent(e, { workerId: 1n, dpRank: 0 }, BigInt(++events), B);
          if ("event" in converted) {
            assertWellFormed(converted.event);
            index.apply(converted.event);
          }
        }
      } catch (err) {
        if (!(err instanceof ZmqDecodeError)) throw new Error(`case ${i}: ${(err as Error).stack}`);
        refused++;
      }
    }
    assert.ok(events > CASES / 10 && refused > CASES / 20, `events ${events}, refused ${refused}`);
  });

  it(`--zmq-worker specs and workers files: ${CASES} mutated inputs`, () => {
    const rnd = seededRandom(79);
    const spec = "12=tcp://127.0.0.1:5557,replay=tcp://127.0.0.1:5558,dp_rank=1,engine=vllm";
    const file = JSON.stringify([{ worker_id: 3, endpoint: "tcp://127.0.0.1:5557", replay_endpoint: "tcp://127.0.0.1:5558", dp_rank: 0 }]);
    const yaml = "- worker_id: 4\n  endpoint: tcp://127.0.0.1:5600\n  engine: sglang\n";
    const chars = "=,:/.;0123456789-_ \n\t[]{}\"'#&*!|>@%`abcdefghijklmnopqrstuvwxyz\u00e9\u0000";
    const scramble = (s: string) => {
      const a = [...s];
      const n = 1 + Math.floor(rnd() * 5);
      for (let k = 0; k < n; k++) {
        const at = Math.floor(rnd() * (a.length + 1));
        const r = rnd();
        if (r < 0.4) a.splice(at, 1);
        else if (r < 0.8) a.splice(at, 0, chars[Math.floor(rnd() * chars.length)]);
        else a[at] = chars[Math.floor(rnd() * chars.length)];
      }
      return a.join("");
    };
    let accepted = 0;
    for (let i = 0; i < CASES; i++) {
      const which = i % 3;
      const text = scramble(which === 0 ? spec : which === 1 ? file : yaml);
      try {
        const endpoints = which === 0 ? [parseZmqWorkerSpec(text)] : parseWorkersFile(text, which === 1 ? "workers.json" : "workers.yaml");
        for (const e of endpoints) {
          assert.equal(typeof e.workerId, "bigint");
          assert.match(e.endpoint, /^[a-z]+:\/\//);
        }
        accepted++;
      } catch (err) {
        if (!(err instanceof EndpointSpecError)) throw new Error(`case ${i} (${JSON.stringify(text)}): ${(err as Error).stack}`);
      }
    }
    assert.ok(accepted > 0, "some mutations stay valid");
  });
});
