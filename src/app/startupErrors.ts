// What stopped a router from starting, typed so the command line can name the
// flag to fix (the underlying errors of grpc-js, node:http and the event feeds
// do not say which listener or feed they came from).

/** A listener (gRPC, /metrics, ...) could not bind its address. */
export class ListenError extends Error {
  /** The errno code (EADDRINUSE, EACCES, EADDRNOTAVAIL, ...) when one is known. */
  readonly code: string | undefined;

  constructor(
    readonly listener: string,
    readonly host: string,
    readonly port: number,
    cause: unknown,
  ) {
    const message = cause instanceof Error ? cause.message : String(cause);
    super(`${listener} cannot listen on ${host}:${port}: ${message}`, { cause });
    // node:http sets .code; grpc-js only writes it into its message.
    this.code = (cause as { code?: string } | undefined)?.code ?? /\b(E[A-Z]{3,})\b/.exec(message)?.[1];
  }
}

/** An event source (NATS, ZeroMQ, ...) failed in start(). */
export class SourceStartError extends Error {
  constructor(
    readonly source: string,
    cause: unknown,
  ) {
    super(`event source ${source}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}
