// Runs the real kv-router CLI as a child process and finds its ports.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

const REPO = fileURLToPath(new URL("../..", import.meta.url));

export interface CliRun {
  child: ChildProcess;
  /** Everything printed so far. */
  out: { stdout: string; stderr: string };
  exited: Promise<number | null>;
}

/** The environment without the machine's DYN_, Dynamo NATS and ETCD_ENDPOINTS variables (they would configure the router), plus `extra`. */
export function cliEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { KV_ROUTER_LOG: "info" };
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(DYN_|NATS_SERVER$|NATS_AUTH_|ETCD_ENDPOINTS$)/.test(k) && k !== "KV_ROUTER_LOG") env[k] = v;
  }
  return { ...env, ...extra };
}

/** Starts `kv-router ARGS` from the repository's sources; with `openFiles`, under `ulimit -n openFiles`. */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = [], openFiles?: number): CliRun {
  const argv = [...nodeArgs, "--import", "tsx", "src/cli/main.ts", ...args];
  const [command, commandArgs] =
    openFiles === undefined ? [process.execPath, argv] : ["bash", ["-c", `ulimit -n ${openFiles} && exec "$0" "$@"`, process.execPath, ...argv]];
  const child = spawn(command, commandArgs, {
    cwd: REPO,
    env: cliEnv(env),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out = { stdout: "", stderr: "" };
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out.stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out.stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, out, exited };
}

export interface RouterProcess {
  child: ChildProcess;
  grpcAddress: string;
  metricsUrl?: string;
  stdout(): string;
  stderr(): string;
  /** SIGTERM, then wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
}

/** Starts a serving router and waits for its listening line and its start log (which names the metrics port). */
export async function spawnRouter(args: string[], env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = [], openFiles?: number): Promise<RouterProcess> {
  const { child, out } = spawnCli(args, env, nodeArgs, openFiles);
  const deadline = Date.now() + 60_000; // a loaded 2-core machine can take 10-20 s per start
  // The start log reaches stderr after the listening line reaches stdout: wait for both, or metricsUrl races.
  while (!/kv-router listening on (\S+):(\d+)\n/.test(out.stdout) || !out.stderr.includes('"kv-router started"')) {
    if (child.exitCode !== null) throw new Error(`kv-router exited with ${child.exitCode}: ${out.stderr}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`kv-router did not start: ${out.stderr}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const [, , port] = /kv-router listening on (\S+):(\d+)\n/.exec(out.stdout)!;
  const metrics = /"metrics":"[^"]*:(\d+)\/metrics"/.exec(out.stderr);
  return {
    child,
    grpcAddress: `127.0.0.1:${port}`,
    metricsUrl: metrics ? `http://127.0.0.1:${metrics[1]}/metrics` : undefined,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const [code] = await once(child, "exit");
      clearTimeout(timer);
      return code as number | null;
    },
  };
}

/** Reads one unlabelled sample from a Prometheus text page. */
export async function scrape(url: string, name: string): Promise<number> {
  const text = await (await fetch(url)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  if (line === undefined) throw new Error(`metric ${name} not found`);
  return Number(line.split(" ")[1]);
}
