// The kvrouter.v1 unary methods over the Connect protocol (HTTP/1.1 + JSON,
// curl-able), on the very methods gRPC serves: the same validation, token
// check, metrics and status codes (Connect maps them to HTTP: 400, 404, 401...).
import { Code, type ConnectRouter, ConnectError, type HandlerContext } from "@connectrpc/connect";
import {
  type UniversalHandler,
  type UniversalServerRequest,
  type UniversalServerResponse,
  createAsyncIterable,
  readAllBytes,
} from "@connectrpc/connect/protocol";
import { KvRouterService } from "../../gen/kvrouter/v1/router_pb.js";
import type { RouterMetrics } from "../metrics/metrics.js";
import { type CacheHits, OPEN_READS, type TokenPolicy, hideCacheHits, hidesCacheHits, tokenRefusal } from "../server/auth.js";
import { TRACED_METHODS, UNARY_METHOD_NAMES, type UnaryMethods, runUnary } from "../server/unaryMethods.js";
import type { Tracing } from "../tracing/tracing.js";

/** `tracing`: undefined when off. */
export function connectRoutes(
  methods: UnaryMethods,
  metrics: RouterMetrics,
  authToken: string | undefined,
  policy: TokenPolicy = OPEN_READS,
  tracing?: Tracing,
) {
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
      const span =
        tracing !== undefined && TRACED_METHODS.has(local)
          ? tracing.startRpc("connect_rpc", KvRouterService.typeName, UNARY_METHOD_NAMES[local], (name) => ctx.requestHeader.get(name) ?? undefined)
          : undefined;
      // ctx.signal aborts when the client goes away or its timeout passes: a queued FindBestWorker leaves the queue.
      const outcome = await runUnary(metrics, UNARY_METHOD_NAMES[local], () =>
        (methods[local] as (r: unknown, signal: AbortSignal, span: unknown) => unknown)(req, ctx.signal, span),
      );
      if (span !== undefined) tracing!.endRpc(span, "connect_rpc", outcome.ok ? 0 : outcome.code, outcome.ok ? undefined : outcome.details);
      // gRPC status numbers are Connect codes (both follow google.rpc.Code).
      if (!outcome.ok) throw new ConnectError(outcome.details, outcome.code as number as Code);
      if (authToken !== undefined && hidesCacheHits(local, authorization, authToken, policy)) hideCacheHits(outcome.response as CacheHits);
      return outcome.response;
    };
  }
  // IngestKvEvents and DumpIndex stay gRPC-only: Connect answers them "unimplemented".
  return (router: ConnectRouter) => {
    router.service(KvRouterService, impl as never);
    router.handlers.forEach((handler, i) => (router.handlers[i] = badBytesAreInvalid(handler, metrics)));
  };
}

const PARSE_FAILURE = "parse binary: ";

/**
 * Connect answers a request body that is not a valid protobuf message as
 * "internal" (500): its parser also reads responses in clients, where bad bytes
 * are the server's fault. Here they are the caller's: invalid_argument (400),
 * worded and counted as over gRPC (grpcGlue.ts, MalformedRequest).
 */
function badBytesAreInvalid(handler: UniversalHandler, metrics: RouterMetrics): UniversalHandler {
  const answer = async (req: UniversalServerRequest): Promise<UniversalServerResponse> => {
    const res = await handler(req);
    // A Connect unary error is one small uncompressed JSON body.
    const header = res.header;
    if (res.status !== 500 || !res.body || header?.get("content-type") !== "application/json" || header.has("content-encoding")) return res;
    const body = await readAllBytes(res.body, Number.MAX_SAFE_INTEGER);
    const reason = parseFailure(body);
    if (reason === undefined) return { ...res, body: createAsyncIterable([body]) };
    metrics.invalidRequests.inc({ method: handler.method.name });
    const message = `request is not a valid ${handler.method.input.typeName}: ${reason}`;
    const invalid = new TextEncoder().encode(JSON.stringify({ code: "invalid_argument", message }));
    header.set("content-length", String(invalid.byteLength));
    return { ...res, status: 400, body: createAsyncIterable([invalid]) };
  };
  return Object.assign(answer, handler);
}

/** Why the request's bytes did not parse, when a Connect error body says that is what went wrong. */
function parseFailure(body: Uint8Array): string | undefined {
  try {
    const { code, message } = JSON.parse(new TextDecoder().decode(body)) as { code?: unknown; message?: unknown };
    if (code === "internal" && typeof message === "string" && message.startsWith(PARSE_FAILURE)) return message.slice(PARSE_FAILURE.length);
  } catch {
    // not JSON: not Connect's error
  }
  return undefined;
}
