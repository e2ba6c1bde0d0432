// NATS mode against a real nats-server: Dynamo-format events through
// JetStream, the MessagePack event plane, malformed input, restart replay,
// and worker discovery through a KV bucket.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { type NatsConnection, connect } from "@nats-io/transport-node";
import { localBlockHash } from "../src/hashing/blockHash.js";
import { PrefixIndex } from "../src/indexer/prefixIndex.js";
import { registerWorker } from "../src/discovery/natsKv.js";
import { ensureStream } from "../src/sources/nats/jetstreamIngest.js";
import { natsNames } from "../src/protocols/natsNames.js";
import { NatsEventSource, type NatsModeOptions } from "../src/sources/nats/natsSource.js";
import { KvRouter } from "../src/router/router.js";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { publishKvEvents, publishKvEventsBulk } from "../src/sources/nats/jetstreamPublisher.js";
import { eventPlaneMessage } from "../src/sources/nats/corePublisher.js";
import {
  type NatsCluster,
  canonicalDump,
  natsModeOptions,
  natsSuite,
  referenceDump,
  startNats,
  syntheticEvents,
} from "./support/natsServer.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const B = 4;
const ENDPOINT = "dyn.backend.generate";
const names = natsNames(ENDPOINT);

function natsOptions(urls: string, over: Partial<NatsModeOptions> = {}): NatsModeOptions {
  return natsModeOptions(urls, ENDPOINT, over);
}

async function startNatsRouter(urls: string, over: Partial<NatsModeOptions> = {}): Promise<{ r: TestRouter; src: NatsEventSource }> {
  const src = new NatsEventSource(natsOptions(urls, over));
  const r = await startTestRouter({ blockSize: B }, { eventSources: [src] });
  return { r, src };
}

async function overlapOf(r: TestRouter, prompt: number[], workerId: bigint): Promise<number> {
  const res = await r.client.findBestWorker({ tokenIds: prompt, explain: true });
  return res.scores.find((s) => s.worker!.workerId === workerId)?.overlapBlocks ?? -1;
}

