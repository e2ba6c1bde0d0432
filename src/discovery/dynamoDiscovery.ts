// Dynamo's discovery, read from its store (etcd or the file KV): the
// instances of --endpoint become workers of the router, and the KV-event and
// forward-pass-metrics publishers announced under v1/event_channels are handed
// to whoever follows them (the Dynamo ZMQ event plane adapter).
//
// The store is the lease keeper: a worker is held while its key exists (the
// router renews its own registry lease on the worker's behalf) and forgotten
// when the key goes (etcd deletes it when the worker's lease ends; the file
// store's keys go stale). If the store itself goes away, the router keeps
// what it knew and resyncs when it is back.
import type { Registry } from "prom-client";
import { Gauge } from "prom-client";
import { mirroredCounter, mirroredTotal } from "../metrics/mirrored.js";
import { FPM_TOPIC } from "../protocols/forwardPassMetrics.js";
import { RouterError } from "../router/errors.js";
import type { KvRouter } from "../router/router.js";
import type { EventSourceContext } from "../router/eventSource.js";
import { log } from "../util/log.js";
import { LogOnce } from "../util/logOnce.js";
import type { StoreHandler, WatchedStore, WorkerDiscovery } from "./discovery.js";
import {
  type DynamoEndpoint,
  EVENT_CHANNELS_PREFIX,
  type EventChannel,
  KV_EVENTS_TOPIC,
  instancesPrefix,
  modelCardsPrefix,
  parseEndpointInstance,
  parseEventChannel,
  type ModelCardRanks,
  parseModelCardRanks,
  servesEndpoint,
} from "./dynamoRecords.js";

/**
 * Told about the KV-event and forward-pass-metrics publishers of the router's endpoint as they come
 * and go (keyed by discovery key); `channel.topic` says which.
 */
export interface ChannelObserver {
  channelAdded(key: string, channel: EventChannel): void;
  channelRemoved(key: string): void;
}

export interface DynamoDiscoveryOptions {
  endpoint: DynamoEndpoint;
  /** The router-side lease of a held worker; renewed every third of it while its key exists. */
  leaseMs: number;
}

