// Optional shared-token check: calls that change the router's state must carry
// `authorization: Bearer <token>` metadata. Read-only calls stay open so
// dashboards and health probes need no secret.
import { timingSafeEqual } from "node:crypto";
import { type Metadata, type UntypedServiceImplementation, status } from "@grpc/grpc-js";

/** Handler names (grpc-js local names) that change state. FindBestWorker does when it records a request_id. */
export const MUTATING_METHODS = new Set([
  "ingestKvEvents",
  "registerWorker",
  "keepAlive",
  "deregisterWorker",
  "free",
  "markPrefillCompleted",
  "findBestWorker",
]);

function presentedToken(authorization: unknown): string | undefined {
  if (typeof authorization !== "string") return undefined;
  const match = /^Bearer\s+(.+)$/i.exec(authorization.trim());
  return match?.[1];
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Wraps the mutating handlers so they refuse calls without the right token (UNAUTHENTICATED). */
export function requireToken(
  handlers: UntypedServiceImplementation,
  token: string,
  onRefused: (method: string) => void,
): UntypedServiceImplementation {
  const wrapped: UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(handlers)) {
    if (!MUTATING_METHODS.has(name)) {
      wrapped[name] = handler;
      continue;
    }
    wrapped[name] = ((call: { metadata: Metadata; request?: { requestId?: string } }, callback?: Function) => {
      const refused = tokenRefusal(name, call.request, call.metadata.get("authorization")[0], token);
      if (refused === undefined) return (handler as Function)(call, callback);
      onRefused(name);
      callback!({ code: status.UNAUTHENTICATED, details: refused });
    }) as never;
  }
  return wrapped;
}

/**
 * Why a call to `method` (grpc-js local name) must be refused, or undefined
 * when it may proceed: the one token check of every transport (gRPC, HTTP).
 */
export function tokenRefusal(
  method: string,
  request: { requestId?: string } | undefined,
  authorization: unknown,
  token: string,
): string | undefined {
  if (!MUTATING_METHODS.has(method)) return undefined;
  // A FindBestWorker without request_id is a pure query: no token needed.
  if (method === "findBestWorker" && !request?.requestId) return undefined;
  const presented = presentedToken(authorization);
  if (presented !== undefined && sameSecret(presented, token)) return undefined;
  return presented === undefined
    ? "this call changes router state and needs 'authorization: Bearer <token>' metadata"
    : "the bearer token does not match the router's --auth-token";
}
