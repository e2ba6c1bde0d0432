// Builds the tracer when tracing is asked for (--otlp-endpoint, the
// OTEL_EXPORTER_OTLP_* variables, or an exporter a test injects). Loaded
// with import() only then, so a router without tracing never loads the SDK.
// The SDK itself reads OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
// (default parentbased_always_on), OTEL_BSP_* (batching) and the exporter's
// OTEL_EXPORTER_OTLP_* headers, timeout and compression.
import { DiagLogLevel, diag } from "@opentelemetry/api";
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor, SimpleSpanProcessor, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import { log } from "../util/log.js";
import { Tracing } from "./tracing.js";

export interface TracingSettings {
  /** service.name of every span (OTEL_SERVICE_NAME, default "kv-router"). */
  serviceName: string;
  /** OTLP/gRPC collector URL, e.g. http://otel-collector:4317 (http: plain, https: TLS). */
  endpoint?: string;
  /** Spans go here instead, each as it ends (tests: the SDK's InMemorySpanExporter). */
  exporter?: SpanExporter;
}

/** Longest a stopping router waits to export its last spans (an unreachable collector must not hold shutdown). */
const SHUTDOWN_WAIT_MS = 5_000;

/** The SDK's own problems (an unreachable collector, spans dropped) reach the log, one line a minute at most. */
const DIAG_EVERY_MS = 60_000;
const DIAG_MAX_CHARS = 400;

export async function startTracing(settings: TracingSettings): Promise<Tracing> {
  routeDiagnostics();
  const exporter = settings.exporter ?? new (await import("@opentelemetry/exporter-trace-otlp-grpc")).OTLPTraceExporter({ url: settings.endpoint });
  // A batch keeps the export (a gRPC call) off the request's path; an injected exporter (tests) gets each span as it is made.
  const processor = settings.exporter ? new SimpleSpanProcessor(exporter) : new BatchSpanProcessor(exporter);
  const resource = defaultResource()
    .merge(detectResources({ detectors: [envDetector] })) // OTEL_RESOURCE_ATTRIBUTES
    .merge(resourceFromAttributes({ "service.name": settings.serviceName }));
  const provider = new BasicTracerProvider({ resource, spanProcessors: [processor] });
  return new Tracing(provider.getTracer("kv-router"), () => within(SHUTDOWN_WAIT_MS, provider.shutdown()));
}

function within(ms: number, work: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log.warn(`tracing: spans not exported within ${ms} ms of shutdown are dropped`);
      resolve();
    }, ms);
  });
  return Promise.race([work.catch(() => {}), late]).finally(() => clearTimeout(timer));
}

let diagRouted = false;

function routeDiagnostics(): void {
  if (diagRouted) return;
  diagRouted = true;
  let last = -Infinity;
  let quiet = 0;
  const warn = (...args: unknown[]) => {
    const now = Date.now();
    if (now - last < DIAG_EVERY_MS) {
      quiet++;
      return;
    }
    // The SDK hands errors over as JSON with their stack: the first few hundred characters say what failed.
    const text = args.map(String).join(" ");
    log.warn("tracing: " + (text.length > DIAG_MAX_CHARS ? text.slice(0, DIAG_MAX_CHARS) + "…" : text), quiet > 0 ? { suppressed: quiet } : {});
    last = now;
    quiet = 0;
  };
  const none = () => {};
  diag.setLogger({ error: warn, warn, info: none, debug: none, verbose: none }, DiagLogLevel.WARN);
}
