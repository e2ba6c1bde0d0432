// The flags of --discovery-backend kubernetes (and the per-pod ZeroMQ ports
// it subscribes to), their checks, and the discovery source they build.
import { existsSync } from "node:fs";
import type { Options } from "yargs";
import {
  DEFAULT_MAX_OBJECT_BYTES,
  DEFAULT_MAX_PODS,
  DEFAULT_TARGET_PORT,
  KubernetesDiscovery,
} from "../discovery/kubernetes/kubernetesDiscovery.js";

export const KUBERNETES_FLAGS = {
  kubeconfig: {
    type: "string",
    defaultDescription: "$KUBECONFIG, else the pod's service account, else ~/.kube/config",
    describe: "kubernetes discovery: the kubeconfig to reach the API server with",
  },
  "k8s-namespace": {
    type: "string",
    defaultDescription: "the kubeconfig context's or the service account's namespace, else default",
    describe: "kubernetes discovery: the namespace whose pods are watched",
  },
  "k8s-selector": {
    type: "string",
    describe: "kubernetes discovery: label selector of the worker pods, e.g. app=vllm-llama3 (or give --k8s-inference-pool)",
  },
  "k8s-inference-pool": {
    type: "string",
    describe: "kubernetes discovery: read the selector and target ports from this InferencePool (inference.networking.k8s.io/v1), once at start",
  },
  "k8s-target-port": {
    type: "number",
    array: true,
    defaultDescription: `the pool's targetPorts, else ${DEFAULT_TARGET_PORT}`,
    describe: "kubernetes discovery: the port(s) each pod serves requests on; the i-th is dp rank i (repeatable)",
  },
  "zmq-port": {
    type: "number",
    describe: "kubernetes discovery: subscribe to each ready pod's engine KV events at tcp://POD_IP:PORT (vLLM --kv-events-config endpoint; rank r on PORT + r)",
  },
  "zmq-replay-port": {
    type: "number",
    describe: "kubernetes discovery: each pod's engine replay socket (vLLM replay_endpoint), asked for missed KV events",
  },
  "k8s-max-pods": {
    type: "number",
    default: DEFAULT_MAX_PODS,
    describe: "kubernetes discovery: most pods tracked; more are skipped and counted (kvrouter_discovery_kubernetes_skipped_total)",
  },
  "k8s-max-object-bytes": {
    type: "number",
    default: DEFAULT_MAX_OBJECT_BYTES,
    describe: "kubernetes discovery: largest pod object or watch event read (default: etcd's 1.5 MiB object limit); larger ones are skipped, counted, and the pods listed again",
  },
} as const satisfies Record<string, Options>;

export const KUBERNETES_FLAG_NAMES = Object.keys(KUBERNETES_FLAGS);

interface KubernetesArgs {
  discoveryBackend?: string;
  kvEvents?: boolean;
  kubeconfig?: string;
  k8sNamespace?: string;
  k8sSelector?: string;
  k8sInferencePool?: string;
  k8sTargetPort?: number[];
  zmqPort?: number;
  zmqReplayPort?: number;
  k8sMaxPods?: number;
  k8sMaxObjectBytes?: number;
}

/** Problems with the flags above, each naming its flag. */
export function kubernetesFlagProblems(argv: KubernetesArgs): string[] {
  const problems: string[] = [];
  const port = (name: string, v: number | undefined) => {
    if (v !== undefined && (!Number.isInteger(v) || v < 1 || v > 65_535)) problems.push(`--${name} must be a port number in [1, 65535], got ${v}`);
  };
  const kubernetes = argv.discoveryBackend === "kubernetes";
  if (kubernetes) {
    if (argv.k8sSelector === undefined && argv.k8sInferencePool === undefined) {
      problems.push("--discovery-backend kubernetes (DYN_DISCOVERY_BACKEND) needs --k8s-selector or --k8s-inference-pool: which pods are the workers");
    }
    if (argv.k8sSelector !== undefined && argv.k8sInferencePool !== undefined) problems.push("give --k8s-selector or --k8s-inference-pool, not both");
    if (argv.k8sSelector !== undefined && argv.k8sSelector.trim() === "") problems.push("--k8s-selector is empty: it would select every pod of the namespace");
  } else {
    for (const flag of ["k8s-selector", "k8s-inference-pool", "k8s-target-port", "zmq-port", "zmq-replay-port"] as const) {
      const key = flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase()) as keyof KubernetesArgs;
      if (argv[key] !== undefined) problems.push(`--${flag} is read by --discovery-backend kubernetes only`);
    }
  }
  for (const p of argv.k8sTargetPort ?? []) port("k8s-target-port", p);
  if ((argv.k8sTargetPort?.length ?? 0) > 8) problems.push(`--k8s-target-port: at most 8 ports (an InferencePool's limit), got ${argv.k8sTargetPort!.length}`);
  port("zmq-port", argv.zmqPort);
  port("zmq-replay-port", argv.zmqReplayPort);
  if (argv.zmqReplayPort !== undefined && argv.zmqPort === undefined) problems.push("--zmq-replay-port needs --zmq-port");
  if (argv.zmqPort !== undefined && argv.kvEvents === false) problems.push("--zmq-port feeds KV events; it cannot be used with --no-kv-events");
  if (argv.kubeconfig !== undefined && !existsSync(argv.kubeconfig)) problems.push(`--kubeconfig: no such file ${argv.kubeconfig}`);
  const max = argv.k8sMaxPods;
  if (max !== undefined && (!Number.isInteger(max) || max < 1 || max > 1_000_000)) problems.push(`--k8s-max-pods must be an integer in [1, 1000000], got ${max}`);
  const bytes = argv.k8sMaxObjectBytes;
  if (bytes !== undefined && (!Number.isInteger(bytes) || bytes < 4096 || bytes > 64 * 1024 * 1024)) {
    problems.push(`--k8s-max-object-bytes must be an integer in [4096, 67108864], got ${bytes}`);
  }
  return problems;
}

/** The discovery source the flags ask for. */
export function kubernetesDiscoveryFrom(argv: KubernetesArgs, leaseMs: number): KubernetesDiscovery {
  return new KubernetesDiscovery({
    client: { kubeconfig: argv.kubeconfig },
    namespace: argv.k8sNamespace,
    labelSelector: argv.k8sSelector,
    inferencePool: argv.k8sInferencePool,
    targetPorts: argv.k8sTargetPort,
    zmqPort: argv.kvEvents === false ? undefined : argv.zmqPort,
    zmqReplayPort: argv.kvEvents === false ? undefined : argv.zmqReplayPort,
    leaseMs,
    maxPods: argv.k8sMaxPods,
    maxObjectBytes: argv.k8sMaxObjectBytes,
  });
}
