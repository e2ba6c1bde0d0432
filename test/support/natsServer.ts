// Test support: real nats-server processes (Debian package, JetStream on) on
// loopback with free ports and temporary store dirs. Every process started
// here is killed by stop(); callers put stop() in an after() hook.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PrefixIndex } from "../../src/indexer/prefixIndex.js";
import type { IndexEvent } from "../../src/protocols/events.js";
import type { NatsModeOptions } from "../../src/sources/nats/natsSource.js";
import { seededRandom } from "../../src/util/random.js";
import { after, before } from "node:test";
import { type NatsConnection, connect } from "@nats-io/transport-node";
import { waitFor } from "./wait.js";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

async function portOpen(port: number): Promise<boolean> {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    const sock = connect(port, "127.0.0.1");
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

export interface NatsNode {
  name: string;
  port: number;
  url: string;
  /** Kills this node (SIGKILL, like a crash). */
  kill(): Promise<void>;
  readonly running: boolean;
}

export interface NatsCluster {
  nodes: NatsNode[];
  /** Client URLs of every node, comma-separated (what --nats-url takes). */
  urls: string;
  stop(): Promise<void>;
}

interface NodeSpec {
  name: string;
  port: number;
  clusterPort?: number;
  routes?: number[];
}

function startNode(spec: NodeSpec, storeDir: string, extraArgs: string[] = []): NatsNode {
  const args = ["-js", "-a", "127.0.0.1", "-p", String(spec.port), "-sd", storeDir, "-n", spec.name, ...extraArgs];
  if (spec.clusterPort !== undefined) {
    args.push("--cluster_name", "kvr", "--cluster", `nats://127.0.0.1:${spec.clusterPort}`);
    args.push("--routes", (spec.routes ?? []).map((p) => `nats://127.0.0.1:${p}`).join(","));
  }
  const proc: ChildProcess = spawn("nats-server", args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  let exited = false;
  const exitedP = new Promise<void>((resolve) => proc.once("exit", () => ((exited = true), resolve())));
  return {
    name: spec.name,
    port: spec.port,
    url: `nats://127.0.0.1:${spec.port}`,
    get running() {
      return !exited;
    },
    async kill() {
      if (!exited) proc.kill("SIGKILL");
      await exitedP;
    },
    // For debugging failed starts.
    toString: () => stderr,
  } as NatsNode;
}

/** One JetStream-enabled nats-server; `extraArgs` e.g. ["--user", "u", "--pass", "p"]. */
export async function startNats(extraArgs: string[] = []): Promise<NatsCluster> {
  return startCluster(1, extraArgs);
}

/** `size` nodes; with size > 1 they form a JetStream cluster over loopback routes. */
export async function startCluster(size = 3, extraArgs: string[] = []): Promise<NatsCluster> {
  const root = mkdtempSync(join(tmpdir(), "kvr-nats-"));
  const ports = await Promise.all(Array.from({ length: size }, () => freePort()));
  const clusterPorts = size > 1 ? await Promise.all(Array.from({ length: size }, () => freePort())) : [];
  const nodes = ports.map((port, i) =>
    startNode(
      {
        name: `n${i}`,
        port,
        clusterPort: size > 1 ? clusterPorts[i] : undefined,
        routes: size > 1 ? clusterPorts.filter((_, j) => j !== i) : undefined,
      },
      join(root, `n${i}`),
      extraArgs,
    ),
  );
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.kill()));
    rmSync(root, { recursive: true, force: true });
  };
  try {
    for (const n of nodes) await waitFor(() => portOpen(n.port), `nats-server ${n.name} on port ${n.port}`, 10_000);
    if (size > 1) await waitForJetStreamCluster(nodes[0].url);
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes, urls: nodes.map((n) => n.url).join(","), stop };
}

/** A cluster accepts stream creation only once its JetStream meta leader is elected. */
async function waitForJetStreamCluster(url: string): Promise<void> {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstreamManager } = await import("@nats-io/jetstream");
  const nc = await connect({ servers: url });
  try {
    await waitFor(
      async () => {
        try {
          const jsm = await jetstreamManager(nc, { timeout: 1000 });
          await jsm.getAccountInfo();
          return true;
        } catch {
          return false;
        }
      },
      "JetStream meta leader",
      20_000,
    );
  } finally {
    await nc.close();
  }
}

// ---- Synthetic KV event workloads (deterministic) -------------------------

