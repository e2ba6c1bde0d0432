/** A request the router refuses, with the gRPC status it maps to. */
export class RouterError extends Error {
  constructor(
    readonly code: "invalid_argument" | "not_found" | "failed_precondition" | "already_exists" | "resource_exhausted" | "unavailable" | "cancelled",
    message: string,
  ) {
    super(message);
  }
}
