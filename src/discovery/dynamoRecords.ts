// What Dynamo writes into its discovery store (etcd or the file KV), read
// exactly as Dynamo's lib/runtime/src/discovery/{mod,kv_store}.rs write it
// (docs/dynamo.md, "Discovery", cites each fact):
// - endpoint instances: key `v1/instances/{ns}/{component}/{endpoint}/{instance_id:x}`,
//   value `{"type":"Endpoint","namespace","component","endpoint","instance_id","transport",...}`;
// - event publishers: key `v1/event_channels/namespace/{ns}/component/{c}[/endpoint/{ep}]/topic/{topic}/{id:x}`,
//   value `{"type":"EventChannel","scope":{"kind":"component",...},"topic","instance_id","transport":{"kind":"Zmq","config":{"endpoint"}}}`.
// Values are parsed losslessly: instance ids are u64 and exceed 2^53.
import { DecodeError, parseJsonLossless } from "../protocols/routerEventCodec.js";

export const INSTANCES_PREFIX = "v1/instances/";
export const MODEL_CARDS_PREFIX = "v1/mdc/";
export const EVENT_CHANNELS_PREFIX = "v1/event_channels/";
/** Dynamo's KV_EVENT_SUBJECT: the topic workers publish KV events on. */
export const KV_EVENTS_TOPIC = "kv-events";

export interface DynamoEndpoint {
  namespace: string;
  component: string;
  endpoint: string;
}

export interface EndpointInstance extends DynamoEndpoint {
  /** The worker's connection id (its etcd lease id): the worker_id its KV events carry. */
  instanceId: bigint;
}

export type EventTransport =
  | { kind: "zmq"; endpoint: string }
  | { kind: "nats"; subjectPrefix: string }
  | { kind: "zmq_broker"; xpubEndpoints: string[] }
  | { kind: "unknown"; name: string };

export interface EventChannel {
  namespace: string;
  component: string;
  /** Set for endpoint-scoped channels; component-scoped ones cover every endpoint. */
  endpoint?: string;
  topic: string;
  publisherId: bigint;
  transport: EventTransport;
}

type Json = Record<string, unknown>;

