// A small promise-based TypeScript client for kv-router, for workers,
// frontends, tests and benchmarks. Messages are the generated gen/ types.
import { type MessageInitShape, create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type DeregisterWorkerResponse,
  type DumpIndexResponse,
  type FindBestWorkerResponse,
  type FreeResponse,
  type IngestKvEventsResponse,
  type KeepAliveResponse,
  type KvEvent,
  type ListWorkersResponse,
  type MarkPrefillCompletedResponse,
  type RegisterWorkerResponse,
  type SetBusyThresholdsResponse,
  DeregisterWorkerRequestSchema,
  DumpIndexRequestSchema,
  FindBestWorkerRequestSchema,
  FreeRequestSchema,
  IngestKvEventsRequestSchema,
  KeepAliveRequestSchema,
  KvRouterService,
  ListWorkersRequestSchema,
  MarkPrefillCompletedRequestSchema,
  RegisterWorkerRequestSchema,
  SetBusyThresholdsRequestSchema,
} from "../../gen/kvrouter/v1/router_pb.js";
import { serviceDefinition } from "../protocols/grpcGlue.js";

const ClientConstructor = grpc.makeGenericClientConstructor(serviceDefinition(KvRouterService), "KvRouterService");

type Init<S extends Parameters<typeof create>[0]> = MessageInitShape<S>;

export class KvRouterClient {
  readonly raw: grpc.Client;

  constructor(address: string, credentials = grpc.credentials.createInsecure(), options: grpc.ClientOptions = {}) {
    this.raw = new ClientConstructor(address, credentials, {
      "grpc.max_send_message_length": 64 * 1024 * 1024,
      ...options,
    });
  }

  private unary<Res>(method: string, request: unknown, options: grpc.CallOptions = {}, metadata = new grpc.Metadata()): Promise<Res> {
    return new Promise((resolve, reject) => {
      (this.raw as unknown as Record<string, Function>)[method](request, metadata, options, (err: grpc.ServiceError | null, res: Res) =>
        err ? reject(err) : resolve(res),
      );
    });
  }

  /**
   * `options.deadline` bounds how long the call may wait in the router's queue.
   * `metadata` may carry the caller's W3C trace context (traceparent, tracestate):
   * the router's span for the call joins that trace.
   */
  findBestWorker(req: Init<typeof FindBestWorkerRequestSchema>, options: grpc.CallOptions = {}, metadata?: grpc.Metadata): Promise<FindBestWorkerResponse> {
    return this.unary("findBestWorker", create(FindBestWorkerRequestSchema, req), options, metadata);
  }
  /** Changes the busy/queue thresholds at run time; answers the thresholds now in force. */
  setBusyThresholds(req: Init<typeof SetBusyThresholdsRequestSchema>, metadata = new grpc.Metadata()): Promise<SetBusyThresholdsResponse> {
    return new Promise((resolve, reject) => {
      (this.raw as unknown as Record<string, Function>).setBusyThresholds(
        create(SetBusyThresholdsRequestSchema, req),
        metadata,
        (err: grpc.ServiceError | null, res: SetBusyThresholdsResponse) => (err ? reject(err) : resolve(res)),
      );
    });
  }
  markPrefillCompleted(requestId: string, metadata?: grpc.Metadata): Promise<MarkPrefillCompletedResponse> {
    return this.unary("markPrefillCompleted", create(MarkPrefillCompletedRequestSchema, { requestId }), {}, metadata);
  }
  free(requestId: string, metadata?: grpc.Metadata): Promise<FreeResponse> {
    return this.unary("free", create(FreeRequestSchema, { requestId }), {}, metadata);
  }
  registerWorker(req: Init<typeof RegisterWorkerRequestSchema>): Promise<RegisterWorkerResponse> {
    return this.unary("registerWorker", create(RegisterWorkerRequestSchema, req));
  }
  /** Renews the worker's lease; `batch`: its engine's running and waiting counts per rank, when it reports them. */
  keepAlive(workerId: bigint, batch: { dpRank: number; running: number; waiting: number }[] = []): Promise<KeepAliveResponse> {
    return this.unary("keepAlive", create(KeepAliveRequestSchema, { workerId, batch }));
  }
  deregisterWorker(workerId: bigint): Promise<DeregisterWorkerResponse> {
    return this.unary("deregisterWorker", create(DeregisterWorkerRequestSchema, { workerId }));
  }
  listWorkers(): Promise<ListWorkersResponse> {
    return this.unary("listWorkers", create(ListWorkersRequestSchema, {}));
  }

  /** Sends batches of events on one client stream; resolves with the server's counts. */
  ingestKvEvents(batches: Iterable<Init<typeof IngestKvEventsRequestSchema>>): Promise<IngestKvEventsResponse> {
    return new Promise((resolve, reject) => {
      const call = (this.raw as unknown as Record<string, Function>).ingestKvEvents(
        (err: grpc.ServiceError | null, res: IngestKvEventsResponse) => (err ? reject(err) : resolve(res)),
      ) as grpc.ClientWritableStream<unknown>;
      for (const batch of batches) call.write(create(IngestKvEventsRequestSchema, batch));
      call.end();
    });
  }

  /** Shorthand: one batch of events. */
  sendEvents(events: Init<typeof IngestKvEventsRequestSchema>["events"], restore = false): Promise<IngestKvEventsResponse> {
    return this.ingestKvEvents([{ events, restore }]);
  }

  /** The whole index as events (see DumpIndex). */
  async dumpIndex(): Promise<KvEvent[]> {
    const call = (this.raw as unknown as Record<string, Function>).dumpIndex(
      create(DumpIndexRequestSchema, {}),
    ) as grpc.ClientReadableStream<DumpIndexResponse>;
    const events: KvEvent[] = [];
    for await (const msg of call) events.push(...(msg as DumpIndexResponse).events);
    return events;
  }

  close(): void {
    this.raw.close();
  }
}
