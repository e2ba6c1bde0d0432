// Bad input never kills the server and never changes its state: every case
// gets a precise status, is counted, and the server keeps serving.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { type EventInit, stored } from "./support/events.js";

const B = 4;

interface GrpcError {
  code: number;
  details: string;
}

function expectStatus(code: grpc.status, pattern: RegExp) {
  return (e: GrpcError) => {
    assert.equal(e.code, code, `status ${grpc.status[e.code]} (${e.details})`);
    assert.match(e.details, pattern);
    return true;
  };
}

describe("bad input", () => {
  let r: TestRouter;
  let baseline: unknown;
  const prompt = tokens(16, 0);

  before(async () => {
    r = await startTestRouter({ blockSize: B }, { maxTokens: 64 });
    await r.client.registerWorker({ workerId: 1n, leaseTtlSeconds: 600 });
    await r.client.sendEvents([stored(1, 1, prompt, B, 100n), stored(2, 1, tokens(8, 0), B, 200n)]);
    baseline = await r.client.dumpIndex();
  });

  after(async () => {
    // Whatever was thrown at it, the index is as it was and the server still answers.
    assert.deepEqual(await r.client.dumpIndex(), baseline);
    const d = await r.client.findBestWorker({ tokenIds: prompt });
    assert.equal(d.worker!.workerId, 1n);
    assert.equal(d.overlapBlocks, 4);
    const invalid = await r.server.metrics.registry.getSingleMetric("kvrouter_invalid_requests_total")!.get();
    assert.ok(invalid.values.reduce((a, v) => a + v.value, 0) >= 10, "rejections are counted");
    await r.close();
  });

  it("an empty prompt", async () => {
    await assert.rejects(r.client.findBestWorker({ tokenIds: [] }), expectStatus(grpc.status.INVALID_ARGUMENT, /token_ids is empty/));
  });

  it("a prompt over --max-tokens", async () => {
    await assert.rejects(
      r.client.findBestWorker({ tokenIds: tokens(65) }),
      expectStatus(grpc.status.INVALID_ARGUMENT, /token_ids has 65 tokens; the limit is 64 \(--max-tokens\)/),
    );
  });

  it("an unknown worker in allowed_workers", async () => {
    await assert.rejects(
      r.client.findBestWorker({ tokenIds: prompt, allowedWorkers: [{ workerId: 1n }, { workerId: 42n, dpRank: 3 }] }),
      expectStatus(grpc.status.INVALID_ARGUMENT, /allowed_workers\[1\]: worker 42 dp_rank 3 is not known/),
    );
  });

  it("a request id already active", async () => {
    await r.client.findBestWorker({ tokenIds: prompt, requestId: "dup" });
    await assert.rejects(
      r.client.findBestWorker({ tokenIds: prompt, requestId: "dup" }),
      expectStatus(grpc.status.ALREADY_EXISTS, /request_id "dup" is already active on worker 1:0/),
    );
    assert.equal((await r.client.free("dup")).found, true);
  });

  it("Free and MarkPrefillCompleted without a request id, or with a huge one", async () => {
    await assert.rejects(r.client.free(""), expectStatus(grpc.status.INVALID_ARGUMENT, /request_id is empty/));
    await assert.rejects(r.client.markPrefillCompleted(""), expectStatus(grpc.status.INVALID_ARGUMENT, /request_id is empty/));
    await assert.rejects(r.client.free("x".repeat(5000)), expectStatus(grpc.status.INVALID_ARGUMENT, /request_id is 5000 characters; the limit is 1024/));
  });

  it("KeepAlive for a worker with no lease, and an oversized lease", async () => {
    await assert.rejects(r.client.keepAlive(77n), expectStatus(grpc.status.NOT_FOUND, /worker 77 holds no lease/));
    await assert.rejects(
      r.client.registerWorker({ workerId: 5n, leaseTtlSeconds: 10_000_000 }),
      expectStatus(grpc.status.INVALID_ARGUMENT, /lease_ttl_seconds is 10000000; the limit is 86400/),
    );
  });

  const malformed: [string, EventInit, RegExp][] = [
    ["an event with no data (unset oneof)", { workerId: 1n, eventId: 2n }, /events\[1\] \(worker 1 dp_rank 0 event_id 2\): data is not set/],
    [
      "a stored block with neither token_ids nor tokens_hash",
      { workerId: 1n, eventId: 2n, data: { case: "stored", value: { blocks: [{ blockHash: 9n }] } } },
      /stored\.blocks\[0\] must set exactly one of token_ids or tokens_hash \(neither set\)/,
    ],
    [
      "a stored block with both token_ids and tokens_hash",
      { workerId: 1n, eventId: 2n, data: { case: "stored", value: { blocks: [{ blockHash: 9n, tokenIds: [1, 2, 3, 4], tokensHash: 5n }] } } },
      /stored\.blocks\[0\] must set exactly one of token_ids or tokens_hash \(both set\)/,
    ],
    [
      "a block whose size differs from --block-size",
      { workerId: 1n, eventId: 2n, data: { case: "stored", value: { blocks: [{ blockHash: 9n, tokenIds: [1, 2, 3] }] } } },
      /stored\.blocks\[0\] has 3 token ids but the router's block size is 4/,
    ],
    ["a stored event with no blocks", { workerId: 1n, eventId: 2n, data: { case: "stored", value: { blocks: [] } } }, /stored\.blocks is empty/],
  ];
  for (const [name, event, pattern] of malformed) {
    it(`a message holding ${name} is rejected whole`, async () => {
      // The valid event before the bad one must not be applied either.
      const valid = stored(3, 1, tokens(4, 777), B, 300n);
      await assert.rejects(r.client.sendEvents([valid, event]), expectStatus(grpc.status.INVALID_ARGUMENT, pattern));
    });
  }

  it("a message that is not protobuf at all", async () => {
    const raw = new grpc.Client(r.address, grpc.credentials.createInsecure());
    try {
      const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x08]);
      await new Promise<void>((resolve, reject) => {
        raw.makeUnaryRequest(
          "/kvrouter.v1.KvRouterService/FindBestWorker",
          (b: Buffer) => b,
          (b: Buffer) => b,
          garbage,
          (err) => {
            try {
              assert.ok(err);
              expectStatus(grpc.status.INVALID_ARGUMENT, /request is not a valid kvrouter\.v1\.FindBestWorkerRequest/)(err as GrpcError);
              resolve();
            } catch (e) {
              reject(e);
            }
          },
        );
      });
    } finally {
      raw.close();
    }
  });

  it("no workers at all is a failed precondition, not a crash", async () => {
    const empty = await startTestRouter({ blockSize: B });
    try {
      await assert.rejects(
        empty.client.findBestWorker({ tokenIds: prompt }),
        expectStatus(grpc.status.FAILED_PRECONDITION, /no workers are known yet/),
      );
    } finally {
      await empty.close();
    }
  });
});