/**
 * `count` events from `workers` workers: stores that start or extend chains,
 * leaf removals that keep the index bounded, and a rare cleared. Event ids
 * increase by one per worker.
 */
export function syntheticEvents(count: number, workers = 4, seed = 1): IndexEvent[] {
  const rnd = seededRandom(seed);
  const u64 = () => (BigInt(Math.floor(rnd() * 2 ** 32)) << 32n) | BigInt(Math.floor(rnd() * 2 ** 32));
  const state = Array.from({ length: workers }, (_, i) => ({
    workerId: BigInt(1000 + i) * 0x1_0000_0001n, // large ids exercise u64 handling
    eventId: 0n,
    chains: [] as { ext: bigint; local: bigint }[][],
  }));
  const out: IndexEvent[] = [];
  let nextExt = 1n;
  for (let n = 0; n < count; n++) {
    const w = state[Math.floor(rnd() * workers)];
    const head = { workerId: w.workerId, dpRank: 0, eventId: ++w.eventId };
    const r = rnd();
    if (r < 0.001) {
      w.chains = [];
      out.push({ ...head, kind: "cleared" });
    } else if (r < 0.38 && w.chains.length > 0) {
      const chain = w.chains[Math.floor(rnd() * w.chains.length)];
      const k = Math.min(chain.length, 1 + Math.floor(rnd() * 2));
      const gone = chain.splice(chain.length - k, k);
      if (chain.length === 0) w.chains.splice(w.chains.indexOf(chain), 1);
      out.push({ ...head, kind: "removed", blockHashes: gone.map((b) => b.ext).reverse() });
    } else {
      const extend = w.chains.length > 0 && (rnd() < 0.6 || w.chains.length > 150);
      const chain = extend ? w.chains[Math.floor(rnd() * w.chains.length)] : [];
      if (!extend) w.chains.push(chain);
      const parent = chain.length > 0 ? chain[chain.length - 1].ext : undefined;
      const k = 1 + Math.floor(rnd() * 4);
      const blocks = Array.from({ length: k }, () => ({
        // A few local hashes are shared so workers overlap; externals are unique.
        externalHash: (nextExt++ * 0x9e3779b97f4a7c15n) & ((1n << 64n) - 1n),
        localHash: rnd() < 0.3 ? BigInt(Math.floor(rnd() * 50)) : u64(),
      }));
      chain.push(...blocks.map((b) => ({ ext: b.externalHash, local: b.localHash })));
      out.push({ ...head, kind: "stored", parentHash: parent, blocks });
    }
  }
  return out;
}

/** A canonical, order-free rendering of an index dump, for equality checks. */
export function canonicalDump(events: Iterable<IndexEvent>): string[] {
  const lines: string[] = [];
  for (const e of events) {
    const w = `${e.workerId}:${e.dpRank}@${e.eventId}`;
    if (e.kind === "stored") {
      let parent = e.parentHash;
      for (const b of e.blocks) {
        lines.push(`${w} ${parent ?? "-"}>${b.externalHash}=${b.localHash}${b.sequenceHash === undefined ? "" : `~${b.sequenceHash}`}`);
        parent = b.externalHash;
      }
    } else lines.push(`${w} ${e.kind}`);
  }
  return lines.sort();
}

/** The index `events` build when applied directly (the reference). */
export function referenceDump(events: readonly IndexEvent[]): string[] {
  const index = new PrefixIndex();
  for (const e of events) index.apply(e);
  return canonicalDump(index.dump());
}

/**
 * Registers a suite's hooks: before it, one JetStream nats-server and a client
 * connection (handed to `ready`); after it, the routers the suite started, the
 * client and the server are closed, in that order.
 */
/** NATS mode on one server for `endpoint`: stream ingest, event plane and discovery on, no sync or snapshots. */
export function natsModeOptions(urls: string, endpoint: string, over: Partial<NatsModeOptions> = {}): NatsModeOptions {
  return {
    connect: { urls },
    endpoint,
    replicaSync: false,
    snapshotThreshold: 0,
    resetStates: false,
    streamReplicas: 1,
    eventPlane: true,
    discovery: true,
    ...over,
  };
}

export function natsSuite(routers: { close(): Promise<void> }[], ready: (nats: NatsCluster, nc: NatsConnection) => void): void {
  let nats: NatsCluster | undefined;
  let nc: NatsConnection | undefined;
  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.urls });
    ready(nats, nc);
  });
  after(async () => {
    for (const r of routers) await r.close().catch(() => undefined);
    await nc?.close();
    await nats?.stop();
  });
}

