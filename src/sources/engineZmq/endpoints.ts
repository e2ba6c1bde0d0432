// Where engines publish: parsed from --zmq-worker flags and --workers-file
// (YAML or JSON). One entry = one publisher (vLLM runs one per DP rank, on
// consecutive ports), so a worker with several DP ranks has several entries.
import { parse as parseYaml } from "yaml";
import { addressProblem } from "../../workers/addresses.js";
import type { EngineKind } from "../../decoding/engine/decode.js";

export interface ZmqEndpoint {
  workerId: bigint;
  /** The engine's PUB socket, e.g. tcp://10.0.0.5:5557 (the router connects). */
  endpoint: string;
  /** The engine's ROUTER replay socket, if it has one. */
  replay?: string;
  /** DP rank for batches that do not carry one (older engines). */
  dpRank: number;
  engine: EngineKind;
  /** Topic prefix to subscribe to; "" takes everything. */
  topic: string;
  /** The engine's Prometheus page (http://host:port/metrics), for the optional load term. */
  metrics?: string;
  /** Where this rank serves requests (ip:port), for gateways (EPP). */
  address?: string;
}

export class EndpointSpecError extends Error {}

const U64_MAX = (1n << 64n) - 1n;
const ADDRESS = /^(tcp:\/\/[^\s,]+:\d{1,5}|ipc:\/\/[^\s,]+)$/;

/** Identity of a subscription: one worker's view of one publisher. */
export function endpointKey(e: ZmqEndpoint): string {
  return `${e.workerId}@${e.endpoint}#${e.dpRank}/${e.engine}/${e.replay ?? ""}/${e.topic}/${e.metrics ?? ""}`;
}

/** Parses `WORKER_ID=tcp://host:port[,replay=tcp://host:port][,dp_rank=N][,engine=vllm|sglang][,topic=T][,metrics=http://host:port/metrics][,address=ip:port]`. */
export function parseZmqWorkerSpec(spec: string): ZmqEndpoint {
  const where = `--zmq-worker ${JSON.stringify(spec)}`;
  const eq = spec.indexOf("=");
  if (eq <= 0) throw new EndpointSpecError(`${where}: expected WORKER_ID=tcp://host:port[,replay=tcp://host:port]`);
  const [endpoint, ...options] = spec.slice(eq + 1).split(",");
  const fields: Record<string, unknown> = { worker_id: spec.slice(0, eq).trim(), endpoint: endpoint.trim() };
  for (const opt of options) {
    const i = opt.indexOf("=");
    if (i <= 0) throw new EndpointSpecError(`${where}: option ${JSON.stringify(opt)} is not key=value`);
    fields[opt.slice(0, i).trim()] = opt.slice(i + 1).trim();
  }
  return endpointFrom(fields, where);
}

/** Reads a workers file: `workers: [{worker_id, endpoint, replay?, dp_rank?, engine?, topic?}]` or a bare list. */
export function parseWorkersFile(text: string, file: string): ZmqEndpoint[] {
  let doc: unknown;
  try {
    doc = parseYaml(text, { intAsBigInt: true });
  } catch (err) {
    throw new EndpointSpecError(`${file}: not YAML/JSON: ${(err as Error).message.split("\n")[0]}`);
  }
  const list = Array.isArray(doc) ? doc : doc && typeof doc === "object" ? (doc as { workers?: unknown }).workers : undefined;
  if (doc == null) return [];
  if (!Array.isArray(list)) throw new EndpointSpecError(`${file}: expected a list of workers, or a map with a "workers" list`);
  return list.map((entry, i) => {
    if (!entry || typeof entry !== "object" || Array.isArray(entry)) {
      throw new EndpointSpecError(`${file}: workers[${i}] is not a map`);
    }
    return endpointFrom(entry as Record<string, unknown>, `${file}: workers[${i}]`);
  });
}

const KNOWN_FIELDS = new Set(["worker_id", "endpoint", "replay", "replay_endpoint", "dp_rank", "engine", "topic", "metrics", "address"]);

