// The HTTP port (--http-port): the Connect JSON API of every unary RPC, the
// probes (/healthz: the process can serve; /readyz: serving and the index
// synced) and any extra JSON endpoints (the scorer API), on one node:http server.
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { ConnectRouter } from "@connectrpc/connect";
import { type ConnectionLimits, HTTP_TIMEOUTS, guardHttpServer } from "../util/connectionCap.js";
import { text } from "../util/httpRespond.js";
import { type PathHandler, type ProbeState, probeHandlers } from "./probes.js";


export interface HttpApiOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  routes: (router: ConnectRouter) => void;
  /** What /readyz and /healthz report. */
  probes: ProbeState;
  /** Largest request body accepted, in bytes. */
  maxBodyBytes: number;
  /** More endpoints by exact path, e.g. /query. */
  paths?: Record<string, PathHandler>;
  connections: ConnectionLimits;
}

export interface RunningHttpApi {
  port: number;
  close(): Promise<void>;
}

export async function startHttpApi(opts: HttpApiOptions): Promise<RunningHttpApi> {
  const paths: Record<string, PathHandler> = { ...probeHandlers(opts.probes), ...opts.paths };
  const handler = connectNodeAdapter({
    routes: opts.routes,
    readMaxBytes: opts.maxBodyBytes,
    fallback: (req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      const handle = paths[path];
      // Served by node:http (HTTP/1.1), so these are its own request and response types.
      if (handle) handle(req as IncomingMessage, res as ServerResponse);
      else text(res as ServerResponse, 404, `no such endpoint ${path}; see /healthz, /readyz, ${Object.keys(opts.paths ?? {}).join(", ")} or POST /kvrouter.v1.KvRouterService/<Method>\n`);
    },
  });
  const server: Server = createServer(HTTP_TIMEOUTS, handler);
  guardHttpServer(server, opts.connections);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
