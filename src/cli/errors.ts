// How the command line tells a person what went wrong: one line per problem on
// stderr, `kv-router: ...`, naming the flag, variable, file or resource and the
// fix, then a non-zero exit (2 for bad input, 1 when a resource refused us).
// No --help dump and no stack trace unless KV_ROUTER_LOG=debug.
import { ListenError, SourceStartError } from "../app/startupErrors.js";
import { logLevel } from "../util/log.js";
import { type YargsOptions, camel, spellings } from "./yargsOptions.js";

/** A problem with what the user gave (flags, variables, config file), already worded for them. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
  }
}

/** Where flag values not on the command line came from, so messages can say (DYN_ variable or --config file). */
export class InputSources {
  /** flag (as declared) → the DYN_ variable that set it. */
  readonly variables = new Map<string, string>();
  configFile?: string;
  /** What the config file set, keys as written there. */
  config: Record<string, unknown> = {};

  /** " (from DYN_X)" / " (from FILE)" for a flag (any of its spellings) set outside the command line, else "". */
  origin(spellings: readonly string[]): string {
    for (const name of spellings) {
      const variable = this.variables.get(name);
      if (variable !== undefined) return ` (from ${variable})`;
    }
    if (this.configKey(spellings) !== undefined) return ` (from ${this.configFile})`;
    return "";
  }

  /** The key (one of the flag's spellings) under which the config file set the flag, if it did. */
  configKey(spellings: readonly string[]): string | undefined {
    return spellings.flatMap((n) => [n, camel(n)]).find((k) => k in this.config);
  }
}

/** What a failed start-up needs to name its flags. */
export interface StartupContext {
  host: string;
  natsUrl?: string;
}

const LISTENER_FLAGS: Record<string, { flag: string; off?: string }> = {
  gRPC: { flag: "--grpc-port" },
  metrics: { flag: "--metrics-port", off: "-1 turns /metrics off" },
};

/** One line for an error that stopped the router from starting. */
export function describeStartupError(err: unknown, ctx: StartupContext): { line: string; exitCode: number } {
  if (err instanceof CliError) return { line: err.message, exitCode: err.exitCode };
  if (err instanceof ListenError) return { line: listenLine(err), exitCode: 1 };
  if (err instanceof SourceStartError) return { line: sourceLine(err, ctx), exitCode: 1 };
  return { line: `could not start: ${messageOf(err)}`, exitCode: 1 };
}

function listenLine(err: ListenError): string {
  const known = LISTENER_FLAGS[err.listener];
  const flag = known?.flag ?? `the ${err.listener} port`;
  const how = `pick another with ${flag} (0 picks a free one${known?.off ? "; " + known.off : ""})`;
  switch (err.code) {
    case "EADDRINUSE":
      return `${flag} ${err.port} is in use on ${err.host} (EADDRINUSE); ${how}`;
    case "EACCES":
      return `${flag} ${err.port} needs privileges on ${err.host} (EACCES); ${how}, above 1023`;
    case "EADDRNOTAVAIL":
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `--host ${err.host} is not an address of this machine (${err.code}); fix --host (0.0.0.0 listens on every interface)`;
    default:
      return `${err.listener} cannot listen on ${err.host}:${err.port}: ${messageOf(err.cause)}`;
  }
}

function sourceLine(err: SourceStartError, ctx: StartupContext): string {
  const cause = err.cause;
  const message = messageOf(cause);
  if (err.source !== "nats") return `the ${err.source} event source could not start: ${message}`;
  const at = `NATS at ${ctx.natsUrl ?? "?"}`;
  const code = (cause as { cause?: { code?: string } } | undefined)?.cause?.code ?? (cause as { code?: string } | undefined)?.code;
  if (/authori[sz]ation|authentication|permissions violation/i.test(message)) {
    return `${at} refused our credentials (${message}); check --nats-user/--nats-password, --nats-token or --nats-creds`;
  }
  if (/tls|certificate|ssl/i.test(message)) {
    return `TLS to ${at} failed (${message}); check --nats-tls-ca, --nats-tls-cert and --nats-tls-key`;
  }
  if (/jetstream not enabled|jetstream.*(not available|unavailable)/i.test(message)) {
    return `${at} has no JetStream (${message}); start nats-server with -js`;
  }
  if (code !== undefined || /connection refused|timeout|timed out|ENOTFOUND|unreachable/i.test(message)) {
    return `cannot reach ${at} (${message}${code && !message.includes(code) ? ", " + code : ""}); start nats-server there or fix --nats-url`;
  }
  return `NATS mode could not start (${at}): ${message}`;
}

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Prints `kv-router: LINE` (each line of a multi-line message) and exits; the stack only at KV_ROUTER_LOG=debug. */
export function exitWith(lines: string, exitCode: number, err?: unknown): never {
  for (const line of lines.split("\n")) if (line.trim() !== "") process.stderr.write(`kv-router: ${line}\n`);
  if (logLevel() === "debug" && err instanceof Error && err.stack) process.stderr.write(err.stack + "\n");
  process.exit(exitCode);
}

/** Ends the process for any error that reached the top of the command line. */
export function exitOnError(err: unknown, ctx: StartupContext = { host: "" }): never {
  if (err instanceof CliError) exitWith(err.message, err.exitCode, err);
  const { line, exitCode } = describeStartupError(err, ctx);
  exitWith(line, exitCode, err);
}

const UNKNOWN = /^Unknown arguments?: (.*)$/;
const MISSING = /^Missing required arguments?: (.*)$/;

/**
 * yargs' `.fail()` handler: its messages (unknown flags, missing ones, `.check()` problems) as
 * one line each, saying where a value came from when it was not the command line.
 */
export function failHandler(sources: InputSources, optionsNow: () => YargsOptions) {
  return (msg: string | null, err: Error | undefined): never => {
    if (err !== undefined && !(msg && err.message === msg)) exitOnError(err);
    const options = optionsNow();
    const lines = (msg ?? "").split("\n");
    const unknown = UNKNOWN.exec(lines[0]);
    if (unknown) exitWith(unknownLines(unknown[1], sources, Object.keys(options.key)), 2);
    const missing = MISSING.exec(lines[0]);
    if (missing) {
      const why = lines.slice(1).join(" ").trim();
      exitWith(missing[1].split(", ").map((f) => `--${f} is required${why ? `: ${why}` : ""}`).join("\n"), 2);
    }
    const annotated = lines.map((line) => line.replace(/^--([a-z0-9-]+)(.*)$/, (all, flag: string) => all + sources.origin(spellings(options, flag))));
    exitWith(annotated.join("\n"), 2);
  };
}

function unknownLines(list: string, sources: InputSources, known: string[]): string {
  // yargs lists a dashed name and its camelCase twin; keep one.
  const names = list.split(", ").filter((n, _, all) => !(/[A-Z]/.test(n) && all.includes(n.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()))));
  return names
    .map((name) => {
      if (name in sources.config) {
        return `${sources.configFile}: unknown setting "${name}" (settings are the flag names without --; kv-router --help lists them)`;
      }
      const near = nearest(name, known);
      return `unknown flag --${name}${near ? `; did you mean --${near}?` : ""} (kv-router --help lists every flag)`;
    })
    .join("\n");
}

/** The known flag closest to a typo, if it is close. */
function nearest(name: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 4)) + 1;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}
