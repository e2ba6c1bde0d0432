// Test support: Dynamo's discovery records and its ZMQ event-plane publisher,
// written as Dynamo writes them (a Dynamo worker cannot run here). The key
// layouts and JSON follow lib/runtime/src/discovery/{mod,kv_store}.rs and
// lib/runtime/src/component.rs (serde field order: the "type" tag first, then
// the struct's fields as declared); docs/dynamo.md cites each.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { linkSync, mkdirSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { dynamoDiscoverySources } from "../../src/cli/discoveryFlags.js";
import { fileNameOfKey } from "../../src/discovery/fileStore.js";
import { stringifyJson } from "../../src/protocols/routerEventCodec.js";

/** Writes a key as Dynamo's FileStore does (a temp file, then a hard link): the file's path. */
export function dynamoInsert(root: string, bucket: string, relativeKey: string, value: string): string {
  const dir = join(root, bucket);
  mkdirSync(dir, { recursive: true });
  const temp = join(dir, `.tmp_${Math.floor(Math.random() * 2 ** 52).toString(16).padStart(16, "0")}`);
  writeFileSync(temp, value);
  const path = join(dir, fileNameOfKey(relativeKey));
  linkSync(temp, path);
  unlinkSync(temp);
  return path;
}

/** The event sources of `--discovery-backend file` over `root` for Dynamo's default endpoint, with its ZMQ event plane followed. */
export function fileDiscoveryWithZmqPlane(root: string) {
  return dynamoDiscoverySources({
    backend: "file",
    endpoint: `${NS}.${COMPONENT}.${ENDPOINT}`,
    etcdEndpoints: [],
    fileKvRoot: root,
    fileKvTtlMs: 60_000,
    workerLeaseMs: 10_000,
    zmqEventPlane: true,
  });
}

export const NS = "dynamo";
export const COMPONENT = "backend";
export const ENDPOINT = "generate";

/** `v1/instances/{ns}/{component}/{endpoint}/{instance_id:x}` */
export function instanceKey(instanceId: bigint, ep = ENDPOINT): string {
  return `v1/instances/${NS}/${COMPONENT}/${ep}/${instanceId.toString(16)}`;
}

/** serde_json of DiscoveryInstance::Endpoint(Instance { component, endpoint, namespace, instance_id, transport }). */
export function instanceValue(instanceId: bigint, ep = ENDPOINT): string {
  return (
    `{"type":"Endpoint","component":"${COMPONENT}","endpoint":"${ep}","namespace":"${NS}",` +
    `"instance_id":${instanceId},"transport":{"tcp":"127.0.0.1:45123/${NS}_${COMPONENT}/${ep}-${instanceId.toString(16)}"}}`
  );
}

/** `v1/mdc/{ns}/{component}/{endpoint}/{instance_id:x}` (a base model's card; LoRA cards add `/{suffix}`). */
export function cardKey(instanceId: bigint): string {
  return `v1/mdc/${NS}/${COMPONENT}/${ENDPOINT}/${instanceId.toString(16)}`;
}

/**
 * serde_json of DiscoveryInstance::Model { namespace, component, endpoint, instance_id, card_json }, the
 * card trimmed to a few ModelDeploymentCard fields and its runtime_config (lib/llm/src/local_model/runtime_config.rs).
 */
export function cardValue(instanceId: bigint, dp: { start: number; size: number }, eagle = false): string {
  return (
    `{"type":"Model","namespace":"${NS}","component":"${COMPONENT}","endpoint":"${ENDPOINT}","instance_id":${instanceId},` +
    `"card_json":{"display_name":"Qwen/Qwen3-0.6B","slug":"qwen_qwen3-0.6b","kv_cache_block_size":4,` +
    `"runtime_config":{"total_kv_blocks":1024,"max_num_seqs":256,"max_num_batched_tokens":8192,` +
    `"data_parallel_start_rank":${dp.start},"data_parallel_size":${dp.size},"enable_local_indexer":true,"enable_eagle":${eagle}}}}`
  );
}

/** `v1/event_channels/namespace/{ns}/component/{c}/topic/kv-events/{publisher_id:x}` */
export function channelKey(publisherId: bigint): string {
  return `v1/event_channels/namespace/${NS}/component/${COMPONENT}/topic/kv-events/${publisherId.toString(16)}`;
}

/**
 * An endpoint-scoped publisher's key and value, as current workers announce their forward-pass metrics
 * (EventPublisher::for_endpoint on the generate endpoint): `v1/event_channels/namespace/{ns}/component/{c}/endpoint/{ep}/topic/{topic}/{id:x}`,
 * scope `{"kind":"endpoint","endpoint":{"namespace","component","name"}}` (EndpointId's fields).
 */
export function endpointChannel(publisherId: bigint, topic: string, zmqEndpoint: string): { key: string; value: string } {
  return {
    key: `v1/event_channels/namespace/${NS}/component/${COMPONENT}/endpoint/${ENDPOINT}/topic/${topic}/${publisherId.toString(16)}`,
    value:
      `{"type":"EventChannel","scope":{"kind":"endpoint","endpoint":{"namespace":"${NS}","component":"${COMPONENT}","name":"${ENDPOINT}"}},` +
      `"topic":"${topic}","instance_id":${publisherId},"transport":{"kind":"Zmq","config":{"endpoint":"${zmqEndpoint}"}}}`,
  };
}

