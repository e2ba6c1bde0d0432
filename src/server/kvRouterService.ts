// kvrouter.v1.KvRouterService over gRPC: the unary methods (unaryMethods.ts)
// behind grpc-js adapters, and the two streaming calls only gRPC carries.
import type { ServerUnaryCall, UntypedServiceImplementation, sendUnaryData } from "@grpc/grpc-js";
import type { RouterMetrics } from "../metrics/metrics.js";
import type { KvRouter } from "../router/router.js";
import { MalformedRequest } from "../protocols/grpcGlue.js";
import type { IngestPool } from "./ingestPool.js";
import { DEFAULT_MAX_CONCURRENT_DUMPS, type ServiceLimits, UNARY_METHOD_NAMES, type UnaryMethods, invalid, runUnary } from "./unaryMethods.js";
import { ingestKvEventsHandler } from "./ingestStream.js";
import { dumpIndexHandler } from "./dumpStream.js";

/** `pool`: decoder threads for IngestKvEvents (undefined: decode on this thread). */
export function kvRouterHandlers(
  router: KvRouter,
  metrics: RouterMetrics,
  methods: UnaryMethods,
  limits: Pick<ServiceLimits, "maxConcurrentDumps">,
  pool?: IngestPool,
): UntypedServiceImplementation {
  const unary =
    <Req, Res>(local: keyof UnaryMethods) =>
    async (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      // A client that goes away (or whose deadline passes: grpc-js cancels the
      // call and answers DEADLINE_EXCEEDED) leaves the admission queue at once.
      const gone = new AbortController();
      const onCancelled = () => gone.abort();
      call.once("cancelled", onCancelled);
      const outcome = await runUnary(metrics, UNARY_METHOD_NAMES[local], () => {
        if (call.request instanceof MalformedRequest) invalid(call.request.reason);
        return (methods[local] as (req: Req, signal: AbortSignal) => Res | Promise<Res>)(call.request, gone.signal);
      });
      call.removeListener("cancelled", onCancelled);
      if (gone.signal.aborted) return; // grpc-js has answered the call already
      if (outcome.ok) callback(null, outcome.response);
      else callback({ code: outcome.code, details: outcome.details });
    };
  return {
    ...Object.fromEntries(Object.keys(UNARY_METHOD_NAMES).map((local) => [local, unary(local as keyof UnaryMethods)])),
    ingestKvEvents: ingestKvEventsHandler(router, metrics, pool),
    dumpIndex: dumpIndexHandler(router, metrics, limits.maxConcurrentDumps ?? DEFAULT_MAX_CONCURRENT_DUMPS),
  };
}
