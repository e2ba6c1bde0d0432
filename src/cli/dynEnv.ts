// DYN_<FLAG> environment variables, the way Dynamo deployments set them.
// yargs' `.env("DYN")` reads them, but two things need fixing up before
// validation:
// - Dynamo pods carry DYN_* variables meant for other programs (DYN_LOG,
//   DYN_NAMESPACE, DYN_ROUTER_MODE, ...); under `.strict()` each one would
//   stop the router as an "unknown argument". Those are ignored.
// - yargs turns only the exact string "true" into true, so
//   DYN_ROUTER_TRACK_ACTIVE_BLOCKS=1 would silently mean false. Boolean
//   variables accept 1/0, true/false, yes/no, on/off, and anything else is an error.
// A flag given on the command line still wins over its variable.

/** The parts of yargs' (untyped) `getOptions()` this needs. */
interface YargsOptions {
  key: Record<string, unknown>;
  alias: Record<string, string[]>;
  boolean: string[];
}

const TRUE = /^(1|true|yes|on)$/i;
const FALSE = /^(0|false|no|off)$/i;

const camel = (flag: string) => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/**
 * yargs middleware (register it global and before validation): applies the rules above to `argv` in place.
 * yargs passes its instance as the second argument. A variable that cannot be read ends the process with
 * exit code 1 and a one-line message (yargs would turn an error thrown here into a stack trace).
 */
export function normalizeDynEnv(
  argv: Record<string, unknown>,
  yargs?: unknown,
  env: NodeJS.ProcessEnv = process.env,
  cliArgs: readonly string[] = process.argv.slice(2),
): void {
  const options = (yargs as { getOptions(): YargsOptions }).getOptions();
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("DYN_") || value === undefined) continue;
    // yargs nests DYN_A__B as {a: {b}}; none of our flags is nested.
    const flag = name.slice(4).split("__")[0].toLowerCase().replace(/_/g, "-");
    if (!(flag in options.key)) {
      delete argv[flag];
      delete argv[camel(flag)];
      continue;
    }
    if (!options.boolean.includes(flag)) continue;
    const canonical = Object.keys(options.alias).find((k) => k === flag || options.alias[k].includes(flag)) ?? flag;
    const names = [canonical, ...(options.alias[canonical] ?? [])];
    const onCommandLine = cliArgs.some((arg) =>
      names.some((n) => new RegExp(`^--(no-)?(${n}|${camel(n)})(=|$)`).test(arg)),
    );
    if (onCommandLine) continue;
    let parsed: boolean;
    if (TRUE.test(value.trim())) parsed = true;
    else if (FALSE.test(value.trim())) parsed = false;
    else {
      process.stderr.write(`kv-router: ${name}="${value}" is not a boolean; use true or false (1/0, yes/no, on/off)\n`);
      process.exit(1);
    }
    for (const n of names) argv[n] = argv[camel(n)] = parsed;
  }
}
