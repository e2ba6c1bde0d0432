// A router whose event source cannot start must not be left serving.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { describe, it } from "node:test";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { startServer } from "../src/app/startServer.js";
import type { EventSource } from "../src/router/eventSource.js";

/** An event source whose feed fails half-way through start-up, as when a broker refuses a stream. */
class UnreachableFeed implements EventSource {
  readonly name = "unreachable";
  stopped = false;
  async start(): Promise<void> {
    throw new Error("connection refused");
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe("startup", () => {
  it("releases its ports when an event source fails to start", async () => {
    const grpcPort = await freePort();
    const metricsPort = await freePort();
    const opts = {
      router: DEFAULT_ROUTER_CONFIG,
      host: "127.0.0.1",
      grpcPort,
      metricsPort,
      maxTokens: 1024,
      processMetrics: false,
    };
    const feed = new UnreachableFeed();
    await assert.rejects(startServer({ ...opts, eventSources: [feed] }), /connection refused/);
    assert.equal(feed.stopped, true, "the failed source is stopped, releasing what it opened");
    // Both ports are free again: a healthy router can take them.
    const healthy = await startServer(opts);
    assert.equal(healthy.grpcPort, grpcPort);
    assert.equal(healthy.metricsPort, metricsPort);
    await healthy.stop();
  });

  it("releases its gRPC port and shard threads when the metrics port is taken", async () => {
    const taken = createServer().listen(0, "127.0.0.1");
    await new Promise((r) => taken.once("listening", r));
    const grpcPort = await freePort();
    const opts = {
      router: DEFAULT_ROUTER_CONFIG,
      host: "127.0.0.1",
      grpcPort,
      maxTokens: 1024,
      processMetrics: false,
      indexerShards: 1,
    };
    try {
      await assert.rejects(startServer({ ...opts, metricsPort: (taken.address() as { port: number }).port }), /EADDRINUSE/);
    } finally {
      taken.close();
    }
    const healthy = await startServer(opts);
    assert.equal(healthy.grpcPort, grpcPort);
    await healthy.stop();
    // A leaked shard thread would keep this test process alive past its end.
  });
});
