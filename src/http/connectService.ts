// The kvrouter.v1 unary methods over the Connect protocol (HTTP/1.1 + JSON,
// curl-able), on the very methods gRPC serves: the same validation, token
// check, metrics and status codes (Connect maps them to HTTP: 400, 404, 401...).
import { Code, type ConnectRouter, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { KvRouterService } from "../../gen/kvrouter/v1/router_pb.js";
import type { RouterMetrics } from "../metrics/metrics.js";
import { type CacheHits, OPEN_READS, type TokenPolicy, hideCacheHits, hidesCacheHits, tokenRefusal } from "../server/auth.js";
import { UNARY_METHOD_NAMES, type UnaryMethods, runUnary } from "../server/unaryMethods.js";

export function connectRoutes(methods: UnaryMethods, metrics: RouterMetrics, authToken: string | undefined, policy: TokenPolicy = OPEN_READS) {
  const impl: Record<string, (req: never, ctx: HandlerContext) => unknown> = {};
  for (const local of Object.keys(UNARY_METHOD_NAMES) as (keyof UnaryMethods)[]) {
    impl[local] = async (req: { requestId?: string; explain?: boolean }, ctx: HandlerContext) => {
      const authorization = ctx.requestHeader.get("authorization") ?? undefined;
      if (authToken !== undefined) {
        const refused = tokenRefusal(local, req, authorization, authToken, policy);
        if (refused !== undefined) {
          metrics.tokenRefused(local);
          throw new ConnectError(refused, Code.Unauthenticated);
        }
      }
      // ctx.signal aborts when the client goes away or its timeout passes: a queued FindBestWorker leaves the queue.
      const outcome = await runUnary(metrics, UNARY_METHOD_NAMES[local], () =>
        (methods[local] as (r: unknown, signal: AbortSignal) => unknown)(req, ctx.signal),
      );
      // gRPC status numbers are Connect codes (both follow google.rpc.Code).
      if (!outcome.ok) throw new ConnectError(outcome.details, outcome.code as number as Code);
      if (authToken !== undefined && hidesCacheHits(local, authorization, authToken, policy)) hideCacheHits(outcome.response as CacheHits);
      return outcome.response;
    };
  }
  // IngestKvEvents and DumpIndex stay gRPC-only: Connect answers them "unimplemented".
  return (router: ConnectRouter) => router.service(KvRouterService, impl as never);
}
