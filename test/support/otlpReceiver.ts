// A real OTLP/gRPC trace receiver, as a collector is to kv-router: it serves
// opentelemetry.proto.collector.trace.v1.TraceService/Export, loaded with
// @grpc/proto-loader from the subset of the published OTLP protos in
// test/support/otlp/ (same packages, names and field numbers), and keeps
// every span it receives, flattened for assertions.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_ROOT = fileURLToPath(new URL("./otlp", import.meta.url));

type Scalar = string | number | boolean;

/** One received span: ids in hex, attributes as plain values. */
export interface ReceivedSpan {
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  traceState: string;
  /** Span.SpanKind name, e.g. SPAN_KIND_SERVER. */
  kind: string;
  attributes: Record<string, Scalar>;
  status: { code: string; message: string };
  resource: Record<string, Scalar>;
}

interface WireKeyValue {
  key: string;
  value?: Record<string, unknown> & { value?: string };
}

interface WireRequest {
  resourceSpans: {
    resource?: { attributes: WireKeyValue[] };
    scopeSpans: {
      spans: {
        name: string;
        traceId: Buffer;
        spanId: Buffer;
        parentSpanId: Buffer;
        traceState: string;
        kind: string;
        attributes: WireKeyValue[];
        status?: { code: string; message: string };
      }[];
    }[];
  }[];
}

/** AnyValue's set member (oneofs: true names it in `value`); int64 arrives as a decimal string. */
function scalar(v: WireKeyValue["value"]): Scalar {
  if (v?.value === undefined) return "";
  const x = v[v.value];
  if (v.value === "intValue") return Number(x);
  return x as Scalar;
}

function attributes(kvs: WireKeyValue[] | undefined): Record<string, Scalar> {
  return Object.fromEntries((kvs ?? []).map((kv) => [kv.key, scalar(kv.value)]));
}

export interface OtlpReceiver {
  /** http://127.0.0.1:PORT, as --otlp-endpoint takes it. */
  endpoint: string;
  spans: ReceivedSpan[];
  /** Spans received (kept in `spans` or not). */
  received: number;
  /** Export calls received. */
  exports: number;
  /** Waits until a span passes `match` (polling; throws after `timeoutMs`). */
  waitFor(match: (s: ReceivedSpan) => boolean, timeoutMs?: number): Promise<ReceivedSpan>;
  stop(): Promise<void>;
}

/** `keep: false` decodes and counts spans without keeping them (long benchmarks). */
export async function startOtlpReceiver(opts: { keep?: boolean } = {}): Promise<OtlpReceiver> {
  const keep = opts.keep ?? true;
  const definition = protoLoader.loadSync("opentelemetry/proto/collector/trace/v1/trace_service.proto", {
    includeDirs: [PROTO_ROOT],
    enums: String,
    longs: String,
    oneofs: true,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    opentelemetry: { proto: { collector: { trace: { v1: { TraceService: grpc.ServiceClientConstructor } } } } };
  };
  const service = pkg.opentelemetry.proto.collector.trace.v1.TraceService.service;
  const server = new grpc.Server({ "grpc.max_receive_message_length": 64 * 1024 * 1024 });
  const receiver = { spans: [] as ReceivedSpan[], received: 0, exports: 0 };
  server.addService(service, {
    Export: (call: grpc.ServerUnaryCall<WireRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      receiver.exports++;
      for (const rs of call.request.resourceSpans) {
        const resource = attributes(rs.resource?.attributes);
        for (const ss of rs.scopeSpans) {
          for (const s of ss.spans) {
            receiver.received++;
            const span: ReceivedSpan = {
              name: s.name,
              traceId: s.traceId.toString("hex"),
              spanId: s.spanId.toString("hex"),
              parentSpanId: s.parentSpanId.toString("hex"),
              traceState: s.traceState,
              kind: s.kind,
              attributes: attributes(s.attributes),
              status: { code: s.status?.code ?? "STATUS_CODE_UNSET", message: s.status?.message ?? "" },
              resource,
            };
            if (keep) receiver.spans.push(span);
          }
        }
      }
      callback(null, {});
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get spans() {
      return receiver.spans;
    },
    get received() {
      return receiver.received;
    },
    get exports() {
      return receiver.exports;
    },
    async waitFor(match, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = receiver.spans.find(match);
        if (found !== undefined) return found;
        if (Date.now() > deadline) throw new Error(`no matching span within ${timeoutMs} ms; received: ${receiver.spans.map((s) => s.name).join(", ") || "none"}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    stop: () =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => server.forceShutdown(), 2_000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}
