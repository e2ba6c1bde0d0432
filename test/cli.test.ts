// The real `kv-router` command: spawned as users run it, reached over gRPC
// and HTTP, configured by flags (both Dynamo spellings) and DYN_ variables,
// refusing bad values, and stopping cleanly on SIGTERM.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { get } from "node:http";
import { after, describe, it } from "node:test";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { spawnCli } from "./support/cliProcess.js";
import { stored } from "./support/events.js";
import { tokens } from "./support/router.js";

const LISTENING = /^kv-router listening on (127\.0\.0\.1:\d+)$/;
// Generous: several CLIs start at once, and a loaded 2-core machine takes ~10 s per Node start.
const START_TIMEOUT_MS = 60_000;

const children = new Set<ChildProcess>();
const clients = new Set<KvRouterClient>();

after(() => {
  for (const c of clients) c.close();
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

/** Starts the CLI and remembers it, so after() can kill whatever is left. */
function spawnTracked(args: string[], env: Record<string, string>) {
  const run = spawnCli(args, env);
  children.add(run.child);
  return run;
}

/** Runs the CLI to its end (bounded); for invocations that must fail before serving. */
async function runToExit(args: string[], env: Record<string, string> = {}) {
  const { child, out, exited } = spawnTracked(args, env);
  const timer = setTimeout(() => child.kill("SIGKILL"), START_TIMEOUT_MS);
  const code = await exited;
  clearTimeout(timer);
  return { code, ...out };
}

interface StartedLog {
  grpc: string;
  metrics: string;
  block_size: number;
  prefill_load_scale: number;
  overlap_score_credit: number;
  router_temperature: number;
  kv_events: boolean;
  track_active_blocks: boolean;
}

const jsonLines = (text: string) =>
  text
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

/** Starts a serving router on free loopback ports; resolves once it printed its address and logged its settings. */
async function startCli(args: string[], env: Record<string, string> = {}) {
  const run = spawnTracked(["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", ...args], env);
  const deadline = Date.now() + START_TIMEOUT_MS;
  let started: StartedLog | undefined;
  while (started === undefined) {
    if (run.child.exitCode !== null) assert.fail(`kv-router exited with ${run.child.exitCode}: ${run.out.stderr}`);
    if (Date.now() > deadline) assert.fail(`kv-router did not start: ${run.out.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
    started = jsonLines(run.out.stderr).find((l) => l.msg === "kv-router started") as StartedLog | undefined;
  }
  const lines = run.out.stdout.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `exactly one line on stdout, got ${JSON.stringify(run.out.stdout)}`);
  const address = LISTENING.exec(lines[0])?.[1];
  assert.ok(address, `stdout line: ${lines[0]}`);
  assert.equal(started.grpc, address, "the log and stdout agree on the address");
  const client = new KvRouterClient(address);
  clients.add(client);
  return { ...run, address, started, client };
}

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).on("error", reject);
  });
}

const metricValue = (text: string, name: string) => {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : undefined;
};

/** Asks the router for a decision on an n-token prompt and returns its prompt_blocks (= n / the block size in force). */
async function promptBlocks(client: KvRouterClient, n: number): Promise<number> {
  await client.registerWorker({ workerId: 1n });
  return (await client.findBestWorker({ tokenIds: tokens(n, 5000) })).promptBlocks;
}

describe("kv-router CLI", () => {
  it("prints one listening line, serves gRPC and /metrics, and exits 0 on SIGTERM", async () => {
    const r = await startCli(["--block-size", "16"]);
    assert.equal(r.started.block_size, 16);
    assert.equal(await promptBlocks(r.client, 16 * 3 + 5), 3);

    const metricsUrl = `http://${r.started.metrics}`;
    assert.match(metricsUrl, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const m = await httpGet(metricsUrl);
    assert.equal(m.status, 200);
    for (const name of ["kvrouter_routing_decisions_total", "kvrouter_index_blocks", "kvrouter_grpc_request_duration_seconds_count"]) {
      assert.match(m.body, new RegExp(`^${name}`, "m"), `${name} is exported`);
    }
    assert.equal(metricValue(m.body, "kvrouter_routing_decisions_total"), 1, "the one decision above is counted");
    assert.equal((await httpGet(metricsUrl.replace(/\/metrics$/, "/other"))).status, 404);

    r.child.kill("SIGTERM");
    assert.equal(await r.exited, 0, r.out.stderr);
    assert.ok(jsonLines(r.out.stderr).some((l) => l.msg === "kv-router stopped"), "logs its stop");
    assert.equal(r.out.stdout.split("\n").filter((l) => l !== "").length, 1, "still one line on stdout");
  });

  it("refuses to start with invalid values, saying which flag is wrong", async () => {
    const cases: [string[], RegExp][] = [
      [["--router-kv-overlap-score-credit", "-1"], /--router-kv-overlap-score-credit must be a number >= 0, got -1/],
      [["--block-size", "0"], /--block-size must be an integer in \[1, 65536\], got 0/],
      [["--block-size", "16", "--router-temperature", "-1"], /--router-temperature must be a number >= 0, got -1/],
      [["--block-size", "16", "--endpoint", "bad"], /--endpoint must look like namespace\.component\.endpoint, got "bad"/],
      [["--block-size", "16", "--blok-size", "8"], /unknown flag --blok-size/],
    ];
    const results = await Promise.all(cases.map(([args]) => runToExit([...args, "--grpc-port", "0", "--metrics-port", "-1"])));
    results.forEach((res, i) => {
      const what = cases[i][0].join(" ") || "(no flags)";
      assert.notEqual(res.code, 0, `${what}: exit code`);
      assert.match(res.stderr, cases[i][1], `${what}: message`);
      assert.doesNotMatch(res.stdout, /listening/, `${what}: never served`);
    });
  });

  it("applies --max-blocks and --indexer-shards (they once never reached the server: the index grew unbounded)", async () => {
    const r = await startCli(["--block-size", "4", "--max-blocks", "3", "--indexer-shards", "1"]);
    await r.client.sendEvents([stored(1, 1, tokens(4 * 6, 0), 4, 100n)]);
    const cached = (await r.client.listWorkers()).workers.map((w) => Number(w.cachedBlocks));
    assert.ok(cached.length === 1 && cached[0] <= 3, `at most 3 (block, worker) entries kept, got ${cached}`);
    r.child.kill("SIGTERM");
    assert.equal(await r.exited, 0);
  });

  it("accepts Dynamo's newer flag spellings (--router-block-size, --no-router-kv-events, ...)", async () => {
    const r = await startCli([
      "--router-block-size",
      "8",
      "--router-kv-overlap-score-weight",
      "2.5",
      "--no-router-kv-events",
      "--no-router-track-active-blocks",
    ]);
    assert.deepEqual(
      [r.started.block_size, r.started.prefill_load_scale, r.started.kv_events, r.started.track_active_blocks],
      [8, 2.5, false, false],
    );
    assert.equal(await promptBlocks(r.client, 8 * 4), 4);
    // Without KV events the router predicts caches from its own decisions: the
    // same prompt again overlaps fully (with events on it would be 0 until a worker reports).
    const again = await r.client.findBestWorker({ tokenIds: tokens(8 * 4, 5000) });
    assert.equal(again.overlapBlocks, 4);
    r.child.kill("SIGTERM");
    assert.equal(await r.exited, 0);
  });

  it("reads DYN_ variables (Dynamo's names) and ignores DYN_ variables meant for other components", async () => {
    const r = await startCli([], {
      DYN_ROUTER_BLOCK_SIZE: "8",
      DYN_ROUTER_KV_OVERLAP_SCORE_WEIGHT: "0.5",
      DYN_ROUTER_TEMPERATURE: "0.25",
      DYN_ROUTER_USE_KV_EVENTS: "false",
      DYN_ROUTER_TRACK_ACTIVE_BLOCKS: "0",
      // Set in Dynamo pods for other programs; must not stop the router.
      DYN_LOG: "debug",
      DYN_NAMESPACE: "dynamo",
      DYN_ROUTER_MODE: "kv",
      DYN_SYSTEM__ENABLED: "true",
    });
    assert.deepEqual(
      [r.started.block_size, r.started.prefill_load_scale, r.started.router_temperature, r.started.kv_events, r.started.track_active_blocks],
      [8, 0.5, 0.25, false, false],
    );
    assert.equal(await promptBlocks(r.client, 8 * 3), 3);
    r.child.kill("SIGTERM");
    assert.equal(await r.exited, 0);
  });

  it("lets a command-line flag win over its DYN_ variable; accepts DYN_BLOCK_SIZE and DYN_KV_CACHE_BLOCK_SIZE", async () => {
    const [cliWins, seedName, frontendName] = await Promise.all([
      startCli(["--block-size", "32", "--no-kv-events", "--router-track-active-blocks"], {
        DYN_BLOCK_SIZE: "16",
        DYN_KV_EVENTS: "true",
        DYN_ROUTER_TRACK_ACTIVE_BLOCKS: "false",
      }),
      startCli([], { DYN_BLOCK_SIZE: "16", DYN_TRACK_ACTIVE_BLOCKS: "off" }),
      startCli([], { DYN_KV_CACHE_BLOCK_SIZE: "4", DYN_KV_EVENTS: "yes" }),
    ]);
    assert.deepEqual([cliWins.started.block_size, cliWins.started.kv_events, cliWins.started.track_active_blocks], [32, false, true]);
    assert.deepEqual([seedName.started.block_size, seedName.started.track_active_blocks], [16, false]);
    assert.deepEqual([frontendName.started.block_size, frontendName.started.kv_events], [4, true]);
    for (const r of [cliWins, seedName, frontendName]) r.child.kill("SIGTERM");
    assert.deepEqual(await Promise.all([cliWins.exited, seedName.exited, frontendName.exited]), [0, 0, 0]);
  });

  it("refuses unreadable DYN_ values with a message naming the variable", async () => {
    const [notBool, badSize] = await Promise.all([
      runToExit(["--grpc-port", "0", "--metrics-port", "-1"], { DYN_BLOCK_SIZE: "16", DYN_ROUTER_TRACK_ACTIVE_BLOCKS: "maybe" }),
      runToExit(["--grpc-port", "0", "--metrics-port", "-1"], { DYN_ROUTER_BLOCK_SIZE: "0" }),
    ]);
    assert.notEqual(notBool.code, 0);
    assert.match(notBool.stderr, /DYN_ROUTER_TRACK_ACTIVE_BLOCKS="maybe" is not a boolean/);
    assert.notEqual(badSize.code, 0);
    assert.match(badSize.stderr, /--block-size must be an integer in \[1, 65536\], got 0/);
  });
});
