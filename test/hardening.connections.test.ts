// Issue 24 (Hardening III §3): idle sockets on one port took the process's
// file descriptors from the others (5,000 idle HTTP sockets against a
// 4,096-file limit: no new gRPC connection, no /metrics, no /healthz). Here
// the real CLI runs with 256 open files and --max-connections-per-port 32,
// and 300 idle sockets go to its HTTP port, then 40 to its gRPC port.
import assert from "node:assert/strict";
import { type Socket, connect } from "node:net";
import { after, describe, it } from "node:test";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { type RouterProcess, spawnRouter } from "./support/cliProcess.js";
import { waitFor } from "./support/wait.js";

const CAP = 32;

/** Idle TCP connections to a port; `closed` counts those the router closed. */
function idleSockets(port: number, count: number): { sockets: Socket[]; closed: () => number } {
  let closed = 0;
  const sockets = Array.from({ length: count }, () => {
    const s = connect(port, "127.0.0.1");
    s.on("error", () => undefined);
    s.on("close", () => closed++);
    s.resume(); // read what the router sends (HTTP/2 settings), or its close is never seen
    return s;
  });
  return { sockets, closed: () => closed };
}

async function refused(metricsUrl: string, port: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  return Number(new RegExp(`^kvrouter_connections_refused_total\\{port="${port}"\\} (\\d+)`, "m").exec(text)?.[1]);
}

describe("--max-connections-per-port", () => {
  let router: RouterProcess | undefined;
  const open: Socket[] = [];
  after(async () => {
    for (const s of open) s.destroy();
    await router?.stop();
  });

  it("closes idle sockets past the cap as they arrive, so the other ports keep answering", async () => {
    router = await spawnRouter(
      ["--grpc-port", "0", "--metrics-port", "0", "--http-port", "0", "--block-size", "4", "--max-connections-per-port", String(CAP)],
      {},
      [],
      256,
    );
    const httpPort = Number(/kv-router http listening on \S+:(\d+)/.exec(router.stdout())![1]);
    const metricsUrl = router.metricsUrl!;

    const flood = idleSockets(httpPort, 300);
    open.push(...flood.sockets);
    await waitFor(() => flood.closed() >= 300 - CAP, "every socket past the cap closed by the router");
    assert.equal(flood.closed(), 300 - CAP, "the first 32 are held (until they idle past 10 s)");
    assert.equal((await fetch(metricsUrl.replace("/metrics", "/healthz"))).status, 200);
    assert.equal(await refused(metricsUrl, "http"), 300 - CAP);
    const client = new KvRouterClient(router.grpcAddress);
    try {
      assert.deepEqual((await client.listWorkers()).workers, [], "a new gRPC connection is served");
    } finally {
      client.raw.close();
    }

    // The gRPC port has its own cap; the metrics port still answers past it.
    const grpcFlood = idleSockets(Number(router.grpcAddress.split(":")[1]), CAP + 8);
    open.push(...grpcFlood.sockets);
    await waitFor(() => grpcFlood.closed() >= 8, "the gRPC sockets past the cap closed");
    // The client's own connection above may still be held when the flood arrives (grpc-js closes its
    // transport asynchronously): then one more is refused. Either way the port holds at most CAP.
    await waitFor(async () => (await refused(metricsUrl, "grpc")) === grpcFlood.closed(), "what the router refused is what it closed");
    const refusedGrpc = await refused(metricsUrl, "grpc");
    assert.ok(refusedGrpc === 8 || refusedGrpc === 9, `refused ${refusedGrpc} of ${CAP + 8}`);
    assert.equal((await fetch(metricsUrl.replace("/metrics", "/healthz"))).status, 200);
  });
});
