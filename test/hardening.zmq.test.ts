// Hardening II (issue 10) over real ZeroMQ sockets: a fleet past libzmq's
// default 1,023-socket limit, descriptors that must not leak, a replay reply
// reaching past the gap, and deeply nested payloads. The engine here is a
// node zeromq XPUB + ROUTER pair sending the frames vLLM's ZmqEventPublisher
// sends ([topic, seq u64 big-endian, msgpack batch]; replay: ROUTER answers
// [identity, "", seq, payload] ... then seq -1). Rows in docs/RELIABILITY.md.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { after, describe, it } from "node:test";
import { status, type ServiceError } from "@grpc/grpc-js";
import { encode } from "@msgpack/msgpack";
import * as zmq from "zeromq";
import { ZmqEventSource } from "../src/sources/engineZmq/zmqEventSource.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;
const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const openFds = () => readdirSync("/proc/self/fd").length;
const seqFrame = (seq: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, seq));
  return b;
};
/** A vLLM batch [ts, events, dp_rank] with one BlockStored of `prompt` (hashes from firstHash) or one AllBlocksCleared. */
function batch(prompt: number[] | "cleared", firstHash = 1n): Buffer {
  const event =
    prompt === "cleared"
      ? ["AllBlocksCleared"]
      : ["BlockStored", Array.from({ length: prompt.length / B }, (_, i) => firstHash + BigInt(i)), null, prompt, B, null, "GPU"];
  return Buffer.from(encode([0.0, [event], 0], { useBigInt64: true }));
}

/** A fake engine: XPUB (so the test knows when the router subscribed) and, optionally, a ROUTER replay socket. */
async function engine(replayAnswer?: (from: bigint) => [bigint, Buffer][]) {
  const pub = new zmq.XPublisher();
  await pub.bind("tcp://127.0.0.1:*");
  const subscribed = pub.receive(); // the router's subscription message
  let replay: string | undefined;
  if (replayAnswer) {
    const router = new zmq.Router();
    await router.bind("tcp://127.0.0.1:*");
    replay = router.lastEndpoint!;
    void (async () => {
      for await (const [id, , start] of router) {
        for (const [seq, payload] of replayAnswer(start.readBigUInt64BE(0))) await router.send([id, Buffer.alloc(0), seqFrame(seq), payload]);
        await router.send([id, Buffer.alloc(0), seqFrame(-1n), Buffer.alloc(0)]);
      }
    })().catch(() => undefined);
    cleanups.push(() => router.close());
  }
  cleanups.push(() => pub.close());
  return { pub, endpoint: pub.lastEndpoint!, replay, subscribed, send: (seq: bigint, payload: Buffer) => pub.send([Buffer.alloc(0), seqFrame(seq), payload]) };
}

async function overlap(r: TestRouter, prompt: number[], workerId: bigint): Promise<number> {
  // FAILED_PRECONDITION until the first batch made the worker known: overlap 0.
  const res = await r.client.findBestWorker({ tokenIds: prompt, explain: true }).catch((e: ServiceError) => {
    if (e.code === status.FAILED_PRECONDITION) return undefined;
    throw e;
  });
  return res?.scores.find((s) => s.worker!.workerId === workerId)?.overlapBlocks ?? 0;
}

async function frames(r: TestRouter, outcome: string): Promise<number> {
  const m = r.server.metrics.registry.getSingleMetric("kvrouter_zmq_frames_total");
  const values = m ? (await m.get()).values : [];
  return values.filter((v) => v.labels.outcome === outcome).reduce((n, v) => n + v.value, 0);
}

