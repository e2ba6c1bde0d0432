// --otlp-endpoint and the standard OpenTelemetry variables: where spans go,
// and under which service name. Tracing is off unless an endpoint is given.
import type { TracingSettings } from "../tracing/setup.js";

/** The collector URL and where it came from (for error messages), or undefined: tracing off. */
export function otlpEndpointOf(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): { url: string; from: string } | undefined {
  if (flag !== undefined && flag !== "") return { url: flag, from: "--otlp-endpoint" };
  // The traces-only variable wins over the general one (OTLP exporter specification).
  for (const name of ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]) {
    const v = env[name]?.trim();
    if (v) return { url: v, from: name };
  }
  return undefined;
}

/** Why an OTLP/gRPC endpoint cannot be used, or undefined. */
export function otlpEndpointProblem(endpoint: { url: string; from: string }): string | undefined {
  const bad = `${endpoint.from} must be an http:// or https:// URL of an OTLP/gRPC collector (e.g. http://otel-collector:4317), got "${endpoint.url}"`;
  let url: URL;
  try {
    url = new URL(endpoint.url);
  } catch {
    return bad;
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.hostname === "") return bad;
  // gRPC has no URL path: the exporter would drop it; say so rather than export elsewhere than meant.
  if (url.pathname !== "/" || url.search !== "") return `${endpoint.from}: an OTLP/gRPC endpoint has no path, got "${endpoint.url}" (OTLP over HTTP is not supported)`;
  return undefined;
}

/** The tracing settings the flag and the environment ask for; undefined: tracing off. */
export function tracingSettingsFrom(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): TracingSettings | undefined {
  const endpoint = otlpEndpointOf(flag, env);
  if (endpoint === undefined) return undefined;
  return { endpoint: endpoint.url, serviceName: env.OTEL_SERVICE_NAME?.trim() || DEFAULT_SERVICE_NAME };
}

/** A start-up warning when the environment asks for an OTLP protocol kv-router does not speak. */
export function otlpProtocolWarning(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL?.trim() || env.OTEL_EXPORTER_OTLP_PROTOCOL?.trim();
  if (protocol === undefined || protocol === "" || protocol === "grpc") return undefined;
  return `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL is "${protocol}": kv-router exports traces over OTLP/gRPC only; point the endpoint at the collector's gRPC port (4317)`;
}

export const DEFAULT_SERVICE_NAME = "kv-router";
