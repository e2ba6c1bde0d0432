// A traced request while it runs: when it started, its caller's trace
// context and the attributes it gathers. Plain data, so that a request pays
// no SDK work; tracing.ts makes the SDK span from it once the request ends
// (or earlier, when the EPP needs the span's id to hand on).
import type { AttributeValue, Attributes, Span } from "@opentelemetry/api";

/** The caller's W3C trace context, as its headers carried it. */
export interface TraceHeaders {
  traceparent?: string;
  tracestate?: string;
}

/** A traced request while it runs: what its span is made from. */
export class RequestSpan {
  readonly startTime = performance.now();
  /** The SDK span, once made. */
  span: Span | undefined;

  constructor(
    readonly name: string,
    readonly attributes: Attributes,
    /** Read at the start: the request's headers need not outlive it. */
    readonly headers: TraceHeaders,
  ) {}

  setAttribute(key: string, value: AttributeValue): void {
    this.attributes[key] = value;
    this.span?.setAttribute(key, value);
  }

  setAttributes(attributes: Attributes): void {
    Object.assign(this.attributes, attributes);
    this.span?.setAttributes(attributes);
  }
}
