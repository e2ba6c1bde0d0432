// kvrouter.v1.KvRouterService over gRPC: the unary methods (unaryMethods.ts)
// behind grpc-js adapters, and the two streaming calls only gRPC carries.
import { type Metadata, type ServerUnaryCall, type UntypedServiceImplementation, type sendUnaryData, status } from "@grpc/grpc-js";
import { KvRouterService } from "../../gen/kvrouter/v1/router_pb.js";
import type { RouterMetrics } from "../metrics/metrics.js";
import type { Tracing } from "../tracing/tracing.js";
import type { KvRouter } from "../router/router.js";
import { MalformedRequest } from "../protocols/grpcGlue.js";
import {
  DEFAULT_MAX_CONCURRENT_DUMPS,
  type ServiceLimits,
  TRACED_METHODS,
  UNARY_METHOD_NAMES,
  type UnaryMethods,
  invalid,
  runUnary,
} from "./unaryMethods.js";
import { type IngestOptions, ingestKvEventsHandler } from "./ingestStream.js";
import { dumpIndexHandler } from "./dumpStream.js";

/** The service's name in spans (rpc.service). */
export const KV_ROUTER_SERVICE = KvRouterService.typeName;

/** One metadata entry as text (binary -bin entries are not trace context). */
const metadataText = (md: Metadata) => (name: string) => {
  const v = md.get(name)[0];
  return typeof v === "string" ? v : undefined;
};

/** `ingest`: how IngestKvEvents decodes and applies (see ingestStream.ts). `tracing`: undefined when off. */
export function kvRouterHandlers(
  router: KvRouter,
  metrics: RouterMetrics,
  methods: UnaryMethods,
  limits: Pick<ServiceLimits, "maxConcurrentDumps">,
  ingest: IngestOptions = {},
  tracing?: Tracing,
): UntypedServiceImplementation {
  const unary =
    <Req, Res>(local: keyof UnaryMethods) =>
    async (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      // A client that goes away (or whose deadline passes: grpc-js cancels the
      // call and answers DEADLINE_EXCEEDED) leaves the admission queue at once.
      const gone = new AbortController();
      const onCancelled = () => gone.abort();
      call.once("cancelled", onCancelled);
      const span =
        tracing !== undefined && TRACED_METHODS.has(local)
          ? tracing.startRpc("grpc", KV_ROUTER_SERVICE, UNARY_METHOD_NAMES[local], metadataText(call.metadata))
          : undefined;
      const outcome = await runUnary(metrics, UNARY_METHOD_NAMES[local], () => {
        if (call.request instanceof MalformedRequest) invalid(call.request.reason);
        return (methods[local] as (req: Req, signal: AbortSignal, span: unknown) => Res | Promise<Res>)(call.request, gone.signal, span);
      });
      call.removeListener("cancelled", onCancelled);
      if (span !== undefined) {
        if (gone.signal.aborted) tracing!.endRpc(span, "grpc", status.CANCELLED, "the client went away or its deadline passed");
        else tracing!.endRpc(span, "grpc", outcome.ok ? status.OK : outcome.code, outcome.ok ? undefined : outcome.details);
      }
      if (gone.signal.aborted) return; // grpc-js has answered the call already
      if (outcome.ok) callback(null, outcome.response);
      else callback({ code: outcome.code, details: outcome.details });
    };
  return {
    ...Object.fromEntries(Object.keys(UNARY_METHOD_NAMES).map((local) => [local, unary(local as keyof UnaryMethods)])),
    ingestKvEvents: ingestKvEventsHandler(router, metrics, ingest),
    dumpIndex: dumpIndexHandler(router, metrics, limits.maxConcurrentDumps ?? DEFAULT_MAX_CONCURRENT_DUMPS),
  };
}