/** serde_json of DiscoveryInstance::EventChannel { scope, topic, instance_id, transport } (direct ZMQ). */
export function channelValue(publisherId: bigint, zmqEndpoint: string): string {
  return (
    `{"type":"EventChannel","scope":{"kind":"component","namespace":"${NS}","component":"${COMPONENT}"},` +
    `"topic":"kv-events","instance_id":${publisherId},"transport":{"kind":"Zmq","config":{"endpoint":"${zmqEndpoint}"}}}`
  );
}

/** A RouterEvent (named fields) storing `blocks` on `workerId`, as JSON with exact u64s. */
export function routerStoredEvent(workerId: bigint, eventId: number, blocks: { hash: bigint; local: bigint }[], parent?: bigint) {
  return {
    worker_id: workerId,
    event: {
      event_id: BigInt(eventId),
      data: { stored: { parent_hash: parent ?? null, blocks: blocks.map((b) => ({ block_hash: b.hash, tokens_hash: b.local })) } },
      dp_rank: 0n,
    },
  };
}

const ENVELOPE_SCRIPT = fileURLToPath(new URL("../python/dynamo_event_plane.py", import.meta.url));

/**
 * The envelope bytes a Dynamo worker publishes on the core-NATS event plane for
 * these RouterEvents (u64 as decimal strings), from test/python/dynamo_event_plane.py.
 */
export function dynamoEnvelope(events: unknown[], sequence = 0): Uint8Array {
  const r = spawnSync("/usr/bin/python3", [ENVELOPE_SCRIPT], {
    input: JSON.stringify({ publisher_id: "4503599627370495", sequence, events }),
    encoding: "utf8",
  });
  assert.equal(r.status, 0, `python publisher failed: ${r.stderr}`);
  return Buffer.from(r.stdout, "hex");
}

const FPM_SCRIPT = fileURLToPath(new URL("../python/dynamo_fpm.py", import.meta.url));

/** What a worker's forward-pass metrics say (test/python/dynamo_fpm.py fills in the rest of Dynamo's fields). */
export interface FpmSpec {
  worker_id: string;
  dp_rank?: number;
  counter_id?: number;
  wall_time?: number;
  version?: number;
  scheduled?: Record<string, number>;
  queued?: Record<string, number>;
}

/** The envelope bytes a Dynamo worker publishes on the core-NATS event plane for these forward-pass metrics. */
export function dynamoFpmEnvelope(fpm: FpmSpec, sequence = 0): Uint8Array {
  const r = spawnSync("/usr/bin/python3", [FPM_SCRIPT], { input: JSON.stringify({ publisher_id: 4503599627370495, sequence, fpm }), encoding: "utf8" });
  assert.equal(r.status, 0, `python FPM publisher failed: ${r.stderr}`);
  return Buffer.from(r.stdout, "hex");
}

const SCRIPT = fileURLToPath(new URL("../python/dynamo_zmq_publisher.py", import.meta.url));

/** test/python/dynamo_zmq_publisher.py (Debian's python3-zmq and python3-msgpack) driven over stdin/stdout. */
export class DynamoZmqPublisher {
  endpoint = "";
  private readonly lines: string[] = [];
  private waiter: ((l: string) => void) | undefined;

  private constructor(private readonly proc: ChildProcess) {
    createInterface({ input: proc.stdout! }).on("line", (l) => {
      const w = this.waiter;
      this.waiter = undefined;
      if (w) w(l);
      else this.lines.push(l);
    });
    proc.stderr!.on("data", (d) => process.stderr.write(`[dynamo publisher] ${d}`));
  }

  /** `topic`: kv-events, or forward-pass-metrics for an engine's FPM publisher. */
  static async start(publisherId: bigint, topic = "kv-events"): Promise<DynamoZmqPublisher> {
    const p = new DynamoZmqPublisher(spawn("/usr/bin/python3", [SCRIPT, String(publisherId), topic], { stdio: ["pipe", "pipe", "pipe"] }));
    p.endpoint = JSON.parse(await p.next()).endpoint;
    return p;
  }

  private next(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  async publish(routerEvent: unknown): Promise<void> {
    this.proc.stdin!.write(stringifyJson({ publish: routerEvent }) + "\n");
    await this.next();
  }

  /** Publishes forward-pass metrics (the publisher started with topic forward-pass-metrics). */
  async publishFpm(fpm: FpmSpec): Promise<void> {
    this.proc.stdin!.write(JSON.stringify({ publish_fpm: fpm }) + "\n");
    await this.next();
  }

  /** Sends a frame that is not Dynamo's (e.g. a probe that the subscriber counts as malformed). */
  async publishRawFrame(hex: string): Promise<void> {
    this.proc.stdin!.write(JSON.stringify({ raw_frame: hex }) + "\n");
    await this.next();
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.stdin!.end(JSON.stringify({ quit: true }) + "\n");
    await exited;
  }
}
