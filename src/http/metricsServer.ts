// The metrics port (--metrics-port): Prometheus /metrics and the probes.
import { type Server, createServer } from "node:http";
import type { Registry } from "prom-client";
import { type ConnectionLimits, HTTP_TIMEOUTS, guardHttpServer } from "../util/connectionCap.js";
import { text } from "../util/httpRespond.js";
import { type ProbeState, probeHandlers } from "./probes.js";

export function metricsServer(registry: Registry, state: ProbeState, limits: ConnectionLimits): Server {
  const probes = probeHandlers(state);
  const server = createServer(HTTP_TIMEOUTS, (req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path === "/healthz" || path === "/readyz") return probes[path](req, res);
    if (path !== "/metrics") return text(res, 404, "see /metrics, /healthz, /readyz\n");
    registry.metrics().then(
      (body) => res.writeHead(200, { "Content-Type": registry.contentType }).end(body),
      (err) => text(res, 500, String(err)),
    );
  });
  guardHttpServer(server, limits);
  return server;
}
