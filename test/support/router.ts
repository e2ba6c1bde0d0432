// Test support: a real kv-router (real gRPC server on a free loopback port)
// and a real client connected to it.
import { KvRouterClient } from "../../src/client/kvRouterClient.js";
import { DEFAULT_ROUTER_CONFIG, type RouterConfig } from "../../src/router/types.js";
import { type RunningServer, type ServerOptions, startServer } from "../../src/app/startServer.js";

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