describe("NATS mode: events, discovery, restart", () => {
  let nats: NatsCluster;
  let nc: NatsConnection;
  const routers: TestRouter[] = [];
  natsSuite(routers, (n, c) => {
    nats = n;
    nc = c;
  });

  it("applies RouterEvents published in Dynamo's JSON format; FindBestWorker reflects them", async () => {
    const { r, src } = await startNatsRouter(nats.urls, { routerId: "events-a" });
    routers.push(r);
    const prompt = tokens(12, 500); // 3 blocks
    const local = [0, 1, 2].map((i) => localBlockHash(prompt.slice(i * B, (i + 1) * B)));
    // Written by hand as Dynamo serialises it: u64s as bare JSON numbers (beyond 2^53 too).
    const worker = 18446744073709551557n;
    const body =
      `{"worker_id":${worker},"event":{"event_id":1,"data":{"stored":{"parent_hash":null,"blocks":[` +
      `{"block_hash":18446744073709551000,"tokens_hash":${local[0]}},` +
      `{"block_hash":9007199254740993,"tokens_hash":${local[1]}}]}},"dp_rank":0}}`;
    const js = jetstream(nc);
    await js.publish(names.publishSubject, body);
    const other = 7n;
    await publishKvEvents(js, ENDPOINT, [
      { kind: "stored", workerId: other, dpRank: 0, eventId: 1n, blocks: [{ externalHash: 1n, localHash: local[0] }] },
    ]);
    await src.ingest!.caughtUp();
    assert.equal(await overlapOf(r, prompt, worker), 2);
    assert.equal(await overlapOf(r, prompt, other), 1);
    const best = await r.client.findBestWorker({ tokenIds: prompt });
    assert.equal(best.worker!.workerId, worker);
    assert.equal(best.overlapBlocks, 2);

    // Removal of the second block, then "cleared" for the other worker.
    await js.publish(
      names.publishSubject,
      `{"worker_id":${worker},"event":{"event_id":2,"data":{"removed":{"block_hashes":[9007199254740993]}},"dp_rank":0}}`,
    );
    await js.publish(names.publishSubject, `{"worker_id":${other},"event":{"event_id":2,"data":"cleared","dp_rank":0}}`);
    await src.ingest!.caughtUp();
    assert.equal(await overlapOf(r, prompt, worker), 1);
    assert.equal(await overlapOf(r, prompt, other), 0);
  });

  it("counts and acks malformed messages without blocking the stream", async () => {
    const { r, src } = await startNatsRouter(nats.urls, { routerId: "events-bad" });
    routers.push(r);
    await src.ingest!.caughtUp();
    const before = { ...src.ingest!.stats };
    const js = jetstream(nc);
    await js.publish(names.publishSubject, "not json at all");
    await js.publish(names.publishSubject, `{"worker_id":5,"event":{"event_id":1,"data":{"stored":{"blocks":[{"block_hash":-1}]}}}}`);
    await js.publish(names.publishSubject, `{"worker_id":5,"event":{"event_id":2,"data":{"stored":{"blocks":[{"block_hash":1}]}}}}`);
    await js.publish(names.publishSubject, `{"worker_id":5,"event":{"event_id":3,"data":{"exploded":{}}}}`);
    await js.publish(
      names.publishSubject,
      `{"worker_id":5,"event":{"event_id":4,"data":{"stored":{"parent_hash":null,"blocks":[{"block_hash":11,"tokens_hash":12}]}}}}`,
    );
    await src.ingest!.caughtUp();
    assert.equal(src.ingest!.stats.malformed - before.malformed, 4);
    assert.equal(src.ingest!.stats.applied - before.applied, 1, "the valid event after the bad ones still applies");
    // ...and the count is on /metrics.
    const metric = await r.server.metrics.registry.getSingleMetric("kvrouter_nats_messages_total")!.get();
    assert.equal(metric.values.find((v) => v.labels.outcome === "stream_malformed")?.value, src.ingest!.stats.malformedMessages);
    // Nothing is left pending for redelivery: every message was acked.
    const jsm = await jetstreamManager(nc);
    await waitFor(async () => {
      const ci = await jsm.consumers.info(names.stream, "events-bad");
      return ci.num_ack_pending === 0 && ci.num_pending === 0;
    }, "consumer fully acked");
  });

  it("applies the MessagePack event plane (core NATS envelopes)", async () => {
    const { r, src } = await startNatsRouter(nats.urls, { routerId: "events-plane" });
    routers.push(r);
    const prompt = tokens(8, 9000);
    const local = [0, 1].map((i) => localBlockHash(prompt.slice(i * B, (i + 1) * B)));
    const ev = {
      kind: "stored" as const,
      workerId: 0xfedcba9876543210n,
      dpRank: 0,
      eventId: 1n,
      blocks: local.map((l, i) => ({ externalHash: 0xffff_0000_0000_0000n + BigInt(i), localHash: l })),
    };
    nc.publish(names.eventPlaneSubject, eventPlaneMessage(ev, 1n, 1n));
    nc.publish(names.eventPlaneSubject, new Uint8Array([0xc1, 0x00])); // not MessagePack
    await nc.flush();
    await waitFor(() => src.eventPlaneStats.applied === 1 && src.eventPlaneStats.malformed === 1, "event plane applied");
    assert.equal(await overlapOf(r, prompt, ev.workerId), 2);
  });

  it("a restarted router replays the stream and rebuilds the same index", async () => {
    const events = syntheticEvents(3000, 3, 42).map((e) => ({ ...e, workerId: e.workerId + 77n }));
    const first = await startNatsRouter(nats.urls, { routerId: "restart-me" });
    await publishKvEventsBulk(nc, ENDPOINT, events.slice(0, 1500));
    await first.src.ingest!.caughtUp();
    await first.r.close();
    // Events published while the router is down are not lost.
    await publishKvEventsBulk(nc, ENDPOINT, events.slice(1500));
    const second = await startNatsRouter(nats.urls, { routerId: "restart-me" });
    routers.push(second.r);
    await second.src.ingest!.caughtUp();
    const mine = canonicalDump(second.r.server.router.index.dump()).filter((l) => events.some((e) => l.startsWith(`${e.workerId}:`)));
    assert.deepEqual(mine, referenceDump(events));
  });

  it("a hole in the stream (a deleted message) is looked up, skipped, and does not stall the consumer", async () => {
    const ep = "hole.backend.generate";
    const holeNames = natsNames(ep);
    const jsm = await jetstreamManager(nc);
    await ensureStream(jsm, holeNames, 1);
    const ev = (eventId: bigint) => ({
      kind: "stored" as const,
      workerId: 900n,
      dpRank: 0,
      eventId,
      blocks: [{ externalHash: 9000n + eventId, localHash: 90n + eventId }],
    });
    await publishKvEvents(jetstream(nc), ep, [ev(1n), ev(2n), ev(3n)]);
    await jsm.streams.deleteMessage(holeNames.stream, 2);
    const src = new NatsEventSource(natsOptions(nats.urls, { routerId: "hole", endpoint: ep }));
    const r = await startTestRouter({ blockSize: B }, { eventSources: [src] });
    routers.push(r);
    await src.ingest!.caughtUp();
    assert.equal(src.ingest!.lastAppliedSeq, 3);
    assert.equal(src.ingest!.stats.messages, 2, "messages 1 and 3 applied; 2 is gone");
    const held = canonicalDump(r.server.router.index.dump()).filter((l) => l.startsWith("900:"));
    assert.deepEqual(held, [`900:0@3 ->9001=91~91`, `900:0@3 ->9003=93~93`]); // a root block's sequence hash is its local hash
  });

  it("discovery: a registered worker is routable; deleted or expired keys remove it with its blocks", async () => {
    const { r } = await startNatsRouter(nats.urls, { routerId: "discovery" });
    routers.push(r);
    const wnc = await connect({ servers: nats.urls });
    try {
      const a = await registerWorker(wnc, ENDPOINT, { workerId: 501n, dpRanks: [0, 1], ttlMs: 60_000, grpcAddress: "127.0.0.1:1" });
      const b = await registerWorker(wnc, ENDPOINT, { workerId: 502n, dpRanks: [0], ttlMs: 1_000 });
      const listed = async () => new Set((await r.client.listWorkers()).workers.filter((w) => w.registered).map((w) => `${w.worker!.workerId}:${w.worker!.dpRank}`));
      await waitFor(async () => {
        const s = await listed();
        return s.has("501:0") && s.has("501:1") && s.has("502:0");
      }, "registered workers listed");
      const res = await r.client.findBestWorker({ tokenIds: tokens(8), explain: true, allowedWorkers: [{ workerId: 502n, dpRank: 0 }] });
      assert.equal(res.worker!.workerId, 502n);

      // Worker 502 stops refreshing: gone once its TTL runs out.
      b.stopRefreshing();
      await waitFor(async () => !(await listed()).has("502:0"), "expired worker removed", 5_000);
      const after = await r.client.findBestWorker({ tokenIds: tokens(8), explain: true });
      assert.ok(after.scores.every((s) => s.worker!.workerId !== 502n), "expired worker no longer scored");

      // Worker 501 deregisters (key deleted): gone at once.
      await a.deregister();
      await waitFor(async () => !(await listed()).has("501:0"), "deleted worker removed", 5_000);
    } finally {
      await wnc.close();
    }
  });
});

