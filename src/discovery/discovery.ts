// One interface for every way the router learns which workers exist:
// Dynamo's etcd and file stores (dynamoDiscovery.ts over etcdStore.ts /
// fileStore.ts), our NATS KV bucket (natsKv.ts), Kubernetes pods
// (kubernetes/kubernetesDiscovery.ts), and RegisterWorker calls over
// gRPC (the service handler; always on beside any backend). Each backend turns
// its records into the router's worker registry: a worker appears when its
// record appears and is forgotten, with its blocks and load, when it goes.
import type { EventSource } from "../router/eventSource.js";

/** A discovery backend has an event source's lifecycle: started with the router, stopped with it. */
export type WorkerDiscovery = EventSource;

/** The backends --discovery-backend selects (`none`: gRPC registrations and KV events only). */
export const DISCOVERY_BACKENDS = ["etcd", "file", "nats-kv", "kubernetes", "none"] as const;
export type DiscoveryBackendName = (typeof DISCOVERY_BACKENDS)[number];

/**
 * A key-value store watched under some prefixes (Dynamo's kv::Store seen
 * from outside): the etcd and file backends implement it.
 */
export interface WatchedStore {
  readonly backend: "etcd" | "file";
  /** Resolves once the first resync was delivered (or failed: it then keeps retrying). */
  start(prefixes: readonly string[], handler: StoreHandler): Promise<void>;
  stop(): Promise<void>;
  readonly health: StoreHealth;
  /** What reading the store cost, by operation, if the backend counts it (kvrouter_discovery_file_ops_total). */
  readonly ops?: Readonly<Record<string, number>>;
}

export interface StoreHandler {
  /** Every key under the prefixes at one moment: first, and again after a reconnect or rescan. */
  resync(entries: ReadonlyMap<string, Uint8Array>): void;
  put(key: string, value: Uint8Array): void;
  delete(key: string): void;
  /** A value the store would not read (e.g. over its size bound): counted and logged like a malformed one. */
  skip(key: string, reason: string): void;
}

/** Reported on /metrics: is the store reachable, and how often did we reconnect. */
export interface StoreHealth {
  up: boolean;
  reconnects: number;
  lastError?: string;
}

/** Exponential backoff with a cap, for reconnecting to a store that went away. */
export function backoffMs(attempt: number, baseMs = 100, capMs = 5_000): number {
  return Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16));
}