export class DynamoDiscovery implements WorkerDiscovery, StoreHandler {
  readonly name: string;
  /** Values that were not valid records, by kind; each key is logged once. */
  readonly malformed = { instance: 0, channel: 0, card: 0 };
  /** Valid records the router refused or failed on (e.g. past --max-worker-ranks), skipped; logged once per key. */
  refused = 0;
  readonly observers: ChannelObserver[] = [];
  private readonly workerOfKey = new Map<string, bigint>();
  /** How many instance keys hold each worker (a re-registration may briefly use two): O(1) when one goes, with 50,000 held. */
  private readonly keysOfWorker = new Map<bigint, number>();
  private readonly channels = new Map<string, EventChannel>();
  /** dp ranks of each worker, from its base model card (key → ranks, so a deleted card is forgotten). */
  private readonly cardRanks = new Map<string, Pick<ModelCardRanks, "instanceId" | "dpRanks" | "capacity">>();
  /** The card key last written for each worker. */
  private readonly cardOfWorker = new Map<bigint, string>();
  /** Cards whose Eagle mode differs from the router's --eagle (requests would hash in other windows). */
  eagleMismatches = 0;
  private readonly loggedKeys = new LogOnce();
  private router: KvRouter | undefined;
  private renew: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: WatchedStore,
    private readonly opts: DynamoDiscoveryOptions,
  ) {
    this.name = `discovery-${store.backend}`;
  }

  /** Workers currently held because their instance key exists. */
  get workers(): bigint[] {
    return [...this.keysOfWorker.keys()];
  }

  async start(router: KvRouter, context?: EventSourceContext): Promise<void> {
    this.router = router;
    if (context) this.registerMetrics(context.registry);
    this.renew = setInterval(() => this.renewLeases(), Math.max(50, Math.floor(this.opts.leaseMs / 3)));
    this.renew.unref();
    await this.store.start([instancesPrefix(this.opts.endpoint), modelCardsPrefix(this.opts.endpoint), EVENT_CHANNELS_PREFIX], this);
    log.info("Dynamo discovery on", {
      backend: this.store.backend,
      instances: instancesPrefix(this.opts.endpoint),
      workers: this.workerOfKey.size,
      kv_event_publishers: [...this.channels.values()].filter((c) => c.topic === KV_EVENTS_TOPIC).length,
      fpm_publishers: [...this.channels.values()].filter((c) => c.topic === FPM_TOPIC).length,
    });
  }

  async stop(): Promise<void> {
    clearInterval(this.renew);
    await this.store.stop();
  }

  resync(entries: ReadonlyMap<string, Uint8Array>): void {
    for (const key of [...this.workerOfKey.keys(), ...this.channels.keys(), ...this.cardRanks.keys()]) {
      if (!entries.has(key)) this.delete(key);
    }
    for (const [key, value] of entries) this.put(key, value);
  }

  // put() and delete() run inside the store's watch callbacks: whatever a
  // record makes the router refuse (or a bug) is a counted, logged skip, so
  // one record never stops the watch nor the process.
  put(key: string, value: Uint8Array): void {
    try {
      if (key.startsWith(EVENT_CHANNELS_PREFIX)) this.putChannel(key, value);
      else if (key.startsWith(instancesPrefix(this.opts.endpoint))) this.putInstance(key, value);
      else if (key.startsWith(modelCardsPrefix(this.opts.endpoint))) this.putCard(key, value);
    } catch (err) {
      this.refuse(key, err);
    }
  }

  delete(key: string): void {
    try {
      this.deleteKey(key);
    } catch (err) {
      this.refuse(key, err);
    }
  }

  private deleteKey(key: string): void {
    const card = this.cardRanks.get(key);
    if (card) {
      this.cardRanks.delete(key);
      if (this.cardOfWorker.get(card.instanceId) === key) this.cardOfWorker.delete(card.instanceId);
      return; // the worker keeps the ranks it was registered with
    }
    const workerId = this.workerOfKey.get(key);
    if (workerId !== undefined) {
      this.workerOfKey.delete(key);
      // Another key may still hold the same worker (a re-registration under a new key).
      const left = this.keysOfWorker.get(workerId)! - 1;
      if (left > 0) this.keysOfWorker.set(workerId, left);
      else {
        this.keysOfWorker.delete(workerId);
        this.forget(workerId, key);
      }
      return;
    }
    if (this.channels.delete(key)) {
      for (const o of this.observers) o.channelRemoved(key);
    }
  }

  private putInstance(key: string, value: Uint8Array): void {
    let inst;
    try {
      inst = parseEndpointInstance(value);
    } catch (err) {
      this.countMalformed("instance", key, err);
      return;
    }
    if (!servesEndpoint(this.opts.endpoint, inst)) return;
    const previous = this.workerOfKey.get(key);
    if (previous === inst.instanceId) return;
    if (previous !== undefined) this.deleteKey(key);
    // Registered first: a worker the router refuses is not held.
    this.router!.registerWorker(inst.instanceId, this.ranksOf(inst.instanceId), this.opts.leaseMs, undefined, undefined, this.capacityOf(inst.instanceId));
    this.workerOfKey.set(key, inst.instanceId);
    this.keysOfWorker.set(inst.instanceId, (this.keysOfWorker.get(inst.instanceId) ?? 0) + 1);
    log.info("worker discovered", { backend: this.store.backend, key, worker_id: inst.instanceId });
  }

  /** Base cards only: a LoRA adapter's card has a suffix after the instance id. */
  private putCard(key: string, value: Uint8Array): void {
    if (key.slice(modelCardsPrefix(this.opts.endpoint).length).includes("/")) return;
    let card;
    try {
      card = parseModelCardRanks(value);
    } catch (err) {
      this.countMalformed("card", key, err);
      return;
    }
    const previous = this.cardRanks.get(key);
    if (previous && this.cardOfWorker.get(previous.instanceId) === key) this.cardOfWorker.delete(previous.instanceId);
    this.cardRanks.set(key, card);
    this.cardOfWorker.set(card.instanceId, key);
    if (card.eagle !== (this.router!.config.eagle ?? false)) {
      this.eagleMismatches++;
      this.loggedKeys.log(
        "eagle",
        card.eagle
          ? "a worker's model card says enable_eagle but kv-router runs without --eagle: its blocks will not match requests (restart with --eagle)"
          : "kv-router runs with --eagle but a worker's model card does not enable Eagle: its blocks will not match requests",
        { key, worker_id: card.instanceId },
      );
    }
    if (this.keysOfWorker.has(card.instanceId)) {
      this.router!.registerWorker(card.instanceId, card.dpRanks, this.opts.leaseMs, undefined, undefined, card.capacity);
    }
  }

  /** The engine sizes a worker's model card reports (undefined before its card is seen). */
  private capacityOf(workerId: bigint): { maxNumBatchedTokens: number; totalKvBlocks: number; maxNumSeqs: number } | undefined {
    const key = this.cardOfWorker.get(workerId);
    return key === undefined ? undefined : this.cardRanks.get(key)!.capacity;
  }

  private ranksOf(workerId: bigint): number[] {
    const key = this.cardOfWorker.get(workerId);
    if (key !== undefined) return this.cardRanks.get(key)!.dpRanks;
    return [0];
  }

  private putChannel(key: string, value: Uint8Array): void {
    let channel: EventChannel;
    try {
      channel = parseEventChannel(value);
    } catch (err) {
      this.countMalformed("channel", key, err);
      return;
    }
    if ((channel.topic !== KV_EVENTS_TOPIC && channel.topic !== FPM_TOPIC) || !servesEndpoint(this.opts.endpoint, channel)) return;
    const known = this.channels.get(key);
    if (known && JSON.stringify(known, bigintSafe) === JSON.stringify(channel, bigintSafe)) return;
    if (known) for (const o of this.observers) o.channelRemoved(key);
    this.channels.set(key, channel);
    for (const o of this.observers) o.channelAdded(key, channel);
  }

  /** A value the store skipped unread (e.g. over its size bound): malformed, of its key's kind. */
  skip(key: string, reason: string): void {
    const kind = key.startsWith(EVENT_CHANNELS_PREFIX) ? "channel" : key.startsWith(modelCardsPrefix(this.opts.endpoint)) ? "card" : "instance";
    this.countMalformed(kind, key, reason);
  }

  private countMalformed(kind: keyof DynamoDiscovery["malformed"], key: string, err: unknown): void {
    this.malformed[kind]++;
    this.loggedKeys.log(`malformed:${key}`, "malformed Dynamo discovery value skipped (logged once per key)", { key, error: String(err) });
  }

  private refuse(key: string, err: unknown): void {
    this.refused++;
    const error = err instanceof RouterError ? err.message : String((err as Error)?.stack ?? err);
    this.loggedKeys.log(`refused:${key}`, "Dynamo discovery record refused and skipped (logged once per key)", { key, error });
  }

  private forget(workerId: bigint, key: string): void {
    try {
      const dropped = this.router!.deregisterWorker(workerId);
      log.info("worker removed (discovery key gone)", { backend: this.store.backend, key, worker_id: workerId, dropped_blocks: dropped });
    } catch (err) {
      if (!(err instanceof RouterError)) throw err;
    }
  }

  /** Keeps every held worker's router lease fresh, whether or not the store is reachable right now. */
  private renewLeases(): void {
    for (const workerId of this.workers) {
      try {
        this.router!.keepAlive(workerId);
      } catch (err) {
        if (!(err instanceof RouterError)) throw err;
        try {
          this.router!.registerWorker(workerId, this.ranksOf(workerId), this.opts.leaseMs); // its lease ran out meanwhile (a stalled loop)
        } catch (again) {
          this.refuse(`worker ${workerId}`, again);
        }
      }
    }
  }

  private registerMetrics(registry: Registry): void {
    const backend = this.store.backend;
    const health = this.store.health;
    new Gauge({
      name: "kvrouter_discovery_up",
      help: "1 while the discovery store (etcd, file) is reachable; 0 while the router serves with what it last knew",
      labelNames: ["backend"],
      registers: [registry],
      collect() {
        this.set({ backend }, health.up ? 1 : 0);
      },
    });
    const discovery = this;
    new Gauge({
      name: "kvrouter_discovery_workers",
      help: "Workers held because their discovery record exists",
      labelNames: ["backend"],
      registers: [registry],
      collect() {
        this.set({ backend }, discovery.workers.length);
      },
    });
    mirroredTotal(registry, "kvrouter_discovery_reconnects_total", "Times the discovery store's connection or watch was re-established", () => health.reconnects);
    mirroredCounter(registry, "kvrouter_discovery_malformed_total", "Discovery values that were not valid records (e.g. not JSON, or a file over the file store's size bound), skipped, by kind", "kind", {
      instance: () => discovery.malformed.instance,
      card: () => discovery.malformed.card,
      channel: () => discovery.malformed.channel,
    });
    const ops = this.store.ops;
    if (ops) {
      const read = Object.fromEntries(Object.keys(ops).map((op) => [op, () => ops[op]]));
      mirroredCounter(registry, "kvrouter_discovery_file_ops_total", "File store work: scans, directory listings, record files stat'ed and read", "op", read);
    }
    mirroredTotal(
      registry,
      "kvrouter_discovery_refused_total",
      "Valid discovery records the router refused (e.g. a worker past --max-worker-ranks or --max-dp-ranks), skipped",
      () => discovery.refused,
    );
  }
}

const bigintSafe = (_k: string, v: unknown) => (typeof v === "bigint" ? v.toString() : v);