describe("NATS mode: secured servers", () => {
  const servers: NatsCluster[] = [];
  after(async () => {
    for (const s of servers) await s.stop();
  });

  for (const [what, serverArgs, good, bad] of [
    ["user/password", ["--user", "kvr", "--pass", "s3cret"], { user: "kvr", password: "s3cret" }, { user: "kvr", password: "wrong" }],
    ["token", ["--auth", "t0ken"], { token: "t0ken" }, { token: "other" }],
  ] as const) {
    it(`authenticates with ${what}; refuses to start with bad credentials`, async () => {
      const nats = await startNats([...serverArgs]);
      servers.push(nats);
      const src = new NatsEventSource(natsOptions(nats.urls, { routerId: "secured", connect: { urls: nats.urls, ...good } }));
      const r = await startTestRouter({ blockSize: B }, { eventSources: [src] });
      try {
        const nc = await connect({ servers: nats.urls, ...("token" in good ? { token: good.token } : { user: good.user, pass: good.password }) });
        await publishKvEvents(jetstream(nc), ENDPOINT, [
          { kind: "stored", workerId: 3n, dpRank: 0, eventId: 1n, blocks: [{ externalHash: 1n, localHash: 2n }] },
        ]);
        await src.ingest!.caughtUp();
        assert.equal(src.ingest!.stats.applied, 1);
        await nc.close();
      } finally {
        await r.close();
      }
      const denied = new NatsEventSource(natsOptions(nats.urls, { routerId: "denied", connect: { urls: nats.urls, ...bad } }));
      await assert.rejects(denied.start(new KvRouter({ ...DEFAULT_ROUTER_CONFIG, blockSize: B }, new PrefixIndex())), /auth/i);
      await denied.stop();
    });
  }
});

