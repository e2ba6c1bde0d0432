// --discovery-backend kubernetes. No Kubernetes API server runs here, so the
// router is pointed (through a kubeconfig, as kubectl would be) at
// test/support/kubeApi.ts, an HTTP server that answers pod list and watch
// requests with exactly the JSON the Kubernetes API reference publishes
// (PodList pages, WatchEvent lines, BOOKMARK, ERROR Status 410, HTTP 410).
// The engine feed is a real ZeroMQ publisher in vLLM's format
// (test/python/vllm_publisher.py) bound on the pod's IP (127.0.0.x).
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { KubernetesDiscovery } from "../src/discovery/kubernetes/kubernetesDiscovery.js";
import { LineReader } from "../src/discovery/kubernetes/listWatch.js";
import { podInstanceId } from "../src/discovery/kubernetes/podInstanceId.js";
import { podWorkerOf } from "../src/discovery/kubernetes/pods.js";
import { FakeKubeApi } from "./support/kubeApi.js";
import { spawnCli, spawnRouter } from "./support/cliProcess.js";
import { stored } from "./support/events.js";
import { startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";
import { Publisher, storedSpec } from "./zmq.support.js";

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const APP = { app: "vllm-llama" };
const ID = (name: string) => podInstanceId(name);

async function workers(client: KvRouterClient) {
  const list = (await client.listWorkers()).workers;
  return new Map(list.map((w) => [w.worker!.workerId, { address: w.address, blocks: Number(w.cachedBlocks) }]));
}

describe("pod ids and readiness", () => {
  test("a pod's worker id is Dynamo's hash_pod_name (Rust DefaultHasher, SipHash-1-3 with zero keys, over the name and 0xFF)", () => {
    // Printed by rustc 1.95 from `let mut h = DefaultHasher::new(); name.hash(&mut h); h.finish()`.
    assert.equal(podInstanceId("vllm-0"), 5739529728867618395n);
    assert.equal(podInstanceId("vllm-deployment-5d7f9c8b6-abcde"), 6402868809311294930n);
    assert.equal(podInstanceId(""), 3476900567878811119n);
    assert.equal(podInstanceId("a-pod-name-that-is-longer-than-sixteen-bytes-x"), 4845495442370070535n);
  });

  test("only a Ready pod with an IP, not terminating, serves; active-ports picks the ranks", () => {
    const pod = (status: object, metadata: object = {}) => ({ metadata: { name: "p", uid: "u", ...metadata }, status });
    const ready = { podIP: "10.0.0.7", conditions: [{ type: "Ready", status: "True" }] };
    assert.equal(podWorkerOf(pod(ready), [8000]).serving, true);
    assert.equal(podWorkerOf(pod({ ...ready, podIP: undefined }), [8000]).serving, false);
    assert.equal(podWorkerOf(pod({ ...ready, conditions: [{ type: "Ready", status: "False" }] }), [8000]).serving, false);
    assert.equal(podWorkerOf(pod({ podIP: "10.0.0.7" }), [8000]).serving, false);
    assert.equal(podWorkerOf(pod(ready, { deletionTimestamp: "2026-12-04T10:00:00Z" }), [8000]).serving, false);
    const two = podWorkerOf(pod(ready, { annotations: { "inference.networking.k8s.io/active-ports": "8001, 9999" } }), [8000, 8001]);
    assert.deepEqual(two.ranks, [{ dpRank: 1, port: 8001 }]);
    assert.throws(() => podWorkerOf({ metadata: {} }, [8000]), /without metadata.name/);
  });

  test("watch lines longer than the bound are reported, never buffered", () => {
    const r = new LineReader(10);
    assert.deepEqual(r.push(Buffer.from('{"a":1}\n{"b":')).map(String), ['{"a":1}']);
    assert.deepEqual(r.push(Buffer.from('"0123456789"}\n{}\n')), ["oversized", Buffer.from("{}")]);
  });
});

describe("the kv-router CLI with --discovery-backend kubernetes", () => {
  test("routes to two pods announced through the watch, follows one pod's ZeroMQ events, drops a deleted pod", async () => {
    const api = await FakeKubeApi.start();
    cleanups.push(() => api.close());
    const pub = await Publisher.start("vllm-map", { host: "127.0.0.2" });
    cleanups.push(() => pub.stop());
    const zmqPort = pub.endpoint.slice(pub.endpoint.lastIndexOf(":") + 1);

    const proc = await spawnRouter(
      ["--block-size", "4", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--discovery-backend", "kubernetes", "--k8s-selector", "app=vllm-llama", "--zmq-port", zmqPort],
      { KUBECONFIG: api.kubeconfig() },
    );
    cleanups.push(async () => void (await proc.stop()));
    const client = new KvRouterClient(proc.grpcAddress);
    cleanups.push(() => client.close());
    assert.equal((await workers(client)).size, 0);

    api.put({ name: "vllm-a", labels: APP, ip: "127.0.0.2", ready: true });
    api.put({ name: "vllm-b", labels: APP, ip: "127.0.0.3", ready: false });
    api.put({ name: "other", labels: { app: "something-else" }, ip: "127.0.0.4", ready: true }); // not selected
    api.put({ name: "vllm-b", labels: APP, ip: "127.0.0.3", ready: true }); // MODIFIED: now Ready
    await waitFor(async () => (await workers(client)).size === 2, "both pods registered", 15_000);
    const seen = await workers(client);
    assert.deepEqual([...seen.keys()].sort(), [ID("vllm-a"), ID("vllm-b")].sort());
    assert.equal(seen.get(ID("vllm-a"))!.address, "127.0.0.2:8000");
    assert.equal(seen.get(ID("vllm-b"))!.address, "127.0.0.3:8000");
    // The watch asked for bookmarks from the list's version.
    const watch = api.requests.find((r) => r.query.get("watch") === "1")!;
    assert.equal(watch.query.get("allowWatchBookmarks"), "true");
    assert.equal(watch.query.get("labelSelector"), "app=vllm-llama");
    assert.ok(watch.query.get("resourceVersion"));

    // Pod A's engine publishes three blocks: the router follows them.
    await pub.waitSubscribed();
    await pub.batch([storedSpec(tokens(12, 3), 4, 1n)]);
    await waitFor(async () => (await workers(client)).get(ID("vllm-a"))?.blocks === 3, "pod A's blocks indexed", 15_000);
    const cached = await client.findBestWorker({ tokenIds: tokens(12, 3), requestId: "r1" });
    assert.deepEqual([cached.worker?.workerId, cached.overlapBlocks], [ID("vllm-a"), 3]);
    const fresh = await client.findBestWorker({ tokenIds: tokens(12, 500), requestId: "r2" });
    assert.equal(fresh.worker?.workerId, ID("vllm-b")); // A holds r1's load: the other pod takes it

    // A bookmark moves the version on and changes nothing.
    api.bookmark();
    // Pod A is deleted mid-run: its worker and blocks go.
    api.delete("vllm-a");
    await waitFor(async () => !(await workers(client)).has(ID("vllm-a")), "pod A dropped", 15_000);
    const after = await client.findBestWorker({ tokenIds: tokens(12, 3), requestId: "r3" });
    assert.deepEqual([after.worker?.workerId, after.overlapBlocks], [ID("vllm-b"), 0]);
  });

  test("start-up errors name the flag or the API server's answer", async () => {
    const noSelector = spawnCli(["--grpc-port", "0", "--discovery-backend", "kubernetes"]);
    assert.notEqual(await noSelector.exited, 0);
    assert.match(noSelector.out.stderr, /needs --k8s-selector or --k8s-inference-pool/);
    const stray = spawnCli(["--grpc-port", "0", "--zmq-port", "5557"]);
    assert.notEqual(await stray.exited, 0);
    assert.match(stray.out.stderr, /--zmq-port is read by --discovery-backend kubernetes only/);

    const api = await FakeKubeApi.start();
    cleanups.push(() => api.close());
    const missingPool = spawnCli(["--grpc-port", "0", "--metrics-port", "-1", "--discovery-backend", "kubernetes", "--k8s-inference-pool", "nope"], { KUBECONFIG: api.kubeconfig() });
    assert.notEqual(await missingPool.exited, 0);
    assert.match(missingPool.out.stderr, /InferencePool inference\/nope.*HTTP 404/);
  });
});

describe("KubernetesDiscovery list and watch", () => {
  async function setUp(api: FakeKubeApi, opts: Partial<ConstructorParameters<typeof KubernetesDiscovery>[0]> = {}) {
    const discovery = new KubernetesDiscovery({ client: { kubeconfig: api.kubeconfig() }, labelSelector: "app=vllm-llama", leaseMs: 60_000, pageSize: 2, ...opts });
    const r = await startTestRouter({ blockSize: 4 }, { eventSources: [discovery], metricsPort: 0 });
    cleanups.push(() => r.close());
    return { discovery, r };
  }

  test("a broken watch, then 410 Gone: the router relists, reconciles, and keeps the blocks of pods that stayed", async () => {
    const api = await FakeKubeApi.start();
    cleanups.push(() => api.close());
    ["vllm-a", "vllm-b", "vllm-c"].forEach((name, i) => api.put({ name, labels: APP, ip: `10.1.0.${i + 1}`, ready: true }));
    const { r } = await setUp(api);
    const ids = async () => [...(await workers(r.client)).keys()].sort();
    assert.deepEqual(await ids(), [ID("vllm-a"), ID("vllm-b"), ID("vllm-c")].sort()); // listed in pages of 2
    assert.ok(api.requests.some((q) => q.query.has("continue")));
    await r.client.sendEvents([{ ...stored(0, 1, tokens(8), 4, 1n), workerId: ID("vllm-a") }]);
    assert.equal((await workers(r.client)).get(ID("vllm-a"))!.blocks, 2);
    const lists = () => api.requests.filter((q) => q.query.get("watch") !== "1").length;
    const listsBefore = lists();

    // The watch breaks: the router watches again from the version it holds (no relist).
    api.put({ name: "vllm-d", labels: APP, ip: "10.1.0.9", ready: true });
    await waitFor(async () => (await ids()).length === 4, "pod D via the watch");
    api.breakWatches();
    await waitFor(() => api.openWatches === 1, "watch re-opened", 10_000);
    assert.equal(lists(), listsBefore);

    // While the router is away, pod B goes and pod E comes, and the server forgets that history.
    api.compactWith(() => {
      api.delete("vllm-b");
      api.put({ name: "vllm-e", labels: APP, ip: "10.1.0.10", ready: true });
    });
    api.breakWatches(); // its next watch, from the old version, gets an ERROR event with Status code 410
    await waitFor(async () => (await ids()).join() === [ID("vllm-a"), ID("vllm-c"), ID("vllm-d"), ID("vllm-e")].sort().join(), "relisted", 10_000);
    assert.ok(lists() > listsBefore);
    assert.equal((await workers(r.client)).get(ID("vllm-a"))!.blocks, 2, "pod A's blocks survive the relist");

    // The same with HTTP 410 on the watch request.
    api.compactWith(() => api.delete("vllm-c"));
    api.goneAsHttp = true;
    api.breakWatches();
    await waitFor(async () => !(await ids()).includes(ID("vllm-c")), "relisted after HTTP 410", 10_000);
    assert.equal((await workers(r.client)).get(ID("vllm-a"))!.blocks, 2);
    const gone = (await r.server.metrics.registry.getSingleMetric("kvrouter_discovery_kubernetes_requests_total")!.get()).values.find((v) => v.labels.kind === "gone");
    assert.equal(gone?.value, 2);
  });

  test("hostile input is bounded: an oversized event forces a relist, junk lines and pods past --k8s-max-pods are counted", async () => {
    const api = await FakeKubeApi.start();
    cleanups.push(() => api.close());
    api.put({ name: "vllm-a", labels: APP, ip: "10.2.0.1", ready: true });
    api.put({ name: "vllm-b", labels: APP, ip: "10.2.0.2", ready: true });
    api.put({ name: "vllm-c", labels: APP, ip: "10.2.0.3", ready: true });
    const { discovery, r } = await setUp(api, { maxPods: 2, maxObjectBytes: 4096 });
    assert.equal(discovery.workers.length, 2);
    const skipped = async () =>
      Object.fromEntries((await r.server.metrics.registry.getSingleMetric("kvrouter_discovery_kubernetes_skipped_total")!.get()).values.map((v) => [v.labels.reason, v.value]));
    assert.equal((await skipped()).over_max_items, 1);

    api.rawNextWatch = ["not json\n", JSON.stringify({ type: "ADDED", object: { metadata: {} } }) + "\n", "x".repeat(10_000) + "\n"];
    api.breakWatches();
    await waitFor(async () => (await skipped()).oversized === 1, "oversized line counted", 10_000);
    const s = await skipped();
    assert.equal(s.malformed, 2);
    // The oversized line made the router list again, and it still holds its two pods.
    await waitFor(() => api.openWatches === 1, "watching again", 10_000);
    assert.equal(discovery.workers.length, 2);
  });

  test("a pod re-created under its name starts empty; one that stops being Ready or starts terminating is dropped", async () => {
    const api = await FakeKubeApi.start();
    cleanups.push(() => api.close());
    api.put({ name: "vllm-0", labels: APP, ip: "10.4.0.1", ready: true });
    api.put({ name: "vllm-1", labels: APP, ip: "10.4.0.2", ready: true });
    const { discovery, r } = await setUp(api);
    await r.client.sendEvents([{ ...stored(0, 1, tokens(8), 4, 1n), workerId: ID("vllm-0") }]);
    assert.equal((await workers(r.client)).get(ID("vllm-0"))!.blocks, 2);
    api.put({ name: "vllm-0", labels: APP, ip: "10.4.0.1", ready: true }); // MODIFIED, nothing the router holds changed
    api.put({ name: "vllm-0", labels: APP, ip: "10.4.0.9", ready: true, uid: "uid-vllm-0-second" }); // a StatefulSet's replacement
    await waitFor(async () => (await workers(r.client)).get(ID("vllm-0"))?.address === "10.4.0.9:8000", "re-created pod");
    assert.equal((await workers(r.client)).get(ID("vllm-0"))!.blocks, 0);
    api.put({ name: "vllm-0", labels: APP, ip: "10.4.0.9", ready: false, uid: "uid-vllm-0-second" });
    api.put({ name: "vllm-1", labels: APP, ip: "10.4.0.2", ready: true, terminating: true });
    await waitFor(() => discovery.workers.length === 0, "both dropped");
    assert.equal((await workers(r.client)).size, 0);
  });

  test("an InferencePool names the selector and target ports (rank i on targetPorts[i])", async () => {
    const api = await FakeKubeApi.start();
    cleanups.push(() => api.close());
    api.inferencePools.set("llama", {
      apiVersion: "inference.networking.k8s.io/v1",
      kind: "InferencePool",
      metadata: { name: "llama", namespace: api.namespace },
      spec: { selector: { matchLabels: APP }, targetPorts: [{ number: 8000 }, { number: 8001 }], endpointPickerRef: { name: "kv-router", port: { number: 9002 } } },
    });
    api.put({ name: "vllm-a", labels: APP, ip: "10.3.0.1", ready: true });
    api.put({ name: "vllm-x", labels: { app: "other" }, ip: "10.3.0.2", ready: true });
    const { r } = await setUp(api, { labelSelector: undefined, inferencePool: "llama" });
    const list = (await r.client.listWorkers()).workers.map((w) => [w.worker!.workerId, w.worker!.dpRank, w.address]);
    assert.deepEqual(list.sort(), [
      [ID("vllm-a"), 0, "10.3.0.1:8000"],
      [ID("vllm-a"), 1, "10.3.0.1:8001"],
    ]);
  });
});
