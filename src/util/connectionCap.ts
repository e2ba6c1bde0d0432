// A cap on the connections each listening port holds (--max-connections-per-port),
// and timeouts that make idle HTTP sockets give their place back. The process
// has one budget of file descriptors for all its ports, files and outbound
// connections: without a cap, idle sockets on one port (5,000 against a
// 4,096-file limit) leave none for the others, and gRPC calls, /metrics and
// the probes all fail. Past the cap Node accepts a connection and closes it at
// once, so a flood costs one descriptor for an instant and the other ports
// keep theirs.
import type { Server as HttpServer, ServerOptions as HttpServerOptions } from "node:http";
import type { Server as NetServer } from "node:net";

export const DEFAULT_MAX_CONNECTIONS_PER_PORT = 1024;

/** What a listening port may hold, and who counts the connections refused past it. */
export interface ConnectionLimits {
  maxConnections: number;
  refused: () => void;
}

/** Closes connections past `max` as they arrive (Node's maxConnections); `refused` is told of each. */
export function capConnections(server: NetServer, max: number, refused: () => void): void {
  server.maxConnections = max;
  server.on("drop", refused);
}

/** A request's headers must arrive within this of connecting. */
const HEADERS_MS = 10_000;

/** node:http's own timers: headers, a whole request (a 64 MiB body at ~1 MB/s), and idle between requests. */
export const HTTP_TIMEOUTS: HttpServerOptions = {
  headersTimeout: HEADERS_MS,
  requestTimeout: 60_000,
  keepAliveTimeout: 5_000,
  connectionsCheckingInterval: 1_000,
};

/**
 * Caps a node:http server (created with HTTP_TIMEOUTS) and closes sockets that
 * never send a request: node:http's timers start only with a request's first
 * byte, so without this a silent socket would hold its place for good.
 */
export function guardHttpServer(server: HttpServer, limits: ConnectionLimits): void {
  capConnections(server, limits.maxConnections, limits.refused);
  server.on("connection", (socket) => socket.setTimeout(HEADERS_MS)); // no 'timeout' listener: node:http destroys the socket
  server.on("request", (req) => req.socket.setTimeout(0)); // from here node:http's own timers apply
}
