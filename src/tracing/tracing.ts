// What the transports call to trace a request: a server span that continues
// the caller's W3C trace (traceparent / tracestate), its outcome, and the
// context handed on to the next hop. One object, built only when tracing is
// on (setup.ts): callers hold `Tracing | undefined`, so with tracing off a
// request pays one undefined check and creates no span.
//
// While a request runs, its span is a RequestSpan (requestSpan.ts). The SDK
// spans of ended requests are made together, every few milliseconds, with
// the recorded start and end times. Measured in a serving router: the SDK's
// code run once per request, between a request's other work, took ~18 µs to
// start a span; run again right after, ~4 µs. Made in batches, spans stay on
// the fast side, and a request pays only for its RequestSpan.
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
import { RequestSpan, type TraceHeaders } from "./requestSpan.js";

/** Reads one request header (or gRPC metadata entry) by its lower-case name. */
export type HeaderLookup = (name: string) => string | undefined;
/** Writes one header of an outgoing request. */
export type HeaderWriter = (name: string, value: string) => void;

// The W3C propagator reads and writes only traceparent and tracestate: no key listing needed.
const GETTER: TextMapGetter<TraceHeaders> = {
  get: (h, key) => (key === "traceparent" ? h.traceparent : key === "tracestate" ? h.tracestate : undefined),
  keys: () => [],
};
const SETTER: TextMapSetter<HeaderWriter> = { set: (write, key, value) => write(key, value) };

/** Ended requests wait this long at most for their SDK spans... */
const MAKE_AFTER_MS = 10;
/** ...or until this many have ended. */
const MAKE_EVERY = 256;

interface Ended {
  span: RequestSpan;
  endTime: number;
  /** The status message of a failed request. */
  error?: string;
}

export class Tracing {
  // Used directly, not registered globally: several routers may share a process (tests).
  private readonly propagator = new W3CTraceContextPropagator();
  private ended: Ended[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly tracer: Tracer,
    private readonly close: () => Promise<void>,
  ) {}

  /** A server span, child of the trace context `headers` carry (a new trace without one). */
  startServerSpan(name: string, attributes: Attributes, headers: HeaderLookup): RequestSpan {
    const traceparent = headers("traceparent");
    return new RequestSpan(name, attributes, traceparent === undefined ? {} : { traceparent, tracestate: headers("tracestate") });
  }

  /** A span for one unary call of `service`, named service/method as the RPC conventions ask. */
  startRpc(system: RpcSystem, service: string, method: string, headers: HeaderLookup): RequestSpan {
    return this.startServerSpan(`${service}/${method}`, { [RPC_SYSTEM]: system, [RPC_SERVICE]: service, [RPC_METHOD]: method }, headers);
  }

  /** Ends an RPC span with its gRPC status: a refusal is an error named by the status (RESOURCE_EXHAUSTED: ...). */
  endRpc(span: RequestSpan, system: RpcSystem, code: status, details?: string): void {
    const name = status[code] ?? String(code);
    if (system === "grpc") span.setAttribute(RPC_GRPC_STATUS_CODE, code);
    if (code === status.OK) return this.end(span);
    // Connect names its codes as gRPC's, in lower case.
    if (system === "connect_rpc") span.setAttribute(RPC_CONNECT_ERROR_CODE, name.toLowerCase());
    this.endError(span, name, details ? `${name}: ${details}` : name);
  }

  /** Ends a span whose request was answered with an HTTP error (the EPP's refusals): `reason` names its kind. */
  endHttpError(span: RequestSpan, httpStatus: number, reason: string, message: string): void {
    span.setAttribute(HTTP_RESPONSE_STATUS_CODE, httpStatus);
    this.endError(span, reason, `${httpStatus} ${reason}: ${message}`);
  }

  /** Ends a span as failed: `type` names the kind of failure (error.type), `message` says what happened. */
  endError(span: RequestSpan, type: string, message: string): void {
    span.setAttribute(ERROR_TYPE, type);
    this.queue({ span, endTime: performance.now(), error: message });
  }

  /** Ends a span that succeeded (its status stays unset, as the conventions ask of server spans). */
  end(span: RequestSpan): void {
    this.queue({ span, endTime: performance.now() });
  }

  /** Writes traceparent (and tracestate) naming `span` as the parent, for the next hop's spans: its SDK span is made now. */
  inject(span: RequestSpan, write: HeaderWriter): void {
    this.propagator.inject(trace.setSpan(ROOT_CONTEXT, this.sdkSpan(span)), write, SETTER);
  }

  /** Makes the SDK spans of the requests ended so far (they then go to the span processor). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const ended = this.ended;
    this.ended = [];
    for (const e of ended) {
      const span = this.sdkSpan(e.span);
      if (e.error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: e.error });
      span.end(e.endTime);
    }
  }

  /** Exports what is buffered, then stops. */
  shutdown(): Promise<void> {
    this.flush();
    return this.close();
  }

  private queue(e: Ended): void {
    this.ended.push(e);
    if (this.ended.length >= MAKE_EVERY) this.flush();
    else if (this.timer === undefined) this.timer = setTimeout(() => this.flush(), MAKE_AFTER_MS).unref();
  }

  /** The SDK span of `req`, made now if not yet: with every attribute gathered so far, its start time and parent. */
  private sdkSpan(req: RequestSpan): Span {
    if (req.span !== undefined) return req.span;
    const parent = this.propagator.extract(ROOT_CONTEXT, req.headers, GETTER);
    req.span = this.tracer.startSpan(req.name, { kind: SpanKind.SERVER, attributes: req.attributes, startTime: req.startTime }, parent);
    return req.span;
  }
}
