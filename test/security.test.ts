// TLS, mutual TLS and the shared-token check, against a real server.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { type TestPki, makeTestPki } from "./support/certs.js";
import { startTestRouter, tokens } from "./support/router.js";
import { stored } from "./support/events.js";

const B = 4;
let pki: TestPki;
before(() => {
  pki = makeTestPki();
});
after(() => pki.remove());

function codeOf(e: unknown): number {
  return (e as grpc.ServiceError).code;
}

describe("TLS", () => {
  it("serves TLS clients that trust its CA and refuses plaintext ones", async () => {
    const r = await startTestRouter({ blockSize: B }, { tls: { cert: pki.serverCert, key: pki.serverKey } });
    const secure = new KvRouterClient(r.address, grpc.credentials.createSsl(pki.caCert));
    try {
      await secure.registerWorker({ workerId: 1n });
      assert.equal((await secure.findBestWorker({ tokenIds: tokens(8) })).worker!.workerId, 1n);
      await assert.rejects(r.client.listWorkers(), (e) => codeOf(e) === grpc.status.UNAVAILABLE);
    } finally {
      secure.close();
      await r.close();
    }
  });

  it("with --tls-client-ca, serves only clients whose certificate that CA signed", async () => {
    const r = await startTestRouter(
      { blockSize: B },
      { tls: { cert: pki.serverCert, key: pki.serverKey, clientCa: pki.caCert } },
    );
    const trusted = new KvRouterClient(r.address, grpc.credentials.createSsl(pki.caCert, pki.clientKey, pki.clientCert));
    const anonymous = new KvRouterClient(r.address, grpc.credentials.createSsl(pki.caCert));
    const stranger = new KvRouterClient(r.address, grpc.credentials.createSsl(pki.caCert, pki.strangerKey, pki.strangerCert));
    try {
      assert.deepEqual((await trusted.listWorkers()).workers, []);
      await assert.rejects(anonymous.listWorkers(), (e) => codeOf(e) === grpc.status.UNAVAILABLE);
      await assert.rejects(stranger.listWorkers(), (e) => codeOf(e) === grpc.status.UNAVAILABLE);
    } finally {
      for (const c of [trusted, anonymous, stranger]) c.close();
      await r.close();
    }
  });
});

describe("shared token", () => {
  const token = "s3cret-token";

  function withToken(value: string): grpc.CallCredentials {
    return grpc.credentials.createFromMetadataGenerator((_params, cb) => {
      const md = new grpc.Metadata();
      md.set("authorization", value);
      cb(null, md);
    });
  }

  it("refuses state-changing calls without the token and serves them with it", async () => {
    const r = await startTestRouter({ blockSize: B }, { authToken: token, tls: { cert: pki.serverCert, key: pki.serverKey } });
    const tlsCa = grpc.credentials.createSsl(pki.caCert);
    const anonymous = new KvRouterClient(r.address, tlsCa);
    const wrong = new KvRouterClient(r.address, grpc.credentials.combineChannelCredentials(tlsCa, withToken("Bearer nope")));
    const authed = new KvRouterClient(r.address, grpc.credentials.combineChannelCredentials(tlsCa, withToken(`Bearer ${token}`)));
    try {
      const refused = (e: unknown) => codeOf(e) === grpc.status.UNAUTHENTICATED;
      await assert.rejects(anonymous.registerWorker({ workerId: 1n }), refused);
      await assert.rejects(anonymous.sendEvents([stored(1, 1, tokens(8), B, 10n)]), refused);
      await assert.rejects(anonymous.free("x"), refused);
      await assert.rejects(anonymous.findBestWorker({ tokenIds: tokens(8), requestId: "r1" }), refused);
      await assert.rejects(wrong.registerWorker({ workerId: 1n }), (e) => refused(e) && /does not match/.test((e as grpc.ServiceError).details));
      assert.deepEqual((await anonymous.listWorkers()).workers, [], "refused calls changed nothing");

      await authed.sendEvents([stored(1, 1, tokens(8), B, 10n)]);
      await authed.registerWorker({ workerId: 2n });
      // Read-only calls need no token.
      const d = await anonymous.findBestWorker({ tokenIds: tokens(8) });
      assert.equal(d.worker!.workerId, 1n);
      assert.equal((await anonymous.listWorkers()).workers.length, 2);
      const counted = await r.server.metrics.registry.getSingleMetric("kvrouter_unauthenticated_total")!.get();
      assert.equal(counted.values.reduce((a, v) => a + v.value, 0), 5);
    } finally {
      for (const c of [anonymous, wrong, authed]) c.close();
      await r.close();
    }
  });
});

