// DYN_<FLAG> environment variables, the way Dynamo deployments set them.
// yargs' `.env("DYN")` reads them, but some things need fixing up before
// validation:
// - Dynamo pods carry DYN_* variables meant for other programs (DYN_LOG,
//   DYN_NAMESPACE, DYN_ROUTER_MODE, ...); under `.strict()` each one would
//   stop the router as an "unknown argument". Those are ignored.
// - yargs turns only the exact string "true" into true, so
//   DYN_ROUTER_TRACK_ACTIVE_BLOCKS=1 would silently mean false. Boolean
//   variables accept 1/0, true/false, yes/no, on/off, and anything else is an error.
// - A number variable that is not a number (DYN_ROUTER_TEMPERATURE=abc) would
//   reach validation as NaN, with the variable's name lost: it is an error here.
// - Two variables for one flag (DYN_ROUTER_BLOCK_SIZE and DYN_KV_CACHE_BLOCK_SIZE)
//   that disagree: yargs would pick one silently; it is an error naming both.
// A flag given on the command line still wins over its variables.
import { CliError } from "./errors.js";
import { type YargsOptions, camel, onCommandLine, spellings } from "./yargsOptions.js";

const TRUE = /^(1|true|yes|on)$/i;
const FALSE = /^(0|false|no|off)$/i;

/** One value a variable gives a flag, already read as the flag's type. */
interface EnvValue {
  variable: string;
  raw: string;
  value: unknown;
}

/**
 * yargs middleware (register it global and before validation): applies the rules above to `argv` in place.
 * yargs passes its instance as the second argument. A variable that cannot be read throws a CliError.
 * `record(flag, variable)` hears which variable set each flag, so later messages can name it.
 */
export function normalizeDynEnv(
  argv: Record<string, unknown>,
  yargs?: unknown,
  env: NodeJS.ProcessEnv = process.env,
  cliArgs: readonly string[] = process.argv.slice(2),
  record: (flag: string, variable: string) => void = () => {},
): void {
  const options = (yargs as { getOptions(): YargsOptions }).getOptions();
  const byFlag = new Map<string, EnvValue[]>();
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith("DYN_") || raw === undefined) continue;
    // yargs nests DYN_A__B as {a: {b}}; none of our flags is nested.
    const flag = name.slice(4).split("__")[0].toLowerCase().replace(/_/g, "-");
    if (!(flag in options.key)) {
      delete argv[flag];
      delete argv[camel(flag)];
      continue;
    }
    const names = spellings(options, flag);
    if (onCommandLine(names, cliArgs)) continue;
    const values = byFlag.get(names[0]) ?? [];
    values.push({ variable: name, raw, value: readValue(options, names[0], name, raw) });
    byFlag.set(names[0], values);
  }
  for (const [flag, values] of byFlag) {
    const [first, ...others] = values.sort((a, b) => a.variable.localeCompare(b.variable));
    const same = (v: EnvValue) => (v.value ?? v.raw) === (first.value ?? first.raw);
    const differing = others.find((v) => !same(v));
    if (differing) {
      throw new CliError(
        `${first.variable}="${first.raw}" and ${differing.variable}="${differing.raw}" both set --${flag} and disagree; unset one of them`,
      );
    }
    record(flag, first.variable);
    // Strings (and lists) stay as yargs read them.
    if (first.value !== undefined) for (const n of spellings(options, flag)) argv[n] = argv[camel(n)] = first.value;
  }
}

/** A boolean or number variable read as its flag's type (undefined for other types); throws when it cannot be. */
function readValue(options: YargsOptions, flag: string, variable: string, raw: string): unknown {
  const text = raw.trim();
  if (options.boolean.includes(flag)) {
    if (TRUE.test(text)) return true;
    if (FALSE.test(text)) return false;
    throw new CliError(`${variable}="${raw}" is not a boolean; use true or false (1/0, yes/no, on/off)`);
  }
  if (options.number.includes(flag)) {
    const n = Number(text);
    if (text === "" || !Number.isFinite(n)) throw new CliError(`${variable}="${raw}" is not a number (it sets --${flag})`);
    return n;
  }
  return undefined;
}
