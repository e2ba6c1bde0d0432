// kv-router command line: `kv-router [serve]` runs the router; `kv-router hash`
// prints Dynamo-compatible block hashes for checking an engine's.
import { availableParallelism } from "node:os";
import { format } from "node:util";
import * as grpc from "@grpc/grpc-js";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { hashPrompt, hashPromptEagle } from "../hashing/blockHash.js";
import { workerCommand } from "./workerCommand.js";
import { startServer } from "../app/startServer.js";
import { installLastResortHandlers } from "../util/lastResort.js";
import { COST_POLICY } from "../scheduler/policies.js";
import { LOG_LEVELS, log, parseLogLevel } from "../util/log.js";
import { configFileParser } from "./configFile.js";
import { describe } from "./describe.js";
import { normalizeDynEnv } from "./dynEnv.js";
import { CliError, InputSources, exitOnError, exitWith, failHandler } from "./errors.js";
import { fixFlagValues } from "./flagValues.js";
import type { YargsOptions } from "./yargsOptions.js";
import { serveOptions } from "./options.js";
import { serverOptionsFrom, startupWarnings } from "./config.js";
import { simulateCommand, simulateOptions } from "./simulateCommand.js";
import { sharedReadsByDefault } from "../indexer/sharedNodes.js";

if (parseLogLevel(process.env.KV_ROUTER_LOG) === undefined) {
  exitWith(`KV_ROUTER_LOG="${process.env.KV_ROUTER_LOG}" is not a log level; use one of ${LOG_LEVELS.join(", ")}`, 2);
}
const sources = new InputSources();

// grpc-js prints its errors as bare "E ..." lines on stderr; they go into the JSON log
// instead, at debug level until the router serves (a failed bind is reported as one line below).
let serving = false;
grpc.setLogger({ error: (...args: unknown[]) => (serving ? log.warn : log.debug)("grpc-js: " + format(...args)) });

