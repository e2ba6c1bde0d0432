// One NATS connection per router, to a single server or a cluster
// (comma-separated URLs), with the usual ways to authenticate.
import { readFileSync } from "node:fs";
import { type ConnectionOptions, type NatsConnection, connect, credsAuthenticator } from "@nats-io/transport-node";
import { log } from "../util/log.js";

export interface NatsConnectOptions {
  /** Comma-separated nats:// URLs (several = a cluster; the client fails over). */
  urls: string;
  user?: string;
  password?: string;
  token?: string;
  /** Path of a .creds file (JWT + nkey seed). */
  credsFile?: string;
  /** TLS: CA bundle, and client certificate + key for mutual TLS. */
  tlsCaFile?: string;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** Name shown in the server's connection list. */
  name?: string;
}

/** The NATS connection flags, as yargs parses them for both `kv-router` and `kv-router worker register`. */
export interface NatsConnectionFlags {
  natsUrl?: string;
  natsUser?: string;
  natsPassword?: string;
  natsToken?: string;
  natsCreds?: string;
  natsTlsCa?: string;
  natsTlsCert?: string;
  natsTlsKey?: string;
}

export function connectOptionsFromFlags(flags: NatsConnectionFlags, name?: string): NatsConnectOptions {
  return {
    urls: flags.natsUrl ?? "",
    user: flags.natsUser,
    password: flags.natsPassword,
    token: flags.natsToken,
    credsFile: flags.natsCreds,
    tlsCaFile: flags.natsTlsCa,
    tlsCertFile: flags.natsTlsCert,
    tlsKeyFile: flags.natsTlsKey,
    name,
  };
}

export function parseUrls(urls: string): string[] {
  const list = urls
    .split(",")
    .map((u) => u.trim())
    .filter((u) => u !== "");
  if (list.length === 0) throw new Error("--nats-url names no server");
  return list;
}

export function connectionOptions(opts: NatsConnectOptions): ConnectionOptions {
  const co: ConnectionOptions = {
    servers: parseUrls(opts.urls),
    name: opts.name ?? "kv-router",
    // A router outlives NATS outages: keep reconnecting, quickly.
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    pingInterval: 5_000,
    // A refused TLS handshake (e.g. no client certificate) otherwise hangs for the 20 s default.
    timeout: 5_000,
    waitOnFirstConnect: false,
  };
  if (opts.user !== undefined) co.user = opts.user;
  if (opts.password !== undefined) co.pass = opts.password;
  if (opts.token !== undefined) co.token = opts.token;
  if (opts.credsFile !== undefined) co.authenticator = credsAuthenticator(readFileSync(opts.credsFile));
  if (opts.tlsCaFile || opts.tlsCertFile || opts.tlsKeyFile) {
    co.tls = {
      ...(opts.tlsCaFile ? { caFile: opts.tlsCaFile } : {}),
      ...(opts.tlsCertFile ? { certFile: opts.tlsCertFile } : {}),
      ...(opts.tlsKeyFile ? { keyFile: opts.tlsKeyFile } : {}),
    };
  }
  return co;
}

export async function connectNats(opts: NatsConnectOptions): Promise<NatsConnection> {
  const nc = await connect(connectionOptions(opts));
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect" || s.type === "reconnect" || s.type === "error") {
        log.warn("nats connection status", { status: s.type, server: "server" in s ? String(s.server) : undefined });
      }
    }
  })().catch(() => undefined);
  return nc;
}

/** JetStream answers while a cluster is still forming (or re-forming after a node loss). */
const CLUSTER_FORMING = /no suitable peers|temporarily unavailable|jetstream not (?:yet )?(?:ready|available)|insufficient resources/i;

/**
 * Runs a JetStream administrative call (create a stream, bucket or object
 * store), retrying while the cluster is still electing its leaders instead
 * of failing the router's start-up; other errors surface at once.
 */
export async function whileClusterForms<T>(what: string, call: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (!CLUSTER_FORMING.test(String(err)) || Date.now() > deadline) throw err;
      if (attempt === 0) log.warn("JetStream cluster not ready yet; retrying", { what, error: String(err) });
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

