// --discovery-backend and Dynamo's variables (DYN_DISCOVERY_BACKEND,
// ETCD_ENDPOINTS, DYN_FILE_KV, DYN_FILE_KV_TTL_SECS) → the sources to start.
// The kubernetes backend's own flags are in kubernetesFlags.ts.
import type { EventSource } from "../router/eventSource.js";
import { DynamoZmqEventPlane } from "../sources/dynamoZmq/dynamoZmqSource.js";
import type { DiscoveryBackendName } from "../discovery/discovery.js";
import { DynamoDiscovery } from "../discovery/dynamoDiscovery.js";
import { dynamoEndpoint } from "../discovery/dynamoRecords.js";
import { EtcdStore } from "../discovery/etcdStore.js";
import { FileStore } from "../discovery/fileStore.js";

/** Dynamo's spellings → ours; Dynamo's `kv_store` is its etcd-backed default. */
const ALIASES: Record<string, DiscoveryBackendName> = {
  etcd: "etcd",
  kv_store: "etcd",
  file: "file",
  "nats-kv": "nats-kv",
  kubernetes: "kubernetes",
  none: "none",
};

/** Dynamo backends kv-router cannot read, and why (a start-up error names them). */
const UNSUPPORTED: Record<string, string> = {
  mem: "mem is Dynamo's in-process store: no other process can see its workers; use etcd or file",
};

/** Dynamo's default ETCD_ENDPOINTS (transports/etcd.rs). */
export const DEFAULT_ETCD_ENDPOINTS = "http://localhost:2379";

/** A problem with the value, or undefined when it is usable. */
export function discoveryBackendProblem(value: string | undefined): string | undefined {
  if (value === undefined || value in ALIASES) return undefined;
  if (value in UNSUPPORTED) return `--discovery-backend / DYN_DISCOVERY_BACKEND "${value}": ${UNSUPPORTED[value]}`;
  return `--discovery-backend / DYN_DISCOVERY_BACKEND must be one of etcd (or kv_store), file, nats-kv, kubernetes, none; got "${value}"`;
}

/**
 * The backend in effect. Unset: etcd when ETCD_ENDPOINTS is set (as a Dynamo
 * worker would find it), the NATS KV bucket in NATS mode, else none.
 */
export function resolveDiscoveryBackend(
  value: string | undefined,
  ctx: { etcdEndpointsSet: boolean; natsMode: boolean; natsDiscovery: boolean },
): DiscoveryBackendName {
  if (value !== undefined) return ALIASES[value];
  if (ctx.etcdEndpointsSet) return "etcd";
  return ctx.natsMode && ctx.natsDiscovery ? "nats-kv" : "none";
}

export function parseEtcdEndpoints(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

export interface DynamoDiscoveryFlags {
  backend: "etcd" | "file";
  /** namespace.component.endpoint */
  endpoint: string;
  etcdEndpoints: string[];
  fileKvRoot: string;
  fileKvTtlMs: number;
  /** The file store's rescan period (default: a third of the TTL, 100 ms to 2 s); not a flag, for tests. */
  fileKvRescanMs?: number;
  workerLeaseMs: number;
  /** Follow the KV-event publishers announced in discovery (Dynamo's ZMQ event plane). */
  zmqEventPlane: boolean;
}

/** The event plane first (it must observe discovery's first resync), then discovery. */
export function dynamoDiscoverySources(f: DynamoDiscoveryFlags): EventSource[] {
  const store = f.backend === "etcd" ? new EtcdStore({ endpoints: f.etcdEndpoints }) : new FileStore({ root: f.fileKvRoot, ttlMs: f.fileKvTtlMs, rescanMs: f.fileKvRescanMs });
  const discovery = new DynamoDiscovery(store, { endpoint: dynamoEndpoint(f.endpoint), leaseMs: f.workerLeaseMs });
  return f.zmqEventPlane ? [new DynamoZmqEventPlane(discovery), discovery] : [discovery];
}