function endpointFrom(f: Record<string, unknown>, where: string): ZmqEndpoint {
  for (const k of Object.keys(f)) {
    if (!KNOWN_FIELDS.has(k)) throw new EndpointSpecError(`${where}: unknown field "${k}" (known: ${[...KNOWN_FIELDS].join(", ")})`);
  }
  const workerId = u64(f.worker_id, `${where}: worker_id`);
  const endpoint = address(f.endpoint, `${where}: endpoint`);
  if (endpoint === undefined) throw new EndpointSpecError(`${where}: endpoint is missing`);
  const replay = address(f.replay ?? f.replay_endpoint, `${where}: replay`);
  const dpRank = f.dp_rank === undefined ? 0 : Number(f.dp_rank);
  if (!Number.isInteger(dpRank) || dpRank < 0 || dpRank > 0xffff_ffff) {
    throw new EndpointSpecError(`${where}: dp_rank must be an integer >= 0, got ${String(f.dp_rank)}`);
  }
  const engine = f.engine === undefined ? "vllm" : String(f.engine);
  if (engine !== "vllm" && engine !== "sglang") throw new EndpointSpecError(`${where}: engine must be vllm or sglang, got ${engine}`);
  const topic = f.topic === undefined ? "" : String(f.topic);
  const metrics = f.metrics === undefined || f.metrics === "" ? undefined : String(f.metrics);
  if (metrics !== undefined && !/^https?:\/\/[^\s,]+$/.test(metrics)) {
    throw new EndpointSpecError(`${where}: metrics must look like http://host:port/metrics, got ${JSON.stringify(metrics)}`);
  }
  const served = f.address === undefined || f.address === "" ? undefined : String(f.address);
  const problem = served === undefined ? undefined : addressProblem(served);
  if (problem) throw new EndpointSpecError(`${where}: ${problem}`);
  return { workerId, endpoint, replay, dpRank, engine, topic, metrics, ...(served !== undefined ? { address: served } : {}) };
}

function u64(v: unknown, where: string): bigint {
  let n: bigint;
  try {
    n = typeof v === "bigint" ? v : typeof v === "number" && Number.isSafeInteger(v) ? BigInt(v) : BigInt(String(v ?? "").trim());
  } catch {
    throw new EndpointSpecError(`${where} must be an unsigned 64-bit integer, got ${JSON.stringify(String(v))}`);
  }
  if (typeof v === "string" && v.trim() === "") throw new EndpointSpecError(`${where} is missing`);
  if (v === undefined || n < 0n || n > U64_MAX) throw new EndpointSpecError(`${where} must be an unsigned 64-bit integer, got ${String(v)}`);
  return n;
}

function address(v: unknown, where: string): string | undefined {
  if (v === undefined || v === null || v === "") return undefined;
  const s = String(v);
  if (!ADDRESS.test(s)) throw new EndpointSpecError(`${where} must look like tcp://host:port or ipc://path, got ${JSON.stringify(s)}`);
  const port = s.startsWith("tcp://") ? Number(s.slice(s.lastIndexOf(":") + 1)) : 1;
  if (port < 1 || port > 65_535) throw new EndpointSpecError(`${where} has port ${port}; 1-65535 expected`);
  return s;
}

/**
 * The publishers of a worker that registered with a ZeroMQ endpoint: one per
 * dp rank, rank r on port + r (ipc: path + "_dp" + r), as vLLM and SGLang
 * place each rank's publisher.
 */
export function registeredEndpoints(workerId: bigint, dpRanks: number[], endpoint: string, replay?: string): ZmqEndpoint[] {
  const where = `worker ${workerId}`;
  address(endpoint, `${where}: zmq_endpoint`);
  address(replay, `${where}: zmq_replay_endpoint`);
  return dpRanks.map((dpRank) => ({
    workerId,
    endpoint: offsetForRank(endpoint, dpRank),
    replay: replay ? offsetForRank(replay, dpRank) : undefined,
    dpRank,
    engine: "vllm" as const,
    topic: "",
  }));
}

function offsetForRank(addr: string, dpRank: number): string {
  if (dpRank === 0) return addr;
  if (addr.startsWith("ipc://")) return `${addr}_dp${dpRank}`;
  const i = addr.lastIndexOf(":");
  const port = Number(addr.slice(i + 1)) + dpRank;
  if (port > 65_535) throw new EndpointSpecError(`${addr} has no port for dp rank ${dpRank}`);
  return `${addr.slice(0, i)}:${port}`;
}
