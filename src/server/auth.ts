// Optional shared-token check: calls that change the router's state (and
// DumpIndex, which hands out every block hash) must carry
// `authorization: Bearer <token>` metadata. Other reads stay open so
// dashboards and health probes need no secret, unless --auth-reads.
import { timingSafeEqual } from "node:crypto";
import { type Metadata, type UntypedServiceImplementation, status } from "@grpc/grpc-js";

/** Handler names (grpc-js local names) that always change state. */
export const MUTATING_METHODS = new Set([
  "ingestKvEvents",
  "registerWorker",
  "keepAlive",
  "deregisterWorker",
  "free",
  "markPrefillCompleted",
  "setBusyThresholds",
]);

export interface TokenPolicy {
  /** Approximate mode (--no-kv-events): every FindBestWorker records its prompt in the index. */
  approximate: boolean;
  /** --auth-reads: ListWorkers and FindBestWorker explain need the token too; plain FindBestWorker answers hide cache hits. */
  authReads: boolean;
}

export const OPEN_READS: TokenPolicy = { approximate: false, authReads: false };

/**
 * Whether a call needs the token. State changes always do, whatever field
 * makes them one; DumpIndex does too (it hands out every block hash, and each
 * one costs the server a full walk of the index); other reads only with --auth-reads.
 */
export function needsToken(method: string, request: { requestId?: string; explain?: boolean } | undefined, policy: TokenPolicy): boolean {
  if (MUTATING_METHODS.has(method) || method === "dumpIndex") return true;
  if (method === "findBestWorker") {
    if (policy.approximate || Boolean(request?.requestId)) return true; // records the prompt or the request
    return policy.authReads && Boolean(request?.explain); // explain tells which worker caches a prompt
  }
  // The scorer API (/query, /query_by_hash) tells which worker caches a prompt, as explain does.
  if (method === "listWorkers" || method === "scorerQuery") return policy.authReads;
  return false;
}

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

/**
 * Whether a FindBestWorker answer must hide how much of the prompt is cached:
 * with --auth-reads, from a caller without the token. A plain query stays open
 * (it only routes), but its overlap_blocks and predicted_blocks would answer
 * "is this prompt cached?" as explain does.
 */
export function hidesCacheHits(method: string, authorization: unknown, token: string, policy: TokenPolicy): boolean {
  return method === "findBestWorker" && policy.authReads && !holdsToken(authorization, token);
}

/** The fields of a FindBestWorker answer that say how much of the prompt the chosen worker caches. */
export type CacheHits = { overlapBlocks: number; predictedBlocks: number };

/** Zeroes what hidesCacheHits() hides, in place. */
export function hideCacheHits(response: CacheHits): void {
  response.overlapBlocks = 0;
  response.predictedBlocks = 0;
}

function holdsToken(authorization: unknown, token: string): boolean {
  const presented = presentedToken(authorization);
  return presented !== undefined && sameSecret(presented, token);
}

/** Wraps the handlers so calls that need the token (needsToken) refuse without it (UNAUTHENTICATED). */
export function requireToken(
  handlers: UntypedServiceImplementation,
  token: string,
  onRefused: (method: string) => void,
  policy: TokenPolicy = OPEN_READS,
): UntypedServiceImplementation {
  const wrapped: UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(handlers)) {
    wrapped[name] = ((call: { metadata: Metadata; request?: { requestId?: string; explain?: boolean }; emit?: Function }, callback?: Function) => {
      const authorization = call.metadata.get("authorization")[0];
      const refused = tokenRefusal(name, call.request, authorization, token, policy);
      if (refused === undefined) {
        if (!hidesCacheHits(name, authorization, token, policy)) return (handler as Function)(call, callback);
        return (handler as Function)(call, (err: unknown, response?: CacheHits) => {
          if (response) hideCacheHits(response);
          callback!(err, response);
        });
      }
      onRefused(name);
      // Server-streaming calls (DumpIndex) have no callback: fail the stream.
      if (callback) callback({ code: status.UNAUTHENTICATED, details: refused });
      else call.emit!("error", { code: status.UNAUTHENTICATED, details: refused });
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
  request: { requestId?: string; explain?: boolean } | undefined,
  authorization: unknown,
  token: string,
  policy: TokenPolicy = OPEN_READS,
): string | undefined {
  if (!needsToken(method, request, policy) || holdsToken(authorization, token)) return undefined;
  return presentedToken(authorization) === undefined
    ? "this call needs 'authorization: Bearer <token>' metadata (it changes router state, dumps the index, or --auth-reads is on)"
    : "the bearer token does not match the router's --auth-token";
}
