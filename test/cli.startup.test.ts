// What a person sees when the router cannot start: one line naming the flag,
// variable, file or resource and the fix, a non-zero exit code (2 for bad input,
// 1 when a resource refused), no --help dump and no stack trace unless
// KV_ROUTER_LOG=debug. Also --config FILE and the /healthz, /readyz probes.
// Everything runs the real CLI; the ports in use are really bound, the NATS
// server really absent.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { type Server, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { startServer } from "../src/app/startServer.js";
import type { EventSource } from "../src/router/eventSource.js";
import { KV_ROUTER_DEFAULTS } from "../src/scheduler/defaults.js";
import { spawnCli, spawnRouter } from "./support/cliProcess.js";
import { makeTestPki } from "./support/certs.js";


const EXIT_TIMEOUT_MS = 120_000;
const dir = mkdtempSync(join(tmpdir(), "kvr-startup-"));
const children = new Set<ChildProcess>();
const holders: Server[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const h of holders) h.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `kv-router ARGS` to its end (bounded, so a hung start fails instead of blocking the suite). */
async function runToExit(args: string[], env: NodeJS.ProcessEnv = {}) {
  const { child, out, exited } = spawnCli(args, env);
  children.add(child);
  const timer = setTimeout(() => child.kill("SIGKILL"), EXIT_TIMEOUT_MS);
  const code = await exited;
  clearTimeout(timer);
  return { code, ...out };
}

/** The one line a failed start prints (JSON log lines aside), checked to be the only one and stack-free. */
function oneLine(stderr: string): string {
  const lines = stderr.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("{"));
  assert.equal(lines.length, 1, `exactly one message line, got:\n${stderr}`);
  assert.doesNotMatch(stderr, /^\s+at /m, "no stack trace");
  assert.doesNotMatch(stderr, /--help\s+Show help/, "no --help dump");
  return lines[0];
}

