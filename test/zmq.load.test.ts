// The optional load term: engines' own queue depth and KV usage, read from
// their Prometheus pages (a real HTTP server here), shift routing decisions.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parseEngineLoad } from "../src/sources/engineZmq/engineLoad.js";
import { ZmqEventSource } from "../src/sources/engineZmq/zmqEventSource.js";
import { freePort } from "./support/natsServer.js";
import { startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe("engine load from Prometheus text", () => {
  test("vLLM names, per DP engine label; SGLang names; nothing known", () => {
    const vllm = [
      "# HELP vllm:num_requests_waiting Number of requests waiting.",
      'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0',
      'vllm:num_requests_waiting{engine="1",model_name="m"} 7.0',
      'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25',
      'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5',
    ].join("\n");
    assert.deepEqual(parseEngineLoad(vllm, 1), { waiting: 7, kvUsage: 0.5 });
    assert.deepEqual(parseEngineLoad(vllm, 0), { waiting: 3, kvUsage: 0.25 });
    assert.deepEqual(parseEngineLoad('vllm:gpu_cache_usage_perc{model_name="m"} 0.75\n', 0), { waiting: 0, kvUsage: 0.75 });
    const sglang = 'sglang:num_queue_reqs{model_name="m"} 4\nsglang:token_usage{model_name="m"} 0.5\n';
    assert.deepEqual(parseEngineLoad(sglang, 0), { waiting: 4, kvUsage: 0.5 });
    assert.equal(parseEngineLoad("process_cpu_seconds_total 12\n", 0), undefined);
    // The running batch, when the page has it: with the waiting count, the engine's batch state.
    const running = 'vllm:num_requests_running{engine="0",model_name="m"} 64\n' + vllm;
    assert.deepEqual(parseEngineLoad(running, 0), { waiting: 3, kvUsage: 0.25, running: 64 });
    assert.deepEqual(parseEngineLoad("sglang:num_running_reqs 12\nsglang:num_queue_reqs 2\n", 0), { waiting: 2, kvUsage: 0, running: 12 });
  });
});

class MetricsServer {
  readonly dir = mkdtempSync(join(tmpdir(), "kvr-metrics-"));
  private proc: ChildProcess | undefined;
  url = "";

  async start(): Promise<void> {
    const port = await freePort();
    this.proc = spawn("/usr/bin/python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", this.dir], {
      stdio: "ignore",
    });
    this.url = `http://127.0.0.1:${port}/metrics`;
    this.write(0, 0);
    await waitFor(async () => (await fetch(this.url).catch(() => undefined))?.ok === true, "metrics server up");
  }

  write(waiting: number, usage: number, running = 0): void {
    writeFileSync(
      join(this.dir, "metrics"),
      `vllm:num_requests_waiting{engine="0",model_name="m"} ${waiting}\nvllm:kv_cache_usage_perc{engine="0",model_name="m"} ${usage}\n` +
        `vllm:num_requests_running{engine="0",model_name="m"} ${running}\n`,
    );
  }

  async stop(): Promise<void> {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      const exited = new Promise((r) => this.proc!.once("exit", r));
      this.proc.kill("SIGKILL");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe("the load term in routing", () => {
  test("an engine's own queue and KV usage add to its cost, and decisions follow", async () => {
    const m1 = new MetricsServer();
    const m2 = new MetricsServer();
    cleanups.push(() => m1.stop(), () => m2.stop());
    await m1.start();
    await m2.start();
    m1.write(30, 0.5);
    m2.write(0, 0.1);
    const nowhere = `tcp://127.0.0.1:${await freePort()}`; // no KV events needed here
    const spec = (workerId: bigint, metrics: string) => ({ workerId, endpoint: nowhere, dpRank: 0, engine: "vllm" as const, topic: "", metrics });
    const source = new ZmqEventSource({
      endpoints: [spec(1n, m1.url), spec(2n, m2.url)],
      loadWeights: { queue: 1, kvUsage: 10 },
      // A scrape may take its whole interval (the poller's timeout): long enough for a loaded machine.
      loadPollMs: 1000,
    });
    const r = await startTestRouter({ blockSize: 4 }, { eventSources: [source] });
    cleanups.push(() => r.close());
    await r.client.registerWorker({ workerId: 1n });
    await r.client.registerWorker({ workerId: 2n });
    const extra = () => r.server.router.extraCost;
    await waitFor(() => extra().get("1:0") === 35 && extra().get("2:0") === 1, "both engines read");

    const route = async () => {
      const res = await r.client.findBestWorker({ tokenIds: tokens(16), explain: true });
      const logit = (id: bigint) => res.scores.find((s) => s.worker?.workerId === id)!.logit;
      return { chosen: res.worker?.workerId, gap: logit(1n) - logit(2n) };
    };
    assert.deepEqual(await route(), { chosen: 2n, gap: 34 });
    // The page's batch counts reach the router beside the cost term (read with the slots a worker registers).
    m1.write(30, 0.5, 64);
    await waitFor(() => r.server.router.engineBatches.batch("1:0", 64, 0).running === 64, "worker 1's running batch read");
    assert.deepEqual(r.server.router.engineBatches.batch("1:0", 64, 0), { slots: 64, running: 64, waiting: 30, reported: true });

    m2.write(100, 0.1);
    await waitFor(() => extra().get("2:0") === 101, "worker 2's queue grew");
    assert.deepEqual(await route(), { chosen: 1n, gap: -66 });

    // An engine whose page cannot be read loses its term instead of keeping a stale one.
    await m2.stop();
    await waitFor(() => !extra().has("2:0"), "worker 2's term dropped");
    assert.equal((await route()).chosen, 2n);
  });
});
