// Metrics of the gateway-facing parts (EPP, scorer API, tokenizer), kept in
// the router's registry next to its own.
import { Counter, Gauge, type Registry } from "prom-client";

export class GatewayMetrics {
  /** Live figures read at scrape time, set by the EPP that owns them. */
  readonly sources: { eppInFlight?: () => number; eppBufferedBytes?: () => number } = {};
  /** Requests refused by api (epp, query, query_by_hash) and reason. */
  readonly rejected: Counter<"api" | "reason">;
  /** EPP requests by outcome: routed, or the status they were answered with. */
  readonly eppRequests: Counter<"outcome">;
  /** EPP requests holding load now (routed, response not finished). */
  readonly eppInFlight: Gauge;
  /** Request-body bytes all EPP streams hold now (bounded by --epp-max-buffered-bytes). */
  readonly eppBufferedBytes: Gauge;
  /** Prompt tokenizations by cache outcome (hit: a repeated prefix was reused). */
  readonly tokenizations: Counter<"cache">;

  constructor(registry: Registry) {
    this.rejected = new Counter({
      name: "kvrouter_gateway_rejected_total",
      help: "Gateway requests refused, by api (epp, query, query_by_hash) and reason (not_json, not_openai, too_large, unknown_model, no_endpoint, subset_too_large, shed, invalid, malformed, buffers_full, internal)",
      labelNames: ["api", "reason"],
      registers: [registry],
    });
    this.eppRequests = new Counter({
      name: "kvrouter_epp_requests_total",
      help: "Requests the endpoint picker answered, by outcome (routed, or the HTTP status of the immediate response)",
      labelNames: ["outcome"],
      registers: [registry],
    });
    this.eppInFlight = new Gauge({
      name: "kvrouter_epp_in_flight",
      help: "EPP-routed requests whose load the router holds (response not ended, not expired by --active-request-ttl)",
      registers: [registry],
      collect: fromSource(() => this.sources.eppInFlight),
    });
    this.eppBufferedBytes = new Gauge({
      name: "kvrouter_epp_buffered_bytes",
      help: "Request-body bytes the EPP's streams hold now, waiting for their body to end or to be routed (bounded by --epp-max-buffered-bytes)",
      registers: [registry],
      collect: fromSource(() => this.sources.eppBufferedBytes),
    });
    this.tokenizations = new Counter({
      name: "kvrouter_tokenizations_total",
      help: "Prompt tokenizations by prefix-cache outcome (hit, miss)",
      labelNames: ["cache"],
      registers: [registry],
    });
  }
}

function fromSource(source: () => (() => number) | undefined) {
  return function (this: Gauge) {
    const read = source();
    if (read !== undefined) this.set(read());
  };
}
