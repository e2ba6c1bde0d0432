// `kv-router worker register`: registers a worker in the endpoint's NATS KV
// discovery bucket and keeps its key fresh until stopped (Ctrl-C deletes
// the key, so routers drop the worker at once). With --once it writes the
// key a single time and exits: the worker then lapses after --ttl unless
// something re-runs it.
import type { Argv, CommandModule } from "yargs";
import { log } from "../util/log.js";
import { connectNats, connectOptionsFromFlags } from "../nats/connection.js";
import { registerWorker } from "../discovery/natsKv.js";
import { natsNames } from "../protocols/natsNames.js";

function registerOptions<T>(y: Argv<T>) {
  return y
    .option("nats-url", { type: "string", demandOption: true, describe: "NATS server URL(s), comma-separated" })
    .option("nats-user", { type: "string" })
    .option("nats-password", { type: "string" })
    .option("nats-token", { type: "string" })
    .option("nats-creds", { type: "string", describe: "NATS .creds file" })
    .option("nats-tls-ca", { type: "string" })
    .option("nats-tls-cert", { type: "string" })
    .option("nats-tls-key", { type: "string" })
    .option("endpoint", { type: "string", default: "dynamo.backend.generate", describe: "namespace.component.endpoint the worker serves" })
    .option("worker-id", { type: "string", demandOption: true, describe: "The worker's id (u64, decimal)" })
    .option("dp-ranks", { type: "string", default: "0", describe: "Comma-separated data-parallel ranks" })
    .option("ttl", { type: "number", default: 10, describe: "Seconds the registration lives without a refresh" })
    .option("grpc-address", { type: "string", describe: "Optional address the worker serves gRPC on" })
    .option("zmq-address", { type: "string", describe: "Optional address of the worker's ZeroMQ KV event feed" })
    .option("instance", { type: "string", describe: "Key of this worker instance (default: the worker id)" })
    .option("once", { type: "boolean", default: false, describe: "Write the key once and exit" })
    .check((a) => {
      if (!/^\d+$/.test(a.workerId as string) || BigInt(a.workerId as string) >= 1n << 64n) throw new Error("--worker-id must be a u64");
      if (!/^\d+(,\d+)*$/.test(a.dpRanks as string)) throw new Error("--dp-ranks must be comma-separated integers");
      const ttl = a.ttl as number;
      if (!Number.isFinite(ttl) || ttl <= 0 || ttl > 86_400) throw new Error("--ttl must be in (0, 86400] seconds");
      natsNames(a.endpoint as string); // throws on a malformed endpoint
      return true;
    });
}

type RegisterArgs = Awaited<ReturnType<ReturnType<typeof registerOptions>["parse"]>>;

async function register(argv: RegisterArgs): Promise<void> {
  const nc = await connectNats(connectOptionsFromFlags(argv, `kv-router-worker-${argv.workerId}`));
  const reg = await registerWorker(
    nc,
    argv.endpoint,
    {
      workerId: BigInt(argv.workerId),
      dpRanks: argv.dpRanks.split(",").map(Number),
      ttlMs: Math.round(argv.ttl * 1000),
      grpcAddress: argv.grpcAddress,
      zmqAddress: argv.zmqAddress,
    },
    { instance: argv.instance },
  );
  const bucket = natsNames(argv.endpoint).discoveryBucket;
  process.stdout.write(`registered worker ${argv.workerId} as key "${reg.key}" in bucket ${bucket}\n`);
  if (argv.once) {
    reg.stopRefreshing();
    await nc.drain();
    return;
  }
  const stop = (signal: string) => {
    log.info("deregistering worker", { signal, worker_id: argv.workerId });
    reg
      .deregister()
      .catch((err) => log.warn("deregister failed", { error: String(err) }))
      .finally(() => nc.drain().finally(() => process.exit(0)));
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
}

export const workerCommand: CommandModule = {
  command: "worker",
  describe: "Worker-side helpers for NATS mode",
  builder: (y) =>
    y
      .command("register", "Register a worker in the endpoint's NATS discovery bucket and keep it alive", registerOptions, (argv) =>
        register(argv as RegisterArgs),
      )
      .demandCommand(1, "name a worker command, e.g. `kv-router worker register`"),
  handler: () => undefined,
};
