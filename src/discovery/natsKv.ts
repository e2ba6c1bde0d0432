// Worker discovery through a NATS KV bucket per endpoint. Each worker
// instance owns one key whose value says who it is (worker id, dp ranks,
// optional addresses) and for how long (ttl_ms). Workers re-put the key well
// within the TTL; the router watches the bucket and holds each worker on a
// lease of that TTL, so a worker whose key stops being refreshed (the server
// drops nothing on its own in NATS 2.9: no per-key TTL) or is deleted
// disappears with all its blocks.
import { type KV, Kvm, type KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { RouterError } from "../router/errors.js";
import type { KvRouter } from "../router/router.js";
import { log } from "../util/log.js";
import { LogOnce } from "../util/logOnce.js";
import { whileClusterForms } from "../nats/connection.js";
import { type NatsNames, natsNames, safeName } from "../protocols/natsNames.js";
import { DecodeError, parseJsonLossless, stringifyJson } from "../protocols/routerEventCodec.js";

/** Keys of workers gone for this long are garbage; the bucket drops them. */
const BUCKET_MAX_AGE_MS = 60 * 60_000;

export interface WorkerRegistration {
  workerId: bigint;
  dpRanks: number[];
  ttlMs: number;
  grpcAddress?: string;
  zmqAddress?: string;
}

export async function openDiscoveryBucket(nc: NatsConnection, names: NatsNames, replicas = 1): Promise<KV> {
  return whileClusterForms(`bucket ${names.discoveryBucket}`, () =>
    new Kvm(nc).create(names.discoveryBucket, { history: 1, ttl: BUCKET_MAX_AGE_MS, replicas }),
  );
}

export function encodeRegistration(r: WorkerRegistration): Uint8Array {
  const value: Record<string, unknown> = { worker_id: r.workerId, dp_ranks: r.dpRanks, ttl_ms: r.ttlMs };
  if (r.grpcAddress) value.grpc_address = r.grpcAddress;
  if (r.zmqAddress) value.zmq_address = r.zmqAddress;
  return new TextEncoder().encode(stringifyJson(value));
}

export function decodeRegistration(bytes: Uint8Array): WorkerRegistration {
  let v: unknown;
  try {
    v = parseJsonLossless(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new DecodeError(`not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== "object" || v === null) throw new DecodeError("expected a JSON object");
  const o = v as Record<string, unknown>;
  const id = o.worker_id;
  if (!(typeof id === "bigint" || (typeof id === "string" && /^\d+$/.test(id))) || BigInt(id) >= 1n << 64n) {
    throw new DecodeError(`worker_id: expected an unsigned 64-bit integer, got ${String(id)}`);
  }
  const ranks = o.dp_ranks ?? [0n];
  if (!Array.isArray(ranks) || ranks.some((r) => typeof r !== "bigint" || r < 0n || r > 0xffffffffn)) {
    throw new DecodeError("dp_ranks: expected a list of u32");
  }
  const ttl = o.ttl_ms;
  if (typeof ttl !== "bigint" || ttl <= 0n || ttl > 86_400_000n) throw new DecodeError("ttl_ms: expected 1..86400000");
  return {
    workerId: BigInt(id),
    dpRanks: ranks.map(Number),
    ttlMs: Number(ttl),
    grpcAddress: typeof o.grpc_address === "string" ? o.grpc_address : undefined,
    zmqAddress: typeof o.zmq_address === "string" ? o.zmq_address : undefined,
  };
}

/** Router side: mirrors the bucket into the router's worker leases. */
export class DiscoveryWatcher {
  malformed = 0;
  private readonly workerOfKey = new Map<string, bigint>();
  private readonly logged = new LogOnce();
  private stopWatch: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(private readonly kv: KV) {}

  async start(router: KvRouter): Promise<void> {
    const watch = await this.kv.watch({ key: ">" });
    this.stopWatch = () => watch.stop();
    this.loop = (async () => {
      for await (const entry of watch) {
        try {
          this.onEntry(router, entry);
        } catch (err) {
          // A registration the router refuses (e.g. past --max-dp-ranks) must not end the watch.
          this.malformed++;
          this.logged.log(entry.key, "worker registration refused (logged once per key)", { key: entry.key, error: String((err as Error)?.message ?? err) });
        }
      }
    })().catch((err) => log.warn("discovery watch ended", { error: String(err) }));
  }

  async stop(): Promise<void> {
    this.stopWatch?.();
    await this.loop;
  }

  private onEntry(router: KvRouter, e: KvEntry): void {
    if (e.operation === "DEL" || e.operation === "PURGE") {
      const id = this.workerOfKey.get(e.key);
      this.workerOfKey.delete(e.key);
      if (id === undefined) return;
      try {
        const dropped = router.deregisterWorker(id);
        log.info("worker deregistered (discovery key deleted)", { key: e.key, worker_id: id, dropped_blocks: dropped });
      } catch (err) {
        if (!(err instanceof RouterError)) throw err;
      }
      return;
    }
    let reg: WorkerRegistration;
    try {
      reg = decodeRegistration(e.value);
    } catch (err) {
      this.malformed++;
      this.logged.log(e.key, "malformed worker registration ignored (logged once per key)", { key: e.key, error: String(err) });
      return;
    }
    // An entry replayed at start may be old: only the rest of its TTL counts.
    const remaining = e.created.getTime() + reg.ttlMs - Date.now();
    if (remaining <= 0) return;
    this.workerOfKey.set(e.key, reg.workerId);
    router.registerWorker(reg.workerId, reg.dpRanks, Math.min(remaining, reg.ttlMs));
  }
}

export interface RegisterOptions {
  /** Key of this worker instance; defaults to the worker id. */
  instance?: string;
  /** Refresh period; defaults to a third of the TTL. */
  refreshMs?: number;
  replicas?: number;
}

export interface RegisteredWorker {
  key: string;
  /** Stops refreshing and deletes the key (the router drops the worker now). */
  deregister(): Promise<void>;
  /** Stops refreshing only: the router drops the worker when the TTL runs out. */
  stopRefreshing(): void;
}

/**
 * Worker side: registers a worker under an endpoint and keeps the key fresh.
 * Usable from any TypeScript worker process with its own NATS connection.
 */
export async function registerWorker(
  nc: NatsConnection,
  endpoint: string,
  reg: WorkerRegistration,
  opts: RegisterOptions = {},
): Promise<RegisteredWorker> {
  const kv = await openDiscoveryBucket(nc, natsNames(endpoint), opts.replicas);
  const key = safeName(opts.instance ?? String(reg.workerId));
  const value = encodeRegistration(reg);
  await kv.put(key, value);
  const timer = setInterval(() => {
    kv.put(key, value).catch((err) => log.warn("worker registration refresh failed", { key, error: String(err) }));
  }, opts.refreshMs ?? Math.max(100, Math.floor(reg.ttlMs / 3)));
  return {
    key,
    async deregister() {
      clearInterval(timer);
      await kv.delete(key);
    },
    stopRefreshing() {
      clearInterval(timer);
    },
  };
}
