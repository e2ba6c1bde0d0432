// Fuzzing the gRPC surface: random bytes and random well-formed messages with
// wild field values go to every RPC. The server must never crash, never
// answer INTERNAL/UNKNOWN, and never change state on a rejected call.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type DescMessage, create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { KvRouterService } from "../gen/kvrouter/v1/router_pb.js";
import { seededRandom } from "../src/util/random.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { stored } from "./support/events.js";

const B = 4;
const CASES = Number(process.env.FUZZ_CASES ?? 1500);
/** Statuses a bad request may get; anything else (INTERNAL, UNKNOWN, ...) is a bug. */
const PRECISE = new Set([
  grpc.status.OK,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.FAILED_PRECONDITION,
  grpc.status.ALREADY_EXISTS,
  grpc.status.RESOURCE_EXHAUSTED,
  // A random SetBusyThresholds can make FindBestWorker queue; the call's deadline then answers.
  grpc.status.DEADLINE_EXCEEDED,
]);

type Rnd = () => number;

/** A random value for a protobuf field: edge numbers, odd strings, random lengths. */
function randomMessage(schema: DescMessage, rnd: Rnd, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const u64s = [0n, 1n, 2n ** 63n, 2n ** 64n - 1n, BigInt(Math.floor(rnd() * 1e6))];
  const u32s = [0, 1, 3, 4, 5, 2 ** 31, 2 ** 32 - 1, Math.floor(rnd() * 100)];
  const strings = ["", "r1", "x".repeat(2000), "é\u0000\ud83d\ude00", "ab\nc"];
  const scalar = (f: { scalar?: number }) => {
    switch (f.scalar) {
      case 4: // uint64
        return u64s[Math.floor(rnd() * u64s.length)];
      case 13: // uint32
        return u32s[Math.floor(rnd() * u32s.length)];
      case 9: // string
        return strings[Math.floor(rnd() * strings.length)];
      case 8: // bool
        return rnd() < 0.5;
      case 1: // double
        return [0, -1, 1e308, Number.NaN][Math.floor(rnd() * 4)];
      default:
        return undefined;
    }
  };
  for (const field of schema.fields) {
    if (rnd() < 0.3) continue;
    const f = field as unknown as { fieldKind: string; scalar?: number; message?: DescMessage; oneof?: { localName: string } };
    let value: unknown;
    if (f.fieldKind === "scalar") value = scalar(f);
    else if (f.fieldKind === "message" && depth < 4) value = randomMessage(f.message!, rnd, depth + 1);
    else if (f.fieldKind === "list") {
      const n = [0, 1, 2, 4, 5, 64][Math.floor(rnd() * 6)];
      value = Array.from({ length: n }, () => (f.message ? randomMessage(f.message, rnd, depth + 1) : scalar(f))).filter(
        (v) => v !== undefined,
      );
    }
    if (value === undefined) continue;
    if (f.oneof) {
      if (out[f.oneof.localName] === undefined) out[f.oneof.localName] = { case: field.localName, value };
    } else out[field.localName] = value;
  }
  return out;
}

describe("fuzzing the gRPC surface", () => {
  let r: TestRouter;
  let raw: grpc.Client;
  before(async () => {
    r = await startTestRouter({ blockSize: B }, { maxTokens: 256 });
    raw = new grpc.Client(r.address, grpc.credentials.createInsecure());
    await r.client.registerWorker({ workerId: 1n, leaseTtlSeconds: 3600 });
    await r.client.sendEvents([stored(1, 1, tokens(16), B, 100n)]);
  });
  after(async () => {
    raw.close();
    await r.close();
  });

  function call(method: string, body: Buffer, streaming: boolean): Promise<{ code: number; details: string }> {
    return new Promise((resolve) => {
      const done = (err: grpc.ServiceError | null) => resolve({ code: err?.code ?? 0, details: err?.details ?? "" });
      const path = `/${KvRouterService.typeName}/${method}`;
      const id = (b: Buffer) => b;
      if (streaming) {
        const stream = raw.makeClientStreamRequest(path, id, id, done);
        stream.write(body);
        stream.end();
      } else if (method === "DumpIndex") {
        const s = raw.makeServerStreamRequest(path, id, id, body);
        s.on("data", () => {});
        s.on("error", (e) => done(e as grpc.ServiceError));
        s.on("end", () => done(null));
      } else raw.makeUnaryRequest(path, id, id, body, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, done);
    });
  }

  it(`${CASES} random calls: precise statuses, no crash, rejected calls change nothing`, async () => {
    const rnd = seededRandom(2024);
    const methods = KvRouterService.methods;
    const tally = new Map<string, number>();
    for (let i = 0; i < CASES; i++) {
      const method = methods[Math.floor(rnd() * methods.length)];
      let body: Buffer;
      if (rnd() < 0.3) {
        body = Buffer.from(Array.from({ length: Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256)));
      } else {
        const msg = create(method.input, randomMessage(method.input, rnd) as never);
        body = Buffer.from(toBinary(method.input, msg));
      }
      const before = await r.client.dumpIndex();
      const res = await call(method.name, body, method.methodKind === "client_streaming");
      const label = `${method.name}:${grpc.status[res.code]}`;
      tally.set(label, (tally.get(label) ?? 0) + 1);
      assert.ok(PRECISE.has(res.code), `case ${i} ${method.name}: imprecise status ${grpc.status[res.code]} (${res.details})`);
      if (res.code === grpc.status.INVALID_ARGUMENT) {
        assert.ok(res.details.length > 0, "a rejection says what was wrong");
        assert.deepEqual(await r.client.dumpIndex(), before, `case ${i} ${method.name}: a rejected call changed the index`);
      }
    }
    if (process.env.FUZZ_VERBOSE) console.log([...tally].sort());
    // The fuzzer reached both sides of the validation on the main RPCs.
    for (const label of ["FindBestWorker:INVALID_ARGUMENT", "IngestKvEvents:INVALID_ARGUMENT", "IngestKvEvents:OK"]) {
      assert.ok((tally.get(label) ?? 0) > 0, `no case produced ${label}: ${JSON.stringify([...tally])}`);
    }
    // Still serving, and still right.
    await r.client.registerWorker({ workerId: 1n, leaseTtlSeconds: 3600 });
    const d = await r.client.findBestWorker({ tokenIds: tokens(16), explain: true });
    assert.ok(d.scores.length >= 1);
  });
});