async function serve(argv: Parameters<typeof serverOptionsFrom>[0]): Promise<void> {
  for (const flag of ["routerReplicaSync", "routerResetStates"] as const) {
    if (argv[flag] && !argv.natsUrl) log.warn(`--${flag.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())} needs NATS mode (--nats-url); ignored`);
  }
  for (const warning of startupWarnings(argv)) log.warn(warning);
  const opts = serverOptionsFrom(argv);
  const running = await startServer(opts).catch((err: unknown) => exitOnError(err, { host: argv.host, natsUrl: argv.natsUrl }));
  serving = true;
  // Only once serving: a start-up failure must still end the process.
  installLastResortHandlers();
  // Before the lines that say it serves: a supervisor that stops it as soon as it reads them gets a clean shutdown.
  let stopping = false;
  const shutdown = (signal: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { signal });
    running.stop().then(
      () => process.exit(exitCode),
      (err) => {
        log.error("shutdown failed", { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  // Fail fast (docs/indexer.md, "A shard thread that dies"): calls in flight are answered, then the process exits non-zero for its supervisor to restart it.
  void running.failed.then((err) => {
    log.error("the router cannot serve any more; stopping, to exit with code 1 for a restart", { error: err.message });
    shutdown(err.constructor.name, 1);
  });
  process.stdout.write(`kv-router listening on ${running.host}:${running.grpcPort}\n`);
  if (running.httpPort !== undefined) process.stdout.write(`kv-router http listening on ${running.host}:${running.httpPort}\n`);
  if (running.eppPort !== undefined) process.stdout.write(`kv-router epp listening on ${running.host}:${running.eppPort}\n`);
  log.info("kv-router started", {
    grpc: `${running.host}:${running.grpcPort}`,
    metrics: running.metricsPort === undefined ? "off" : `${running.host}:${running.metricsPort}/metrics`,
    tracing: opts.tracing === undefined ? "off" : `${opts.tracing.endpoint} as ${opts.tracing.serviceName}`,
    block_size: opts.router.blockSize,
    overlap_score_credit: opts.router.overlapScoreCredit,
    overlap_score_credit_decay: opts.router.overlapScoreCreditDecay,
    prefill_load_scale: opts.router.prefillLoadScale,
    decode_active_request_weight: opts.router.decodeActiveRequestWeight,
    router_temperature: opts.router.temperature,
    kv_events: opts.router.useKvEvents,
    track_active_blocks: opts.router.trackActiveBlocks,
    worker_selection_policy: opts.router.workerSelectionPolicy ?? COST_POLICY,
    // The thread defaults follow the core count (options.ts): say what this machine got.
    cores: availableParallelism(),
    ingest_threads: opts.ingestThreads ?? 0,
    indexer_shards: opts.indexerShards ?? 0,
    // Where IngestKvEvents messages are decoded and hashed (docs/indexer.md, "Raw messages on the shard threads").
    ingest_decoding: opts.ingestThreads ? `${opts.ingestThreads} decoder threads` : (opts.indexerShards ?? 0) > 0 ? "on the index shard threads" : "main thread",
    // How queries reach the shards (docs/indexer.md, "Queries read the shards' memory").
    index_queries: (opts.indexerShards ?? 0) === 0 ? "main thread" : sharedReadsByDefault() ? "read from the shards' shared memory" : "asked of the shard threads (shared reads need x86-64)",
  });
}

function parseTokens(text: string): number[] {
  return text
    .split(",")
    .filter((s) => s.trim() !== "")
    .map((s) => {
      const n = Number(s.trim());
      if (s.trim() === "" || !Number.isInteger(n) || n < 0 || n > 0xffffffff) {
        throw new CliError(`--tokens: "${s.trim()}" is not a token id; give integers from 0 to 4294967295 separated by commas, e.g. --tokens 1,2,3,4`);
      }
      return n;
    });
}

const cli = yargs(hideBin(process.argv));
const optionsNow = () => (cli as unknown as { getOptions(): YargsOptions }).getOptions();
try {
  await cli
  .scriptName("kv-router")
  .env("DYN")
  .middleware(
    (argv: Record<string, unknown>, y?: unknown) =>
      normalizeDynEnv(argv, y, process.env, process.argv.slice(2), (flag, variable) => sources.variables.set(flag, variable)),
    true,
  )
  .middleware(fixFlagValues(sources), true)
  .command(
    "$0",
    "Run the router (the default command)",
    (y) => serveOptions(y).config("config", "YAML or JSON file of flags (names as here, without --); flags and DYN_ variables override it", configFileParser(sources)),
    (argv) => serve(argv),
  )
  .command(
    "hash",
    "Print Dynamo-compatible local and sequence block hashes (decimal) as JSON",
    (y) =>
      y
        .option("block-size", { type: "number", demandOption: true, describe: "Tokens per block" })
        .option("tokens", { type: "string", demandOption: true, describe: "Comma-separated token ids" })
        .option("lora-name", { type: "string", default: "", describe: "LoRA adapter name (changes every hash)" })
        .option("cache-namespace", { type: "string", default: "", describe: "Cache namespace (tenant), as Dynamo's cache_namespace (changes every hash)" })
        .option("eagle", { type: "boolean", default: false, describe: "Eagle windows: each block hashes block-size + 1 tokens (stride block-size)" })
        .check((a) => {
          const b = a.blockSize as number;
          if (!Number.isInteger(b) || b < 1) throw new Error(`--block-size must be a positive integer`);
          return true;
        }),
    (argv) => {
      const tokens = parseTokens(argv.tokens);
      const hashes = (argv.eagle ? hashPromptEagle : hashPrompt)(tokens, argv.blockSize, argv.loraName, argv.cacheNamespace);
      const out = {
        block_size: argv.blockSize,
        tokens: tokens.length,
        // Tokens in no block (an Eagle window also reads the next block's first token).
        ignored_tail_tokens: hashes.local.length === 0 ? tokens.length : tokens.length - hashes.local.length * argv.blockSize - (argv.eagle ? 1 : 0),
        local_hashes: hashes.local.map(String),
        sequence_hashes: hashes.sequence.map(String),
      };
      process.stdout.write(JSON.stringify(out, null, 2) + "\n");
    },
  )
  .command(
    "describe [name]",
    "Show the gRPC methods, or one method's (or message's) request and response fields",
    (y) => y.positional("name", { type: "string", describe: "A method (FindBestWorker) or message (KvEvent) name" }),
    (argv) => {
      process.stdout.write(describe(argv.name) + "\n");
    },
  )
  .command(workerCommand)
  .command("simulate", "Replay a Mooncake trace on simulated workers and compare routing policies", simulateOptions, (argv) => simulateCommand(argv))
  .strict()
  .help()
  .showHelpOnFail(false)
  .fail(failHandler(sources, optionsNow))
  .parseAsync();
} catch (err) {
  exitOnError(err);
}
