// Envoy's side of ext_proc, for driving the EPP as a gateway does. Envoy
// cannot run here, so this client sends what Envoy's ext_proc filter sends
// in FULL_DUPLEX_STREAMED mode (api/envoy/service/ext_proc/v3/external_processor.proto,
// ProcessingMode FULL_DUPLEX_STREAMED): request headers (lower-case names,
// values in raw_value, metadata_context carrying the subset hint), request
// body chunks with end_of_stream on the last, then response headers (with
// envoy.lb x-gateway-destination-endpoint-served) and response body chunks.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  ExternalProcessor,
  type ProcessingRequestSchema,
  type ProcessingResponse,
  ProcessingRequestSchema as RequestSchema,
} from "../../gen/envoy/service/ext_proc/v3/external_processor_pb.js";
import { serviceDefinition } from "../../src/protocols/grpcGlue.js";

type RequestInit = MessageInitShape<typeof ProcessingRequestSchema>;

const ExtProcClient = grpc.makeClientConstructor(serviceDefinition(ExternalProcessor) as grpc.ServiceDefinition, "ExternalProcessor");

export function extProcClient(address: string): grpc.Client {
  return new ExtProcClient(address, grpc.credentials.createInsecure());
}

function headerMap(headers: Record<string, string>) {
  return { headers: Object.entries(headers).map(([key, v]) => ({ key, rawValue: Buffer.from(v) })) };
}

/** One HTTP request's ext_proc stream, as Envoy drives it. */
export class EnvoyStream {
  readonly call: grpc.ClientDuplexStream<unknown, ProcessingResponse>;
  private readonly received: ProcessingResponse[] = [];
  private waiters: (() => void)[] = [];
  ended = false;
  error: grpc.ServiceError | undefined;

  constructor(client: grpc.Client) {
    this.call = (client as unknown as { process(): grpc.ClientDuplexStream<unknown, ProcessingResponse> }).process();
    this.call.on("data", (m: ProcessingResponse) => {
      this.received.push(m);
      this.wake();
    });
    this.call.on("end", () => {
      this.ended = true;
      this.wake();
    });
    this.call.on("error", (e: grpc.ServiceError) => {
      this.error = e;
      this.ended = true;
      this.wake();
    });
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(init: RequestInit): void {
    this.call.write(create(RequestSchema, init));
  }

  /** Request headers; the subset hint rides in metadata_context as Envoy forwards it. */
  requestHeaders(headers: Record<string, string>, opts: { subset?: string[]; endOfStream?: boolean } = {}): void {
    this.send({
      request: { case: "requestHeaders", value: { headers: headerMap(headers), endOfStream: opts.endOfStream ?? false } },
      metadataContext: opts.subset ? { filterMetadata: { "envoy.lb.subset_hint": { "x-gateway-destination-endpoint-subset": opts.subset } } } : undefined,
      protocolConfig: { requestBodyMode: 4, responseBodyMode: 4 }, // FULL_DUPLEX_STREAMED both ways
    });
  }

  /** The body in `chunks` pieces, end_of_stream on the last. */
  requestBody(body: Buffer, chunks = 3): void {
    const size = Math.ceil(body.length / chunks);
    for (let i = 0; i < chunks; i++) {
      const piece = body.subarray(i * size, Math.min(body.length, (i + 1) * size));
      this.send({ request: { case: "requestBody", value: { body: piece, endOfStream: i === chunks - 1 } } });
    }
  }

  responseHeaders(status: number, served?: string): void {
    this.send({
      request: { case: "responseHeaders", value: { headers: headerMap({ ":status": String(status), "content-type": "application/json" }) } },
      metadataContext: served ? { filterMetadata: { "envoy.lb": { "x-gateway-destination-endpoint-served": served } } } : undefined,
    });
  }

  responseBody(body: Buffer, endOfStream: boolean): void {
    this.send({ request: { case: "responseBody", value: { body, endOfStream } } });
  }

  /** Waits for `n` responses in total (or the stream's end) and returns them all. */
  async responses(n: number): Promise<ProcessingResponse[]> {
    while (this.received.length < n && !this.ended) await new Promise<void>((r) => this.waiters.push(r));
    return [...this.received];
  }

  /** Waits until the server ends the stream. */
  async closed(): Promise<void> {
    while (!this.ended) await new Promise<void>((r) => this.waiters.push(r));
  }
}

/** The x-gateway-destination-endpoint value of a request-headers response. */
export function destination(res: ProcessingResponse): { header?: string; metadata?: unknown } {
  if (res.response.case !== "requestHeaders") throw new Error(`expected a request-headers response, got ${res.response.case}`);
  const set = res.response.value.response?.headerMutation?.setHeaders ?? [];
  const header = set.find((h) => h.header?.key === "x-gateway-destination-endpoint")?.header;
  const md = res.dynamicMetadata as Record<string, Record<string, unknown>> | undefined;
  return { header: header ? Buffer.from(header.rawValue).toString() : undefined, metadata: md?.["envoy.lb"]?.["x-gateway-destination-endpoint"] };
}

/** Status and parsed body of an immediate response. */
export function immediate(res: ProcessingResponse): { status: number; body: { error: { message: string; type: string } } } {
  if (res.response.case !== "immediateResponse") throw new Error(`expected an immediate response, got ${res.response.case}`);
  return { status: res.response.value.status!.code, body: JSON.parse(Buffer.from(res.response.value.body).toString()) };
}
