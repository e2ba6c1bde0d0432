// One interface for every way KV events reach the router (gRPC stream, NATS,
// engines' ZeroMQ feeds): each adapter decodes its wire format into
// IndexEvents and hands them to the router.
import type { Registry } from "prom-client";
import type { KvRouter } from "./router.js";

/** What the server offers a source besides the router: where to register its metrics. */
export interface EventSourceContext {
  registry: Registry;
}

export interface EventSource {
  /** Short name for logs and metrics, e.g. "zmq", "nats". */
  readonly name: string;
  /** Starts delivering events to the router. */
  start(router: KvRouter, context?: EventSourceContext): Promise<void>;
  /** Stops and releases sockets/connections. */
  stop(): Promise<void>;
}