function parseObject(bytes: Uint8Array): Json {
  let v: unknown;
  try {
    v = parseJsonLossless(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw new DecodeError(`not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new DecodeError("expected a JSON object");
  return v as Json;
}

function str(o: Json, field: string): string {
  const v = o[field];
  if (typeof v !== "string" || v === "") throw new DecodeError(`${field}: expected a non-empty string`);
  return v;
}

function u64(o: Json, field: string): bigint {
  const v = o[field];
  if (typeof v !== "bigint" || v < 0n || v >= 1n << 64n) throw new DecodeError(`${field}: expected an unsigned 64-bit integer`);
  return v;
}

function expectType(o: Json, type: string): void {
  // Dynamo tags DiscoveryInstance with "type" (serde internally tagged).
  if (o.type !== undefined && o.type !== type) throw new DecodeError(`type: expected "${type}", got ${JSON.stringify(o.type)}`);
}

/** Parses a `v1/instances/...` value (serde of DiscoveryInstance::Endpoint(component::Instance)). */
export function parseEndpointInstance(bytes: Uint8Array): EndpointInstance {
  const o = parseObject(bytes);
  expectType(o, "Endpoint");
  return {
    namespace: str(o, "namespace"),
    component: str(o, "component"),
    endpoint: str(o, "endpoint"),
    instanceId: u64(o, "instance_id"),
  };
}

function parseTransport(v: unknown): EventTransport {
  if (typeof v !== "object" || v === null) throw new DecodeError("transport: expected an object");
  const t = v as Json;
  // serde(tag = "kind", content = "config") on EventTransport, variant names as written: Nats, Zmq, ZmqBroker.
  const kind = String(t.kind ?? "");
  const config = (typeof t.config === "object" && t.config !== null ? t.config : {}) as Json;
  switch (kind) {
    case "Zmq":
      return { kind: "zmq", endpoint: str(config, "endpoint") };
    case "Nats":
      return { kind: "nats", subjectPrefix: str(config, "subject_prefix") };
    case "ZmqBroker": {
      const xpub = config.xpub_endpoints;
      if (!Array.isArray(xpub) || xpub.some((e) => typeof e !== "string")) throw new DecodeError("transport.config.xpub_endpoints: expected strings");
      return { kind: "zmq_broker", xpubEndpoints: xpub as string[] };
    }
    default:
      return { kind: "unknown", name: kind };
  }
}

/**
 * Parses a `v1/event_channels/...` value. Current Dynamo nests the owner in
 * `scope` (`{"kind":"component","namespace","component"}` or
 * `{"kind":"endpoint","endpoint":{"namespace","component","name"}}`); earlier
 * releases wrote `namespace` and `component` beside `topic`. Both are read.
 */
export function parseEventChannel(bytes: Uint8Array): EventChannel {
  const o = parseObject(bytes);
  expectType(o, "EventChannel");
  let namespace: string, component: string, endpoint: string | undefined;
  const scope = o.scope;
  if (scope === undefined) {
    namespace = str(o, "namespace");
    component = str(o, "component");
  } else {
    if (typeof scope !== "object" || scope === null) throw new DecodeError("scope: expected an object");
    const s = scope as Json;
    if (s.kind === "component") {
      namespace = str(s, "namespace");
      component = str(s, "component");
    } else if (s.kind === "endpoint") {
      const e = s.endpoint;
      if (typeof e !== "object" || e === null) throw new DecodeError("scope.endpoint: expected an object");
      namespace = str(e as Json, "namespace");
      component = str(e as Json, "component");
      endpoint = str(e as Json, "name");
    } else if (s.kind === "namespace") {
      namespace = str(s, "name");
      component = "";
    } else throw new DecodeError(`scope.kind: unknown ${JSON.stringify(s.kind)}`);
  }
  return { namespace, component, endpoint, topic: str(o, "topic"), publisherId: u64(o, "instance_id"), transport: parseTransport(o.transport) };
}

/** Most data-parallel ranks taken from one model card (a bound on what a record can make us track). */
const MAX_CARD_DP_RANKS = 1024;

export interface ModelCardRanks {
  instanceId: bigint;
  /** The worker's data-parallel ranks: runtime_config.data_parallel_start_rank + [0, data_parallel_size). */
  dpRanks: number[];
  /** runtime_config.enable_eagle: the worker runs Eagle speculative decoding (Dynamo then hashes requests in Eagle windows). */
  eagle: boolean;
  /**
   * runtime_config.max_num_batched_tokens, total_kv_blocks and max_num_seqs (per dp rank), 0 where the card
   * has none: what RegisterWorker reports for workers that register themselves.
   */
  capacity: { maxNumBatchedTokens: number; totalKvBlocks: number; maxNumSeqs: number };
}

/**
 * Parses a `v1/mdc/...` value (DiscoveryInstance::Model) for what routing
 * needs: the worker's dp ranks from `card_json.runtime_config`
 * (ModelRuntimeConfig; defaults start 0, size 1).
 */
export function parseModelCardRanks(bytes: Uint8Array): ModelCardRanks {
  const o = parseObject(bytes);
  expectType(o, "Model");
  const instanceId = u64(o, "instance_id");
  const card = o.card_json;
  if (typeof card !== "object" || card === null) throw new DecodeError("card_json: expected an object");
  const rc = ((card as Json).runtime_config ?? {}) as Json;
  if (typeof rc !== "object" || rc === null) throw new DecodeError("card_json.runtime_config: expected an object");
  const int = (field: string, dflt: bigint) => {
    const v = rc[field] ?? dflt;
    if (typeof v !== "bigint" || v < 0n || v > 0xffffffffn) throw new DecodeError(`card_json.runtime_config.${field}: expected a u32`);
    return Number(v);
  };
  const start = int("data_parallel_start_rank", 0n);
  const size = int("data_parallel_size", 1n);
  if (size < 1 || size > MAX_CARD_DP_RANKS || start + size - 1 > 0xffffffff) {
    throw new DecodeError(`card_json.runtime_config: data_parallel_size ${size} from rank ${start} is out of range (1..${MAX_CARD_DP_RANKS})`);
  }
  // Optional sizes (Option<u64> in ModelRuntimeConfig): null or absent = not reported.
  const size64 = (field: string) => {
    const v = rc[field];
    if (v === undefined || v === null) return 0;
    if (typeof v !== "bigint" || v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DecodeError(`card_json.runtime_config.${field}: expected a u64 below 2^53`);
    return Number(v);
  };
  return {
    instanceId,
    dpRanks: Array.from({ length: size }, (_, i) => start + i),
    eagle: rc.enable_eagle === true,
    capacity: { maxNumBatchedTokens: size64("max_num_batched_tokens"), totalKvBlocks: size64("total_kv_blocks"), maxNumSeqs: size64("max_num_seqs") },
  };
}

/** The prefix of one endpoint's model cards; a base card's key ends with the instance id (no LoRA suffix). */
export function modelCardsPrefix(ep: DynamoEndpoint): string {
  return `${MODEL_CARDS_PREFIX}${ep.namespace}/${ep.component}/${ep.endpoint}/`;
}

/** Whether an instance or channel belongs to the endpoint this router serves. */
export function servesEndpoint(target: DynamoEndpoint, rec: { namespace: string; component: string; endpoint?: string }): boolean {
  return (
    rec.namespace === target.namespace &&
    rec.component === target.component &&
    (rec.endpoint === undefined || rec.endpoint === target.endpoint)
  );
}

/** `ns.component.endpoint` → its parts (the flag is validated at start-up). */
export function dynamoEndpoint(dotted: string): DynamoEndpoint {
  const [namespace, component, endpoint] = dotted.split(".");
  return { namespace, component, endpoint };
}

/** The prefix under which Dynamo keeps the instances of one endpoint. */
export function instancesPrefix(ep: DynamoEndpoint): string {
  return `${INSTANCES_PREFIX}${ep.namespace}/${ep.component}/${ep.endpoint}/`;
}
