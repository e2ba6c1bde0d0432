// Runs the real kv-router CLI as a child process and finds its ports.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";

export interface RouterProcess {
  child: ChildProcess;
  grpcAddress: string;
  metricsUrl?: string;
  stderr(): string;
  /** SIGTERM, then wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
}

export async function spawnRouter(args: string[], env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<RouterProcess> {
  const child = spawn(process.execPath, [...nodeArgs, "--import", "tsx", "src/cli/main.ts", ...args], {
    env: { ...process.env, KV_ROUTER_LOG: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const deadline = Date.now() + 20_000;
  while (!/kv-router listening on (\S+):(\d+)\n/.test(stdout)) {
    if (child.exitCode !== null) throw new Error(`kv-router exited with ${child.exitCode}: ${stderr}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`kv-router did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const [, , port] = /kv-router listening on (\S+):(\d+)\n/.exec(stdout)!;
  const metrics = /"metrics":"[^"]*:(\d+)\/metrics"/.exec(stderr);
  return {
    child,
    grpcAddress: `127.0.0.1:${port}`,
    metricsUrl: metrics ? `http://127.0.0.1:${metrics[1]}/metrics` : undefined,
    stderr: () => stderr,
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
