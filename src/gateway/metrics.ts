// Metrics of the gateway-facing parts (EPP, scorer API, tokenizer), kept in
// the router's registry next to its own.
import { Counter, Gauge, type Registry } from "prom-client";

export class GatewayMetrics {
  /** Requests refused by api (epp, query, query_by_hash) and reason. */
  readonly rejected: Counter<"api" | "reason">;
  /** EPP requests by outcome: routed, or the status they were answered with. */
  readonly eppRequests: Counter<"outcome">;
  /** EPP requests holding load now (routed, response not finished). */
  readonly eppInFlight: Gauge;
  /** Prompt tokenizations by cache outcome (hit: a repeated prefix was reused). */
  readonly tokenizations: Counter<"cache">;

  constructor(registry: Registry) {
    this.rejected = new Counter({
      name: "kvrouter_gateway_rejected_total",
      help: "Gateway requests refused, by api (epp, query, query_by_hash) and reason (not_json, not_openai, too_large, unknown_model, no_endpoint, shed, invalid)",
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
      help: "EPP-routed requests whose response has not ended (their load is held)",
      registers: [registry],
    });
    this.tokenizations = new Counter({
      name: "kvrouter_tokenizations_total",
      help: "Prompt tokenizations by prefix-cache outcome (hit, miss)",
      labelNames: ["cache"],
      registers: [registry],
    });
  }
}
