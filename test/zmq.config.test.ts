// Where the ZeroMQ feed's endpoints come from: --zmq-worker specs, a
// --workers-file that is re-read when it changes, and the real CLI.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { parseWorkersFile, parseZmqWorkerSpec, registeredEndpoints } from "../src/sources/engineZmq/endpoints.js";
import { ZmqEventSource } from "../src/sources/engineZmq/zmqEventSource.js";
import { spawnRouter } from "./support/cliProcess.js";
import { startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";
import { Publisher, storedSpec } from "./zmq.support.js";

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});
const dir = mkdtempSync(join(tmpdir(), "kvr-zmq-"));
cleanups.push(() => rmSync(dir, { recursive: true, force: true }));

describe("--zmq-worker specs", () => {
  test("reads the worker id, endpoint and options", () => {
    assert.deepEqual(parseZmqWorkerSpec("18446744073709551615=tcp://10.0.0.5:5557,replay=tcp://10.0.0.5:5558,dp_rank=1"), {
      workerId: (1n << 64n) - 1n,
      endpoint: "tcp://10.0.0.5:5557",
      replay: "tcp://10.0.0.5:5558",
      dpRank: 1,
      engine: "vllm",
      topic: "",
      metrics: undefined,
    });
    assert.deepEqual(parseZmqWorkerSpec("3=ipc:///tmp/kv,engine=sglang,topic=kv@pod"), {
      workerId: 3n,
      endpoint: "ipc:///tmp/kv",
      replay: undefined,
      dpRank: 0,
      engine: "sglang",
      topic: "kv@pod",
      metrics: undefined,
    });
    assert.equal(parseZmqWorkerSpec("3=tcp://h:1,metrics=http://h:8000/metrics").metrics, "http://h:8000/metrics");
  });

  for (const [spec, complaint] of [
    ["tcp://h:1", /WORKER_ID=tcp:\/\/host:port/],
    ["x=tcp://h:1", /worker_id must be an unsigned 64-bit integer/],
    ["18446744073709551616=tcp://h:1", /unsigned 64-bit/],
    ["1=http://h:1", /endpoint must look like tcp:\/\/host:port/],
    ["1=tcp://h:1,replay=h:2", /replay must look like/],
    ["1=tcp://h:70000", /port 70000; 1-65535 expected/],
    ["1=tcp://h:1,dp_rank=-1", /dp_rank must be an integer/],
    ["1=tcp://h:1,engine=trtllm", /engine must be vllm or sglang/],
    ["1=tcp://h:1,colour=red", /unknown field "colour"/],
    ["1=tcp://h:1,replay", /is not key=value/],
    ["1=tcp://h:1,metrics=h:8000", /metrics must look like http:\/\/host:port\/metrics/],
  ] as const) {
    test(`rejects ${spec}`, () => assert.throws(() => parseZmqWorkerSpec(spec), complaint));
  }
});

describe("--workers-file", () => {
  test("YAML and JSON, as a list or under workers:", () => {
    const yaml = "workers:\n  - worker_id: 18446744073709551615\n    endpoint: tcp://127.0.0.1:5557\n    replay: tcp://127.0.0.1:5558\n  - {worker_id: 2, endpoint: 'tcp://127.0.0.1:6000', dp_rank: 1, engine: sglang}\n";
    const fromYaml = parseWorkersFile(yaml, "w.yaml");
    assert.deepEqual(
      fromYaml.map((e) => [e.workerId, e.endpoint, e.replay, e.dpRank, e.engine]),
      [
        [(1n << 64n) - 1n, "tcp://127.0.0.1:5557", "tcp://127.0.0.1:5558", 0, "vllm"],
        [2n, "tcp://127.0.0.1:6000", undefined, 1, "sglang"],
      ],
    );
    const json = JSON.stringify([{ worker_id: "9", endpoint: "tcp://127.0.0.1:1", replay_endpoint: "tcp://127.0.0.1:2" }]);
    assert.deepEqual(parseWorkersFile(json, "w.json").map((e) => [e.workerId, e.replay]), [[9n, "tcp://127.0.0.1:2"]]);
    assert.deepEqual(parseWorkersFile("", "empty.yaml"), []);
    assert.throws(() => parseWorkersFile("workers: 3", "w.yaml"), /expected a list of workers/);
    assert.throws(() => parseWorkersFile("- worker_id: 1\n", "w.yaml"), /w.yaml: workers\[0\]: endpoint is missing/);
    assert.throws(() => parseWorkersFile("[{", "w.yaml"), /w.yaml: not YAML\/JSON/);
  });

  test("a changed file starts and stops subscribers; an invalid one keeps the previous set", async () => {
    const a = await Publisher.start("vllm-map");
    const b = await Publisher.start("vllm-map");
    cleanups.push(() => a.stop(), () => b.stop());
    const file = join(dir, "workers.yaml");
    writeFileSync(file, `- worker_id: 1\n  endpoint: ${a.endpoint}\n`);
    const source = new ZmqEventSource({ workersFile: file, workersFilePollMs: 50 });
    const r = await startTestRouter({ blockSize: 4 }, { eventSources: [source] });
    cleanups.push(() => r.close());
    await a.waitSubscribed();
    await a.batch([storedSpec(tokens(8), 4, 1n)]);
    await waitFor(() => r.server.router.index.blockCounts().get("1:0") === 2, "worker 1's blocks");

    writeFileSync(file, `- worker_id: 2\n  endpoint: ${b.endpoint}\n`);
    await waitFor(() => source.endpoints().length === 1 && source.endpoints()[0].workerId === 2n, "worker 2 only");
    await b.waitSubscribed();
    await b.batch([storedSpec(tokens(4), 4, 1n)]);
    await waitFor(() => r.server.router.index.blockCounts().get("2:0") === 1, "worker 2's blocks");
    const best = await r.client.findBestWorker({ tokenIds: tokens(8) });
    assert.equal(best.worker?.workerId, 1n); // worker 1's blocks stay until its lease or events say otherwise

    writeFileSync(file, "- worker_id: nope\n");
    const reloads = () => r.server.metrics.registry.getSingleMetric("kvrouter_zmq_workers_file_reloads_total")!.get();
    await waitFor(async () => (await reloads()).values.some((v) => v.labels.outcome === "invalid" && v.value === 1), "invalid reload counted");
    assert.deepEqual(source.endpoints().map((e) => e.workerId), [2n]);
  });
});

