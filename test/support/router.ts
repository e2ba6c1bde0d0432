// Test support: a real kv-router (real gRPC server on a free loopback port)
// and a real client connected to it.
import { KvRouterClient } from "../../src/client/kvRouterClient.js";
import { DEFAULT_ROUTER_CONFIG, type RouterConfig } from "../../src/router/types.js";
import { type RunningServer, type ServerOptions, startServer } from "../../src/app/startServer.js";
import { stored } from "./events.js";

export interface TestRouter {
  server: RunningServer;
  client: KvRouterClient;
  address: string;
  close(): Promise<void>;
}

export async function startTestRouter(
  router: Partial<RouterConfig> = {},
  server: Partial<Omit<ServerOptions, "router">> = {},
): Promise<TestRouter> {
  const running = await startServer({
    router: { ...DEFAULT_ROUTER_CONFIG, blockSize: 4, ...router },
    host: "127.0.0.1",
    grpcPort: 0,
    maxTokens: 1 << 20,
    seed: 7,
    tickMs: 50,
    processMetrics: false,
    ...server,
  });
  const address = `127.0.0.1:${running.grpcPort}`;
  const client = new KvRouterClient(address);
  return {
    server: running,
    client,
    address,
    async close() {
      client.close();
      await running.stop();
    },
  };
}

/** Token ids 0..n-1 shifted by `offset`: distinct offsets give distinct prompts. */
export function tokens(n: number, offset = 0): number[] {
  return Array.from({ length: n }, (_, i) => i + offset);
}

/** Runs `body` against a fresh router (block size 4 unless overridden) and always closes it. */
export async function withTestRouter(config: Partial<RouterConfig>, body: (r: TestRouter) => Promise<void>): Promise<void> {
  const r = await startTestRouter(config);
  try {
    await body(r);
  } finally {
    await r.close();
  }
}

/** Runs `body` against a router being started (any options) and always closes it. */
export async function withRouter(starting: Promise<TestRouter>, body: (r: TestRouter) => Promise<void>): Promise<void> {
  const router = await starting;
  try {
    await body(router);
  } finally {
    await router.close();
  }
}

/** GET `path` on the router's metrics port (probes, /metrics): "status body". */
export async function metricsPage(r: TestRouter, path: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${r.server.metricsPort}${path}`);
  return `${res.status} ${await res.text()}`;
}

/**
 * Workers 1-3 registered with these engine sizes; worker 1 caches the first
 * 32 tokens (block size `blockSize`); then one request on worker 2 times the
 * fleet: 80 uncached tokens prefilled in 80 ms, then 100 ms of decode
 * (`advance` moves the router's clock).
 */
export async function timedFleet(
  r: TestRouter,
  engine: { blockSize: number; maxNumBatchedTokens: bigint; maxNumSeqs: bigint },
  advance: (ms: number) => void,
): Promise<void> {
  const { blockSize, maxNumBatchedTokens, maxNumSeqs } = engine;
  for (const id of [1n, 2n, 3n]) await r.client.registerWorker({ workerId: id, maxNumBatchedTokens, totalKvBlocks: 1000n, maxNumSeqs });
  await r.client.sendEvents([stored(1, 1, tokens(32, 0), blockSize, 100n)]);
  await r.client.findBestWorker({ tokenIds: tokens(80, 500_000), requestId: "probe", allowedWorkers: [{ workerId: 2n }] });
  advance(80);
  await r.client.markPrefillCompleted("probe");
  advance(100);
  await r.client.free("probe");
}
