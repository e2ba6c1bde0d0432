// A Pod object (core/v1, as the API server sends it in lists and watch
// events) → the worker it stands for, the way GAIE's endpoint picker reads an
// InferencePool's pods (pkg/lwepp: util/pod/pod.go IsPodReady,
// datastore/datastore.go podUpdateOrAddIfNotExist; docs/gateway.md cites them):
// - a pod serves only while it is Ready: not being deleted (no
//   metadata.deletionTimestamp) and its status.conditions hold
//   {type: "Ready", status: "True"}; and it needs a status.podIP;
// - each of the pool's targetPorts is an endpoint podIP:port, unless the pod's
//   `inference.networking.k8s.io/active-ports` annotation (comma-separated
//   port numbers) names a subset.
// Here target port i is data-parallel rank i of the pod's worker (vLLM serves
// rank r on port + r), and the worker id is Dynamo's id for the pod's name.
import { podInstanceId } from "./podInstanceId.js";

/** GAIE's annotation naming the pool ports a pod serves on (datastore.go activePortsAnnotation). */
export const ACTIVE_PORTS_ANNOTATION = "inference.networking.k8s.io/active-ports";

/** What the router keeps of one pod: a few strings and numbers, never the object. */
export interface PodWorker {
  /** namespace/name: the pod's key in the watch. */
  key: string;
  name: string;
  uid: string;
  workerId: bigint;
  /** Ready with an IP: registered as a worker. */
  serving: boolean;
  ip: string;
  /** The pool's target ports this pod serves on, each with its dp rank (its index in the pool's list). */
  ranks: { dpRank: number; port: number }[];
}

type Json = Record<string, unknown>;

function obj(v: unknown): Json | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
}

/** metadata.resourceVersion of any object (list items, events, bookmarks), or undefined. */
export function resourceVersionOf(o: unknown): string | undefined {
  const rv = obj(obj(o)?.metadata)?.resourceVersion;
  return typeof rv === "string" && rv !== "" ? rv : undefined;
}

/** namespace/name of a pod object, or undefined when it has no name (not a pod we can track). */
export function podKeyOf(o: unknown): string | undefined {
  const md = obj(obj(o)?.metadata);
  const name = md?.name;
  if (typeof name !== "string" || name === "") return undefined;
  const ns = typeof md!.namespace === "string" ? md!.namespace : "";
  return `${ns}/${name}`;
}

/** GAIE's IsPodReady: not terminating, and the Ready condition is True. */
export function isPodReady(pod: Json): boolean {
  if (obj(pod.metadata)?.deletionTimestamp) return false;
  const conditions = obj(pod.status)?.conditions;
  if (!Array.isArray(conditions)) return false;
  for (const c of conditions) {
    const cond = obj(c);
    if (cond?.type === "Ready") return cond.status === "True";
  }
  return false;
}

/** The target ports the pod serves on: all of them, or those its active-ports annotation names. */
export function activePorts(pod: Json, targetPorts: readonly number[]): Set<number> {
  const annotation = obj(obj(pod.metadata)?.annotations)?.[ACTIVE_PORTS_ANNOTATION];
  if (typeof annotation !== "string") return new Set(targetPorts);
  const named = new Set(annotation.split(",").map((s) => Number.parseInt(s.trim(), 10)));
  return new Set(targetPorts.filter((p) => named.has(p)));
}

/** Reads a pod object; throws (a counted skip upstream) when it has no name or uid. */
export function podWorkerOf(o: unknown, targetPorts: readonly number[]): PodWorker {
  const pod = obj(o);
  const md = obj(pod?.metadata);
  const key = podKeyOf(o);
  if (!pod || !md || key === undefined) throw new Error("pod object without metadata.name");
  const uid = typeof md.uid === "string" ? md.uid : "";
  const ip = obj(pod.status)?.podIP;
  const active = activePorts(pod, targetPorts);
  const ranks = targetPorts.map((port, dpRank) => ({ dpRank, port })).filter((r) => active.has(r.port));
  const hasIp = typeof ip === "string" && ip !== "";
  return {
    key,
    name: md.name as string,
    uid,
    workerId: podInstanceId(md.name as string),
    serving: hasIp && ranks.length > 0 && isPodReady(pod),
    ip: hasIp ? ip : "",
    ranks,
  };
}

/** ip:port, with IPv6 addresses in brackets. */
export function hostPort(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Same registration (address, ranks, uid): a MODIFIED event that changes nothing the router holds. */
export function sameRegistration(a: PodWorker, b: PodWorker): boolean {
  return (
    a.serving === b.serving &&
    a.ip === b.ip &&
    a.uid === b.uid &&
    a.workerId === b.workerId &&
    a.ranks.length === b.ranks.length &&
    a.ranks.every((r, i) => r.dpRank === b.ranks[i].dpRank && r.port === b.ranks[i].port)
  );
}