describe("NATS mode: TLS", () => {
  let nats: NatsCluster | undefined;
  let dir = "";
  after(async () => {
    await nats?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("connects over mutual TLS with --nats-tls-ca/--nats-tls-cert/--nats-tls-key", async () => {
    dir = mkdtempSync(join(tmpdir(), "kvr-nats-tls-"));
    const f = (n: string) => join(dir, n);
    const ssl = (args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });
    ssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kvr-test-ca", "-keyout", f("ca.key"), "-out", f("ca.pem")]);
    writeFileSync(f("san.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    for (const who of ["server", "client"]) {
      ssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${who}`, "-keyout", f(`${who}.key`), "-out", f(`${who}.csr`)]);
      ssl(["x509", "-req", "-in", f(`${who}.csr`), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-days", "1", "-extfile", f("san.cnf"), "-out", f(`${who}.pem`)]);
    }
    nats = await startNats(["--tlsverify", "--tlscert", f("server.pem"), "--tlskey", f("server.key"), "--tlscacert", f("ca.pem")]);
    const tls = { tlsCaFile: f("ca.pem"), tlsCertFile: f("client.pem"), tlsKeyFile: f("client.key") };
    const src = new NatsEventSource(natsOptions(nats.urls, { routerId: "tls", connect: { urls: nats.urls, ...tls } }));
    const r = await startTestRouter({ blockSize: B }, { eventSources: [src] });
    try {
      const nc = await connect({ servers: nats.urls, tls: { caFile: tls.tlsCaFile, certFile: tls.tlsCertFile, keyFile: tls.tlsKeyFile } });
      await publishKvEvents(jetstream(nc), ENDPOINT, [
        { kind: "stored", workerId: 4n, dpRank: 0, eventId: 1n, blocks: [{ externalHash: 1n, localHash: 2n }] },
      ]);
      await src.ingest!.caughtUp();
      assert.equal(src.ingest!.stats.applied, 1);
      await nc.close();
    } finally {
      await r.close();
    }
    // Without a client certificate the server refuses the router.
    const noCert = new NatsEventSource(natsOptions(nats.urls, { routerId: "no-cert", connect: { urls: nats.urls, tlsCaFile: tls.tlsCaFile } }));
    await assert.rejects(noCert.start(new KvRouter({ ...DEFAULT_ROUTER_CONFIG, blockSize: B }, new PrefixIndex())));
    await noCert.stop();
  });
});