describe("hardening over ZeroMQ", () => {
  it("item 3: 1,100 workers registering a zmq_endpoint all subscribe; the next past the limit fails cleanly; no descriptor leaks", async () => {
    const e = await engine();
    const source = new ZmqEventSource({ maxSubscribers: 1_100 });
    const r = await startTestRouter({ blockSize: B }, { eventSources: [source] });
    cleanups.push(() => r.close());
    await r.client.listWorkers(); // the client's connection is open before the baseline
    const baseline = openFds();
    for (let i = 0; i < 1_100; i += 100) {
      await Promise.all(
        Array.from({ length: 100 }, (_, j) => r.client.registerWorker({ workerId: BigInt(i + j + 1), zmqEndpoint: e.endpoint, leaseTtlSeconds: 600 })),
      );
    }
    assert.equal(source.endpoints().length, 1_100);
    const refused = await r.client.registerWorker({ workerId: 5_000n, zmqEndpoint: e.endpoint }).then(() => undefined, (err: ServiceError) => err);
    assert.equal(refused?.code, status.RESOURCE_EXHAUSTED, `status ${refused?.code}: ${refused?.details}`);
    assert.match(refused!.details, /cannot subscribe to tcp:.*the limit is 1100/);
    assert.ok(!(await r.client.listWorkers()).workers.some((w) => w.worker!.workerId === 5_000n), "the refused registration changed nothing");
    // Everything else keeps working: a plain registration, a lease renewal, a re-registration.
    await r.client.registerWorker({ workerId: 6_000n });
    await r.client.keepAlive(1n);
    await r.client.registerWorker({ workerId: 1n, zmqEndpoint: e.endpoint, leaseTtlSeconds: 600 });
    // Deregistered, every subscriber gives its descriptors back.
    for (let i = 0; i < 1_100; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => r.client.deregisterWorker(BigInt(i + j + 1))));
    await waitFor(() => openFds() <= baseline + 8, `descriptors back to the baseline (${baseline}); now ${openFds()}`, 30_000);
    assert.equal(source.endpoints().length, 0);
  });

  it("item 10: a replay reply carrying a seq far past the gap is not applied, and the live batches after the gap are", async () => {
    const A = tokens(8);
    const X = tokens(8, 500);
    const Y = tokens(8, 900);
    // The replay answers the gap [1, 5) correctly, then adds a batch at seq 1,000,000.
    const e = await engine((from) => [
      ...[1n, 2n, 3n, 4n].filter((s) => s >= from).map((s): [bigint, Buffer] => [s, batch(tokens(4, 100 * Number(s)), 10n * s)]),
      [1_000_000n, batch(X, 50n)],
    ]);
    const r = await startTestRouter({ blockSize: B }, { eventSources: [new ZmqEventSource({ endpoints: [{ workerId: 3n, endpoint: e.endpoint, replay: e.replay, dpRank: 0, engine: "vllm", topic: "" }] })] });
    cleanups.push(() => r.close());
    await e.subscribed;
    await e.send(0n, batch(A, 1n));
    await waitFor(async () => (await overlap(r, A, 3n)) === 2, "seq 0 applied", 30_000);
    await e.send(5n, batch(tokens(4, 700), 70n)); // seqs 1-4 missed: replayed
    await e.send(6n, batch("cleared"));
    await e.send(7n, batch(Y, 90n));
    await waitFor(async () => (await overlap(r, Y, 3n)) === 2, "the live batches after the gap applied (seq 7 holds Y)", 30_000);
    assert.equal(await overlap(r, X, 3n), 0, "the out-of-range replay batch was not applied");
    assert.equal(await overlap(r, A, 3n), 0, "the live AllBlocksCleared (seq 6) applied");
    assert.equal(await frames(r, "duplicate"), 0, "no live batch was taken for a duplicate");
  });

  it("item 2: a deeply nested MessagePack payload is counted as undecodable and the next batch applies", async () => {
    const e = await engine();
    const r = await startTestRouter({ blockSize: B }, { eventSources: [new ZmqEventSource({ endpoints: [{ workerId: 4n, endpoint: e.endpoint, dpRank: 0, engine: "vllm", topic: "" }] })] });
    cleanups.push(() => r.close());
    await e.subscribed;
    const nested = Buffer.alloc(10_001, 0x91);
    nested[10_000] = 0xc0;
    // As the whole payload, and as one event's token_ids inside an otherwise valid batch.
    // [ts, [["BlockStored", [1], nil, <nested>, 4, nil, "GPU"]], 0], encoded by hand around the nested bytes.
    const inEvent = Buffer.concat([
      Buffer.from([0x93, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x91, 0x97]),
      Buffer.from(encode("BlockStored")),
      Buffer.from(encode([1])),
      Buffer.from([0xc0]),
      nested,
      Buffer.from([0x04, 0xc0]),
      Buffer.from(encode("GPU")),
      Buffer.from([0x00]),
    ]);
    await e.send(0n, nested);
    await e.send(1n, inEvent);
    const P = tokens(8, 300);
    await e.send(2n, batch(P, 5n));
    await waitFor(async () => (await overlap(r, P, 4n)) === 2, "the valid batch after the nested ones applied", 30_000);
    assert.equal(await frames(r, "undecodable"), 2);
  });
});
