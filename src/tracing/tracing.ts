// What the transports call to trace a request: a server span that continues
// the caller's W3C trace (traceparent / tracestate), its outcome, and the
// context handed on to the next hop. One object, built only when tracing is
// on (setup.ts): callers hold `Tracing | undefined`, so with tracing off a
// request pays one undefined check and creates no span.
import {
  type Attributes,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { status } from "@grpc/grpc-js";
import {
  ERROR_TYPE,
  HTTP_RESPONSE_STATUS_CODE,
  RPC_CONNECT_ERROR_CODE,
  RPC_GRPC_STATUS_CODE,
  RPC_METHOD,
  RPC_SERVICE,
  RPC_SYSTEM,
  type RpcSystem,
} from "./names.js";

export type { Span } from "@opentelemetry/api";

/** Reads one request header (or gRPC metadata entry) by its lower-case name. */
export type HeaderLookup = (name: string) => string | undefined;
/** Writes one header of an outgoing request. */
export type HeaderWriter = (name: string, value: string) => void;

// The W3C propagator reads and writes only traceparent and tracestate: no key listing needed.
const GETTER: TextMapGetter<HeaderLookup> = { get: (lookup, key) => lookup(key), keys: () => [] };
const SETTER: TextMapSetter<HeaderWriter> = { set: (write, key, value) => write(key, value) };

export class Tracing {
  // Used directly, not registered globally: several routers may share a process (tests).
  private readonly propagator = new W3CTraceContextPropagator();

  constructor(
    private readonly tracer: Tracer,
    private readonly close: () => Promise<void>,
  ) {}

  /** A server span, child of the trace context `headers` carry (a new trace without one). */
  startServerSpan(name: string, attributes: Attributes, headers: HeaderLookup): Span {
    const parent = this.propagator.extract(ROOT_CONTEXT, headers, GETTER);
    return this.tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
  }

  /** A span for one unary call of `service`, named service/method as the RPC conventions ask. */
  startRpc(system: RpcSystem, service: string, method: string, headers: HeaderLookup): Span {
    return this.startServerSpan(`${service}/${method}`, { [RPC_SYSTEM]: system, [RPC_SERVICE]: service, [RPC_METHOD]: method }, headers);
  }

  /** Ends an RPC span with its gRPC status: a refusal is an error named by the status (RESOURCE_EXHAUSTED: ...). */
  endRpc(span: Span, system: RpcSystem, code: status, details?: string): void {
    const name = status[code] ?? String(code);
    if (system === "grpc") span.setAttribute(RPC_GRPC_STATUS_CODE, code);
    if (code === status.OK) return span.end();
    // Connect names its codes as gRPC's, in lower case.
    if (system === "connect_rpc") span.setAttribute(RPC_CONNECT_ERROR_CODE, name.toLowerCase());
    this.endError(span, name, details ? `${name}: ${details}` : name);
  }

  /** Ends a span whose request was answered with an HTTP error (the EPP's refusals): `reason` names its kind. */
  endHttpError(span: Span, httpStatus: number, reason: string, message: string): void {
    span.setAttribute(HTTP_RESPONSE_STATUS_CODE, httpStatus);
    this.endError(span, reason, `${httpStatus} ${reason}: ${message}`);
  }

  /** Ends a span as failed: `type` names the kind of failure (error.type), `message` says what happened. */
  endError(span: Span, type: string, message: string): void {
    span.setAttribute(ERROR_TYPE, type);
    span.setStatus({ code: SpanStatusCode.ERROR, message });
    span.end();
  }

  /** Writes traceparent (and tracestate) naming `span` as the parent, for the next hop's spans. */
  inject(span: Span, write: HeaderWriter): void {
    this.propagator.inject(trace.setSpan(ROOT_CONTEXT, span), write, SETTER);
  }

  /** Exports what is buffered, then stops. */
  shutdown(): Promise<void> {
    return this.close();
  }
}