describe("--auth-reads", () => {
  const token = "reads-token";

  it("a plain FindBestWorker without the token does not say whether the prompt is cached, over gRPC and Connect", async () => {
    const r = await startTestRouter({ blockSize: B, predictedTtlMs: 60_000 }, { authToken: token, authReads: true, httpPort: 0 });
    // Call credentials need TLS; on this plaintext channel the token goes in by interceptor.
    const authed = new KvRouterClient(r.address, grpc.credentials.createInsecure(), {
      interceptors: [
        (options, next) =>
          new grpc.InterceptingCall(next(options), {
            start(metadata, listener, nxt) {
              metadata.set("authorization", `Bearer ${token}`);
              nxt(metadata, listener);
            },
          }),
      ],
    });
    const connect = async (body: unknown, withToken: boolean) => {
      const res = await fetch(`http://127.0.0.1:${r.server.httpPort}/kvrouter.v1.KvRouterService/FindBestWorker`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(withToken ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 200);
      const json = (await res.json()) as { overlapBlocks?: number; predictedBlocks?: number };
      return { overlapBlocks: json.overlapBlocks ?? 0, predictedBlocks: json.predictedBlocks ?? 0 };
    };
    try {
      const cached = tokens(8); // 2 blocks on worker 1, from its events
      const routed = tokens(12, 500); // 3 blocks predicted on the worker a routed request went to
      await authed.sendEvents([stored(1, 1, cached, B, 10n)]);
      await authed.findBestWorker({ tokenIds: routed, requestId: "r1" });
      const hits = (d: { overlapBlocks: number; predictedBlocks: number }) => [d.overlapBlocks, d.predictedBlocks];
      // With the token, the answer says how much is cached.
      assert.deepEqual(hits(await authed.findBestWorker({ tokenIds: cached })), [2, 0]);
      assert.deepEqual(hits(await authed.findBestWorker({ tokenIds: routed })), [3, 3]);
      assert.deepEqual(hits(await connect({ tokenIds: cached }, true)), [2, 0]);
      // Without it, the call still routes but says nothing of the cache.
      for (const prompt of [cached, routed]) {
        const anonymous = await r.client.findBestWorker({ tokenIds: prompt });
        assert.equal(anonymous.worker!.workerId, 1n);
        assert.equal(anonymous.promptBlocks, prompt.length / B);
        assert.deepEqual(hits(anonymous), [0, 0], "gRPC");
        assert.deepEqual(hits(await connect({ tokenIds: prompt }, false)), [0, 0], "Connect");
      }
    } finally {
      authed.close();
      await r.close();
    }
  });
});

describe("limits", () => {
  it("refuses a message over --max-message-bytes and keeps serving", async () => {
    const r = await startTestRouter({ blockSize: B }, { maxMessageBytes: 4096 });
    try {
      await r.client.registerWorker({ workerId: 1n });
      await assert.rejects(r.client.findBestWorker({ tokenIds: tokens(4000) }), (e) => codeOf(e) === grpc.status.RESOURCE_EXHAUSTED);
      assert.equal((await r.client.findBestWorker({ tokenIds: tokens(8) })).worker!.workerId, 1n);
    } finally {
      await r.close();
    }
  });
});
