// A decoder thread (--ingest-threads) that dies after start-up (issue 21
// reliability). The test ends one with Worker.terminate(), reached through
// the test-only onIngestThread hook: like a thread killed for memory or one
// that called process.exit, it runs no more JavaScript and answers nothing.
// Before the fix the pool listened for "error" only, so a decode posted to a
// dead thread never settled and its IngestKvEvents stream hung for good.
// Now the decode fails at once with UNAVAILABLE naming the message and the
// events applied before it; the thread is replaced (decoders hold no state)
// and counted; past the restart bound the router fails as with a dead shard.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Worker } from "node:worker_threads";
import * as grpc from "@grpc/grpc-js";
import { stored } from "./support/events.js";
import { startTestRouter, tokens, metricsPage } from "./support/router.js";

const B = 4;
/** Message i of worker `w`'s chain: one stored block with event id `i + first`, continuing the block before it. */
const link = (w: number, i: number) => ({
  events: [stored(w, i + 1, tokens(B, 100 * w + 7 * i), B, BigInt(1000 * w + i), { parent: i === 0 ? undefined : BigInt(1000 * w + i - 1) })],
});
const chain = (w: number, from: number, to: number) => Array.from({ length: to - from }, (_, k) => link(w, from + k));

/** Polls `ready` every 20 ms, for up to 10 s. */
async function until(what: string, ready: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await ready()) return;
    await new Promise((res) => setTimeout(res, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/**
 * Makes `thread` die the moment the pool hands it its next message: it is
 * terminated first, so the message is never decoded (as with a thread that
 * dies while decoding).
 */
function dieOnNextMessage(thread: Worker): void {
  const post = thread.postMessage.bind(thread);
  thread.postMessage = (value: unknown, transfer?: readonly ArrayBuffer[]) => {
    thread.postMessage = post;
    void thread.terminate();
    post(value, transfer as ArrayBuffer[]);
  };
}

describe("server with --ingest-threads 2 whose decoder thread dies", { timeout: 30_000 }, () => {
  it("the message it held ends its stream UNAVAILABLE (nothing after it applies); the thread is restarted and counted; later streams apply", async () => {
    const threads: Worker[] = [];
    const r = await startTestRouter({ blockSize: B }, { ingestThreads: 2, metricsPort: 0, onIngestThread: (i, t) => (threads[i] = t) });
    const probe = (path: string) => metricsPage(r, path);
    try {
      assert.equal(threads.length, 2);
      const doomed = threads[1];
      dieOnNextMessage(doomed);
      // Round robin from a fresh pool: message 0 goes to thread 0, message 1 to thread 1 (which dies with it).
      await assert.rejects(r.client.ingestKvEvents(chain(5, 0, 4)), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.UNAVAILABLE, err.details);
        assert.match(
          err.details,
          /^message 1: ingest decoder thread 1 stopped before it decoded this message \(its thread exited with code 1\); nothing of it was applied; send it again; 1 events applied before this message$/,
        );
        return true;
      });
      const w5 = async () => (await r.client.listWorkers()).workers.find((w) => w.worker?.workerId === 5n);
      assert.equal((await w5())?.lastEventId, 1n, "messages 2 and 3 were decoded but not applied");

      await until("the replacement thread", () => threads[1] !== doomed);
      assert.match(await probe("/metrics"), /^kvrouter_ingest_decoder_restarts_total 1$/m);
      assert.equal(await probe("/readyz"), "200 ready\n");
      // The stream resent from the failed message: every message applies, on both threads.
      const res = await r.client.ingestKvEvents(chain(5, 1, 9));
      assert.equal(res.applied, 8n);
      assert.equal((await w5())?.lastEventId, 9n);
      assert.equal(r.server.notReady(), undefined);
    } finally {
      await r.close();
    }
  });

  it("past the restart bound the router fails: UNAVAILABLE for ingest at once, not ready and not live, server.failed settles", async () => {
    const threads: Worker[] = [];
    const r = await startTestRouter(
      { blockSize: B },
      { ingestThreads: 2, metricsPort: 0, ingestDecoderRestarts: { max: 1, windowMs: 60_000 }, onIngestThread: (i, t) => (threads[i] = t) },
    );
    const probe = (path: string) => metricsPage(r, path);
    let failed: Error | undefined;
    void r.server.failed.then((err) => (failed = err));
    try {
      assert.equal((await r.client.ingestKvEvents(chain(6, 0, 2))).applied, 2n);
      const first = threads[0];
      await first.terminate();
      await until("the replacement thread", () => threads[0] !== first);
      assert.equal(failed, undefined, "one restart is within the bound");
      await threads[0].terminate();
      await until("server.failed", () => failed !== undefined);
      assert.match(failed!.message, /^ingest decoder threads stopped 2 times within 60 s \(the last: thread 0, its thread exited with code 1\); the router cannot decode IngestKvEvents until it is restarted$/);
      assert.equal(threads.length, 2, "no thread started past the bound");

      await assert.rejects(r.client.ingestKvEvents(chain(6, 2, 3)), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.UNAVAILABLE, err.details);
        assert.match(err.details, /^message 0: ingest decoder threads stopped 2 times/);
        return true;
      });
      assert.match(await probe("/readyz"), /^503 not ready: ingest decoder threads stopped 2 times/);
      assert.match(await probe("/healthz"), /^503 not live: ingest decoder threads stopped 2 times/);
      assert.match(await probe("/metrics"), /^kvrouter_ingest_decoder_restarts_total 1$/m);
      // Queries do not need the decoders: they still answer until the CLI stops the router.
      assert.equal((await r.client.findBestWorker({ tokenIds: [...tokens(B, 600), ...tokens(B, 607)] })).overlapBlocks, 2);
    } finally {
      await r.close();
    }
  });

  it("a decoder that throws (a bug, made with a test-only option) ends no thread: its messages are decoded by protobuf-es, or refused precisely", async () => {
    const threads: Worker[] = [];
    const r = await startTestRouter({ blockSize: B }, { ingestThreads: 2, metricsPort: 0, testOnlyIngestDecoderThrows: true, onIngestThread: (i, t) => (threads[i] = t) });
    try {
      const first = [...threads];
      assert.equal((await r.client.ingestKvEvents(chain(7, 0, 6))).applied, 6n);
      const bad = { events: [stored(7, 7, tokens(3, 900), 3, 9000n)] }; // 3 tokens: not the router's block size
      await assert.rejects(r.client.ingestKvEvents([link(7, 6), bad]), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT, err.details);
        assert.match(err.details, /^message 1 events\[0\] .*block size.*; 1 events applied before this message$/);
        return true;
      });
      assert.deepEqual(threads, first, "no thread was replaced");
      assert.match(await metricsPage(r, "/metrics"), /^kvrouter_ingest_decoder_restarts_total 0$/m);
    } finally {
      await r.close();
    }
  });
});
