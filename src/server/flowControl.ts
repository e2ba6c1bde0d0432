// HTTP/2 receive windows of the gRPC server. grpc-js 1.14 leaves a server's
// windows at HTTP/2's 64 KB (its grpc-node.flow_control_window option is read
// by the client transport only; grpc/grpc-node#3058 would add it to servers),
// so a client streaming IngestKvEvents stops every 64 KB until the router has
// consumed them and sent a WINDOW_UPDATE: sender and router take turns instead
// of overlapping. Advertising a larger per-stream and per-connection window on
// each new session lets the client keep sending while the router applies
// (measured in docs/indexer.md). The window also bounds what one connection
// may have in flight, so it is a flag (--grpc-flow-control-window).
import type * as http2 from "node:http2";
import type * as grpc from "@grpc/grpc-js";
import { http2ServersOf } from "./grpcListeners.js";

/** HTTP/2's own initial window: asking for this (or less) leaves the server as grpc-js sets it up. */
export const HTTP2_DEFAULT_WINDOW = 65_535;
/** Largest window HTTP/2 allows. */
export const HTTP2_MAX_WINDOW = 2 ** 31 - 1;
/** 4 MiB: the best of 1, 4 and 16 MiB for 100 KB ingest messages on this project's 2-core VM. */
export const DEFAULT_FLOW_CONTROL_WINDOW = 4 * 1024 * 1024;

/**
 * Raises the receive windows of every session the server's listeners accept
 * from now on. Call after bindAsync (grpc-js creates its HTTP/2 servers
 * there). False when this grpc-js keeps its listeners elsewhere (the windows
 * stay at 64 KB; the caller logs it).
 */
export function raiseReceiveWindows(server: grpc.Server, bytes: number): boolean {
  if (bytes <= HTTP2_DEFAULT_WINDOW) return true;
  const window = Math.min(bytes, HTTP2_MAX_WINDOW);
  const listeners = http2ServersOf(server);
  if (listeners === undefined) return false;
  for (const h2 of listeners) {
    h2.on("session", (session: http2.ServerHttp2Session) => {
      session.settings({ initialWindowSize: window });
      session.setLocalWindowSize(window);
    });
  }
  return true;
}
