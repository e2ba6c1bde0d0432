// grpc-js's node:http2 servers, reached for what grpc-js has no option for:
// their receive windows (flowControl.ts) and a cap on their connections.
import type * as http2 from "node:http2";
import type * as grpc from "@grpc/grpc-js";
import { type ConnectionLimits, capConnections } from "../util/connectionCap.js";

/**
 * A gRPC connection with no call for this long is closed with a GOAWAY
 * (grpc.max_connection_idle_ms; a client reconnects on its next call), so
 * abandoned connections do not hold places under the cap for good.
 */
export const GRPC_IDLE_CONNECTION_MS = 5 * 60_000;

/**
 * The node:http2 servers a grpc-js server listens with (created by
 * bindAsync), or undefined when this grpc-js keeps them elsewhere. Not public
 * API: grpc-js's `http2Servers` map, present through 1.14.
 */
export function http2ServersOf(server: grpc.Server): http2.Http2Server[] | undefined {
  const listeners = (server as unknown as { http2Servers?: unknown }).http2Servers;
  return listeners instanceof Map ? [...(listeners.keys() as Iterable<http2.Http2Server>)] : undefined;
}

/** A connection must send HTTP/2's preface and settings within this of connecting. */
const HANDSHAKE_MS = 10_000;

/**
 * Caps the connections of each port the server listens on, and closes those
 * that never start HTTP/2 (grpc-js's idle timer would keep them 5 minutes).
 * False when the listeners cannot be reached (the caller logs it).
 */
export function capGrpcConnections(server: grpc.Server, limits: ConnectionLimits): boolean {
  const listeners = http2ServersOf(server);
  for (const h2 of listeners ?? []) {
    capConnections(h2, limits.maxConnections, limits.refused);
    h2.on("session", closeUnlessHandshaken);
  }
  return listeners !== undefined;
}

function closeUnlessHandshaken(session: http2.ServerHttp2Session): void {
  const timer = setTimeout(() => session.destroy(), HANDSHAKE_MS);
  timer.unref();
  session.once("remoteSettings", () => clearTimeout(timer));
  session.once("close", () => clearTimeout(timer));
}
