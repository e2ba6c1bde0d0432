// Test support: a real etcd (Debian's etcd-server) on free loopback ports with
// a temporary data dir. stop() kills it and removes the dir; callers put it in
// an after() hook. restart() brings it back on the same ports and data (the
// keys survive; leases whose TTL ran out while it was down are gone).
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./natsServer.js";
import { waitFor } from "./wait.js";

export interface EtcdServer {
  /** Client URL, e.g. http://127.0.0.1:23790 (what ETCD_ENDPOINTS takes). */
  url: string;
  /** Kills etcd (SIGKILL, like a crash); its data dir stays for restart(). */
  kill(): Promise<void>;
  /** Freezes etcd (SIGSTOP): its connections stay open but nothing answers, like a hung host; resume() thaws it. */
  pause(): void;
  resume(): void;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(port, "127.0.0.1");
    sock.once("connect", () => (sock.destroy(), resolve(true)));
    sock.once("error", () => resolve(false));
  });
}

/** `args`: more etcd flags, e.g. ["--max-request-bytes", "8388608"] for values over its 1.5 MiB default. */
export async function startEtcd(args: string[] = []): Promise<EtcdServer> {
  const dir = mkdtempSync(join(tmpdir(), "kvr-etcd-"));
  let [clientPort, peerPort] = [await freePort(), await freePort()];
  let url = `http://127.0.0.1:${clientPort}`;
  let peer = `http://127.0.0.1:${peerPort}`;
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stderr = "";

  const launch = async () => {
    const p = spawn(
      "etcd",
      [
        "--name", "default",
        "--data-dir", join(dir, "data"),
        "--listen-client-urls", url,
        "--advertise-client-urls", url,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", `default=${peer}`,
        "--log-level", "error",
        ...args,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    p.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    proc = p;
    exited = new Promise((resolve) => p.once("exit", () => resolve()));
    try {
      const died = exited.then(() => Promise.reject(new Error(`etcd exited before serving on port ${clientPort}`)));
      died.catch(() => {});
      await Promise.race([waitFor(() => portOpen(clientPort), `etcd on port ${clientPort}`, 15_000), died]);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${stderr}`);
    }
  };
  const kill = async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    await exited;
  };
  // A free port can be taken before etcd binds it (other processes on the machine): new ports, up to 3 tries.
  for (let attempt = 1; ; attempt++) {
    try {
      await launch();
      break;
    } catch (err) {
      if (attempt === 3 || !/address already in use/.test(stderr)) throw err;
      await kill();
      stderr = "";
      [clientPort, peerPort] = [await freePort(), await freePort()];
      url = `http://127.0.0.1:${clientPort}`;
      peer = `http://127.0.0.1:${peerPort}`;
    }
  }
  return {
    url,
    kill,
    pause: () => proc?.kill("SIGSTOP"),
    resume: () => proc?.kill("SIGCONT"),
    restart: launch,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
