// Reads an InferencePool (GAIE's inference.networking.k8s.io/v1, the CRD in
// config/crd/bases/inference.networking.k8s.io_inferencepools.yaml) for the
// two fields that say which pods are its endpoints: spec.selector.matchLabels
// (equality only, 1 to 64 labels) and spec.targetPorts[].number (1 to 8 ports).
// It is read once at start: a pool whose selector changes needs a restart.
import type { KubeClient } from "./kubeClient.js";

export const INFERENCE_POOL_API = "/apis/inference.networking.k8s.io/v1";

export interface PoolSelection {
  /** The pool's matchLabels as a label selector (k=v,k2=v2). */
  labelSelector: string;
  targetPorts: number[];
}

export class InferencePoolError extends Error {}

/** The selection an InferencePool object makes; throws InferencePoolError naming the bad field. */
export function poolSelection(o: unknown, name: string): PoolSelection {
  const where = `InferencePool ${name}`;
  const spec = (o as { spec?: unknown } | undefined)?.spec as Record<string, unknown> | undefined;
  const labels = (spec?.selector as { matchLabels?: unknown } | undefined)?.matchLabels;
  if (typeof labels !== "object" || labels === null || Array.isArray(labels) || Object.keys(labels).length === 0) {
    throw new InferencePoolError(`${where}: spec.selector.matchLabels is missing or empty`);
  }
  const pairs = Object.entries(labels as Record<string, unknown>).map(([k, v]) => {
    if (typeof v !== "string") throw new InferencePoolError(`${where}: spec.selector.matchLabels.${k} is not a string`);
    return `${k}=${v}`;
  });
  const ports = spec?.targetPorts;
  if (!Array.isArray(ports) || ports.length === 0) throw new InferencePoolError(`${where}: spec.targetPorts is missing or empty`);
  const targetPorts = ports.map((p, i) => {
    const n = (p as { number?: unknown } | null)?.number;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > 65_535) {
      throw new InferencePoolError(`${where}: spec.targetPorts[${i}].number must be a port number`);
    }
    return n;
  });
  return { labelSelector: pairs.join(","), targetPorts };
}

/** GETs the pool; a missing pool or CRD is an error naming it. */
export async function readInferencePool(client: KubeClient, namespace: string, name: string, signal: AbortSignal): Promise<PoolSelection> {
  const path = `${INFERENCE_POOL_API}/namespaces/${encodeURIComponent(namespace)}/inferencepools/${encodeURIComponent(name)}`;
  const res = await client.get(path, signal);
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 1024 * 1024) {
      res.destroy();
      throw new InferencePoolError(`InferencePool ${namespace}/${name}: the object is over 1 MiB`);
    }
    parts.push(chunk);
  }
  if (res.statusCode !== 200) {
    throw new InferencePoolError(`cannot read InferencePool ${namespace}/${name} (${path}): HTTP ${res.statusCode}`);
  }
  let o: unknown;
  try {
    o = JSON.parse(Buffer.concat(parts).toString("utf8"));
  } catch {
    throw new InferencePoolError(`InferencePool ${namespace}/${name}: the answer is not JSON`);
  }
  return poolSelection(o, `${namespace}/${name}`);
}
