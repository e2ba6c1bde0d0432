// The real CLI in NATS mode: `kv-router --nats-url …` serving, and
// `kv-router worker register` putting workers in and out of its decisions.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { spawnCli } from "./support/cliProcess.js";
import { type NatsCluster, startNats } from "./support/natsServer.js";
import { waitFor } from "./support/wait.js";

const children = new Set<ChildProcess>();

function cli(args: string[]) {
  const run = spawnCli(args);
  children.add(run.child);
  return run;
}

describe("CLI in NATS mode", () => {
  let nats: NatsCluster;
  let client: KvRouterClient | undefined;
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    client?.close();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await nats?.stop();
  });

  it("rejects a malformed --nats-url before serving", async () => {
    const run = cli(["--block-size", "4", "--grpc-port", "0", "--metrics-port", "-1", "--nats-url", "localhost:4222"]);
    assert.notEqual(await run.exited, 0);
    assert.match(run.out.stderr, /--nats-url must be nats:\/\/host:port URLs/);
  });

  it("serves with --nats-url; `worker register` adds a worker, Ctrl-C or TTL removes it", async () => {
    const router = cli(["--block-size", "4", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1", "--nats-url", nats.urls, "--endpoint", "cli.backend.generate"]);
    await waitFor(() => /kv-router listening on/.test(router.out.stdout), "router listening", 20_000);
    const address = /kv-router listening on (\S+)/.exec(router.out.stdout)![1];
    client = new KvRouterClient(address);
    const registered = async () => new Set((await client!.listWorkers()).workers.filter((w) => w.registered).map((w) => `${w.worker!.workerId}:${w.worker!.dpRank}`));

    const base = ["worker", "register", "--nats-url", nats.urls, "--endpoint", "cli.backend.generate"];
    const keeper = cli([...base, "--worker-id", "91", "--dp-ranks", "0,1", "--ttl", "2"]);
    await waitFor(async () => (await registered()).has("91:1"), "worker 91 registered", 20_000);
    // Refreshed: still there after more than one TTL.
    await new Promise((r) => setTimeout(r, 2500));
    assert.ok((await registered()).has("91:0"), "a refreshed registration outlives its TTL");
    keeper.child.kill("SIGTERM");
    assert.equal(await keeper.exited, 0);
    await waitFor(async () => !(await registered()).has("91:0"), "worker 91 gone after deregistering", 5_000);

    const once = cli([...base, "--worker-id", "92", "--ttl", "3", "--once"]);
    assert.equal(await once.exited, 0);
    assert.match(once.out.stdout, /registered worker 92/);
    await waitFor(async () => (await registered()).has("92:0"), "worker 92 registered", 5_000);
    await waitFor(async () => !(await registered()).has("92:0"), "worker 92 gone after its TTL", 8_000);

    router.child.kill("SIGTERM");
    assert.equal(await router.exited, 0);
  });
});