/** A port held by a listening socket for the rest of the file. */
async function heldPort(): Promise<number> {
  const s = createServer().listen(0, "127.0.0.1");
  await new Promise((r) => s.once("listening", r));
  holders.push(s);
  return (s.address() as { port: number }).port;
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createServer().listen(0, "127.0.0.1");
  await new Promise((r) => s.once("listening", r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

const SERVE = ["--block-size", "16", "--host", "127.0.0.1"];

describe("start-up messages", () => {
  it("a gRPC or metrics port in use: names the flag and the fix, exit code 1", async () => {
    const port = await heldPort();
    const [grpc, metrics] = await Promise.all([
      runToExit([...SERVE, "--grpc-port", String(port), "--metrics-port", "-1"]),
      runToExit([...SERVE, "--grpc-port", "0", "--metrics-port", String(port)]),
    ]);
    assert.equal(grpc.code, 1);
    assert.equal(
      oneLine(grpc.stderr),
      `kv-router: --grpc-port ${port} is in use on 127.0.0.1 (EADDRINUSE); pick another with --grpc-port (0 picks a free one)`,
    );
    assert.equal(metrics.code, 1);
    assert.equal(
      oneLine(metrics.stderr),
      `kv-router: --metrics-port ${port} is in use on 127.0.0.1 (EADDRINUSE); pick another with --metrics-port (0 picks a free one; -1 turns /metrics off)`,
    );
    for (const r of [grpc, metrics]) assert.doesNotMatch(r.stdout, /listening/);
  });

  it("NATS unreachable: names the URL and the fix, exit code 1", async () => {
    const url = `nats://127.0.0.1:${await closedPort()}`;
    const r = await runToExit([...SERVE, "--grpc-port", "0", "--metrics-port", "-1", "--nats-url", url]);
    assert.equal(r.code, 1);
    assert.match(oneLine(r.stderr), new RegExp(`^kv-router: cannot reach NATS at ${url} \\(.*ECONNREFUSED\\); start nats-server there or fix --nats-url$`));
  });

  it("bad flag values and unknown flags: one line each, exit code 2, help only on --help", async () => {
    const cases: [string[], string][] = [
      [["--grpc-port", "abc"], 'kv-router: --grpc-port must be a number, got "abc"'],
      [["--block-size", "0"], "kv-router: --block-size must be an integer in [1, 65536], got 0"], // the last of two wins
      [["--blok-size", "8"], "kv-router: unknown flag --blok-size; did you mean --block-size? (kv-router --help lists every flag)"],
    ];
    const results = await Promise.all(cases.map(([args]) => runToExit([...SERVE, "--metrics-port", "-1", ...args])));
    results.forEach((r, i) => {
      assert.equal(r.code, 2, cases[i][0].join(" "));
      assert.equal(oneLine(r.stderr), cases[i][1]);
    });
    const missing = await runToExit(["hash", "--tokens", "1,2,3,4"]);
    assert.equal(missing.code, 2);
    assert.equal(oneLine(missing.stderr), "kv-router: --block-size is required");
    const help = await runToExit(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--block-size/);
  });

  it("--http-port with --tls-client-ca: refused before anything listens, one line, exit code 2 (plain HTTP would bypass mutual TLS)", async () => {
    const pki = makeTestPki();
    try {
      const tls = ["--tls-cert", pki.path("server.crt"), "--tls-key", pki.path("server.key"), "--tls-client-ca", pki.path("ca.crt")];
      const r = await runToExit([...SERVE, "--grpc-port", "0", "--metrics-port", "-1", ...tls, "--http-port", "0"]);
      assert.equal(r.code, 2);
      assert.equal(
        oneLine(r.stderr),
        "kv-router: --http-port cannot be used with --tls-client-ca: the HTTP port is plain HTTP and asks for no client certificate, so it would bypass mutual TLS; leave --http-port off (-1)",
      );
      // The server refuses the same combination from any caller.
      const options = { router: DEFAULT_ROUTER_CONFIG, host: "127.0.0.1", grpcPort: 0, maxTokens: 1024, processMetrics: false, httpPort: 0 };
      const tlsFiles = { cert: pki.serverCert, key: pki.serverKey, clientCa: pki.caCert };
      await assert.rejects(startServer({ ...options, tls: tlsFiles }), /cannot be served with mutual TLS/);
      // TLS without client certificates still serves an HTTP port: only mutual TLS is refused.
      const served = await startServer({ ...options, tls: { ...tlsFiles, clientCa: undefined } });
      await served.stop();
    } finally {
      pki.remove();
    }
  });

  it("bad environment: names the variable and its value; two variables that disagree name both; KV_ROUTER_LOG lists the levels", async () => {
    const flags = ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"];
    const [notNumber, outOfRange, conflict, level] = await Promise.all([
      runToExit([...flags, "--block-size", "16"], { DYN_ROUTER_TEMPERATURE: "abc" }),
      runToExit(flags, { DYN_ROUTER_BLOCK_SIZE: "0" }),
      runToExit(flags, { DYN_ROUTER_BLOCK_SIZE: "16", DYN_KV_CACHE_BLOCK_SIZE: "32" }),
      runToExit([...flags, "--block-size", "16"], { KV_ROUTER_LOG: "verbose" }),
    ]);
    for (const r of [notNumber, outOfRange, conflict, level]) assert.equal(r.code, 2, r.stderr);
    assert.equal(oneLine(notNumber.stderr), 'kv-router: DYN_ROUTER_TEMPERATURE="abc" is not a number (it sets --router-temperature)');
    assert.equal(oneLine(outOfRange.stderr), "kv-router: --block-size must be an integer in [1, 65536], got 0 (from DYN_ROUTER_BLOCK_SIZE)");
    assert.equal(
      oneLine(conflict.stderr),
      'kv-router: DYN_KV_CACHE_BLOCK_SIZE="32" and DYN_ROUTER_BLOCK_SIZE="16" both set --block-size and disagree; unset one of them',
    );
    assert.equal(oneLine(level.stderr), 'kv-router: KV_ROUTER_LOG="verbose" is not a log level; use one of debug, info, warn, error');
  });

  it("the README's `hash --tokens 0,1,2,…` placeholder: one line naming --tokens, exit code 2", async () => {
    const r = await runToExit(["hash", "--block-size", "4", "--tokens", "0,1,2,…"]);
    assert.equal(r.code, 2);
    assert.match(oneLine(r.stderr), /^kv-router: --tokens: "…" is not a token id; give integers from 0 to 4294967295 separated by commas/);
  });

  it("KV_ROUTER_LOG=debug adds the stack trace", async () => {
    const port = await heldPort();
    const r = await runToExit([...SERVE, "--grpc-port", String(port), "--metrics-port", "-1"], { KV_ROUTER_LOG: "debug" });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^kv-router: --grpc-port \d+ is in use/m);
    assert.match(r.stderr, /^\s+at /m);
  });
});

describe("--config FILE", () => {
  it("takes flags from YAML or JSON by their names; the command line and DYN_ variables override it", async (t) => {
    const yaml = join(dir, "router.yaml");
    writeFileSync(yaml, "# a deployment's settings\nblock-size: 8\nrouter-temperature: 0.5\nrouter-prefill-load-scale: 2\nkv-events: false\n");
    const json = join(dir, "router.json");
    writeFileSync(json, JSON.stringify({ "router-block-size": 4, "track-active-blocks": false }));
    const base = ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"];
    const routers = await Promise.all([
      spawnRouter([...base, "--config", yaml]),
      spawnRouter([...base, "--config", yaml, "--block-size", "32"], { DYN_ROUTER_TEMPERATURE: "0.25" }),
      spawnRouter([...base, "--config", json]),
    ]);
    // Stopped whatever the assertions say: a router left running keeps the test file alive.
    t.after(() => Promise.all(routers.map((r) => r.stop())));
    const started = routers.map((r) => {
      const line = r
        .stderr()
        .split("\n")
        .find((l) => l.includes('"kv-router started"'));
      assert.ok(line, r.stderr());
      return JSON.parse(line) as Record<string, unknown>;
    });
    assert.deepEqual(
      started.map((s) => [s.block_size, s.router_temperature, s.prefill_load_scale, s.kv_events, s.track_active_blocks]),
      [
        [8, 0.5, 2, false, true],
        [32, 0.25, 2, false, true],
        [4, 0, KV_ROUTER_DEFAULTS.prefillLoadScale, true, false],
      ],
    );
  });

  it("a bad file, an unknown setting or a bad value names the file", async () => {
    const unknown = join(dir, "unknown.yaml");
    writeFileSync(unknown, "block-size: 8\nblok-size: 8\n");
    const badValue = join(dir, "bad-value.yaml");
    writeFileSync(badValue, "block-size: 0\n");
    const notYaml = join(dir, "not.yaml");
    writeFileSync(notYaml, "block-size: [\n");
    const list = join(dir, "list.yaml");
    writeFileSync(list, "- block-size\n");
    const base = ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"];
    const results = await Promise.all(
      [unknown, badValue, notYaml, list, join(dir, "missing.yaml")].map((f) => runToExit([...base, "--config", f])),
    );
    for (const r of results) assert.equal(r.code, 2, r.stderr);
    const lines = results.map((r) => oneLine(r.stderr));
    assert.equal(lines[0], `kv-router: ${unknown}: unknown setting "blok-size" (settings are the flag names without --; kv-router --help lists them)`);
    assert.equal(lines[1], `kv-router: --block-size must be an integer in [1, 65536], got 0 (from ${badValue})`);
    assert.match(lines[2], new RegExp(`^kv-router: --config ${notYaml}: not YAML or JSON: `));
    assert.equal(lines[3], `kv-router: --config ${list}: must be a mapping of flag names to values (e.g. "block-size: 64")`);
    assert.equal(lines[4], `kv-router: --config ${join(dir, "missing.yaml")}: cannot read it (ENOENT)`);
  });
});

/** An event source that starts only when told to, so the router's "starting" state can be observed. */
class HeldSource implements EventSource {
  readonly name = "held";
  release!: () => void;
  readonly started = new Promise<void>((resolve) => (this.release = resolve));
  async start(): Promise<void> {
    await this.started;
  }
  async stop(): Promise<void> {}
}

describe("probes on the metrics port", () => {
  it("/healthz answers while the process runs; /readyz only once every event source has started", async () => {
    const metricsPort = await closedPort();
    const source = new HeldSource();
    const starting = startServer({
      router: DEFAULT_ROUTER_CONFIG,
      host: "127.0.0.1",
      grpcPort: 0,
      metricsPort,
      maxTokens: 1024,
      processMetrics: false,
      eventSources: [source],
    });
    const base = `http://127.0.0.1:${metricsPort}`;
    // The metrics port opens before the sources start; wait for it.
    let health: Response | undefined;
    while (health === undefined) {
      health = await fetch(`${base}/healthz`).catch(() => undefined);
      if (health === undefined) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(health.status, 200);
    const notReady = await fetch(`${base}/readyz`);
    assert.equal(notReady.status, 503);
    assert.match(await notReady.text(), /^not ready: starting/);
    source.release();
    const running = await starting;
    const ready = await fetch(`${base}/readyz`);
    assert.deepEqual([ready.status, await ready.text()], [200, "ready\n"]);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    await running.stop();
  });
});

describe("kv-router describe", () => {
  it("lists the methods, shows a method's request and response fields, and names an unknown one", async () => {
    const [all, method, unknown] = await Promise.all([runToExit(["describe"]), runToExit(["describe", "FindBestWorker"]), runToExit(["describe", "Nope"])]);
    assert.equal(all.code, 0);
    assert.match(all.stdout, /rpc IngestKvEvents\(IngestKvEventsRequest\) returns \(IngestKvEventsResponse\) {2}\[client stream\]/);
    assert.equal(method.code, 0);
    assert.match(method.stdout, /^message FindBestWorkerRequest\n {2}token_ids +repeated uint32$/m);
    assert.match(method.stdout, /^message WorkerRef\n {2}worker_id +uint64$/m);
    assert.equal(unknown.code, 2);
    assert.equal(oneLine(unknown.stderr), 'kv-router: describe: no method or message "Nope"; kv-router describe lists the methods');
  });
});
