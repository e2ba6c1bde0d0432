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

function presentedToken(metadata: Metadata): string | undefined {
  const value = metadata.get("authorization")[0];
  if (typeof value !== "string") return undefined;
  const match = /^Bearer\s+(.+)$/i.exec(value.trim());
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
      // A FindBestWorker without request_id is a pure query: no token needed.
      const readOnly = name === "findBestWorker" && !call.request?.requestId;
      const presented = presentedToken(call.metadata);
      if (readOnly || (presented !== undefined && sameSecret(presented, token))) {
        return (handler as Function)(call, callback);
      }
      onRefused(name);
      const details =
        presented === undefined
          ? "this call changes router state and needs 'authorization: Bearer <token>' metadata"
          : "the bearer token does not match the router's --auth-token";
      callback!({ code: status.UNAUTHENTICATED, details });
    }) as never;
  }
  return wrapped;
}