describe("the kv-router CLI", () => {
  test("--zmq-worker subscribes the served router to an engine", async () => {
    const pub = await Publisher.start("vllm-map", { replay: true });
    cleanups.push(() => pub.stop());
    const proc = await spawnRouter([
      "--block-size", "4", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1",
      "--zmq-worker", `5=${pub.endpoint},replay=${pub.replay}`,
    ]);
    cleanups.push(async () => void (await proc.stop()));
    const client = new KvRouterClient(proc.grpcAddress);
    cleanups.push(() => client.close());
    await pub.waitSubscribed();
    await pub.batch([storedSpec(tokens(12, 3), 4, 1n)]);
    await waitFor(async () => (await client.listWorkers()).workers.some((w) => w.cachedBlocks === 3n), "blocks indexed");
    const best = await client.findBestWorker({ tokenIds: tokens(12, 3) });
    assert.deepEqual([best.worker?.workerId, best.overlapBlocks], [5n, 3]);
  });

  test("a bad --zmq-worker stops the CLI with the reason", async () => {
    await assert.rejects(
      spawnRouter(["--block-size", "4", "--grpc-port", "0", "--metrics-port", "-1", "--zmq-worker", "5=tcp://127.0.0.1"]),
      /endpoint must look like tcp:\/\/host:port/,
    );
  });
});

describe("workers registering a zmq endpoint", () => {
  test("dp rank r publishes on port + r", () => {
    const eps = registeredEndpoints(4n, [0, 2], "tcp://127.0.0.1:5557", "tcp://127.0.0.1:6557");
    assert.deepEqual(eps.map((e) => [e.dpRank, e.endpoint, e.replay]), [
      [0, "tcp://127.0.0.1:5557", "tcp://127.0.0.1:6557"],
      [2, "tcp://127.0.0.1:5559", "tcp://127.0.0.1:6559"],
    ]);
    assert.deepEqual(registeredEndpoints(4n, [1], "ipc:///tmp/kv").map((e) => e.endpoint), ["ipc:///tmp/kv_dp1"]);
  });

  test("get a subscriber for their lease; a bad endpoint refuses the registration", async () => {
    const pub = await Publisher.start("vllm-map");
    cleanups.push(() => pub.stop());
    const source = new ZmqEventSource();
    const r = await startTestRouter({ blockSize: 4 }, { eventSources: [source] });
    cleanups.push(() => r.close());

    await assert.rejects(r.client.registerWorker({ workerId: 12n, zmqEndpoint: "tcp://nowhere" }), /zmq_endpoint must look like tcp:\/\/host:port/);
    await assert.rejects(r.client.registerWorker({ workerId: 12n, zmqReplayEndpoint: "tcp://127.0.0.1:1" }), /zmq_endpoint is empty/);
    assert.equal((await r.client.listWorkers()).workers.length, 0);

    await r.client.registerWorker({ workerId: 11n, dpRanks: [0], zmqEndpoint: pub.endpoint });
    await pub.waitSubscribed();
    await pub.batch([storedSpec(tokens(8), 4, 1n)]);
    await waitFor(() => r.server.router.index.blockCounts().get("11:0") === 2, "worker 11's blocks");

    await r.client.deregisterWorker(11n);
    assert.deepEqual(source.endpoints(), []);
    await pub.batch([storedSpec(tokens(4, 50), 4, 9n)]);
    // No subscriber any more: the worker stays forgotten.
    assert.equal((await r.client.listWorkers()).workers.length, 0);
  });
});
