// Two fix-ups of what yargs parsed, before validation:
// - a single-value flag given twice (`--block-size 16 ... --block-size 32`, as
//   scripts that append overrides do) becomes an array in yargs; the last one wins;
// - yargs reads `--grpc-port abc` as NaN, and the flag's checks would then say
//   "got NaN": this names the flag and what was given instead.
// (DYN_ variables are checked in dynEnv.ts; config values are named by their file.)
import { CliError, type InputSources } from "./errors.js";
import { type YargsOptions, camel, spellings, typedValue } from "./yargsOptions.js";

export function fixFlagValues(sources: InputSources, cliArgs: readonly string[] = process.argv.slice(2)) {
  return (argv: Record<string, unknown>, yargs?: unknown): void => {
    const options = (yargs as { getOptions(): YargsOptions }).getOptions();
    for (const flag of Object.keys(options.key)) {
      const value = argv[flag];
      if (!Array.isArray(value) || options.array.includes(flag)) continue;
      for (const n of spellings(options, flag)) argv[n] = argv[camel(n)] = value[value.length - 1];
    }
    const problems: string[] = [];
    for (const flag of new Set(options.number.map((n) => spellings(options, n)[0]))) {
      const value = argv[camel(flag)];
      const values = Array.isArray(value) ? value : [value];
      if (values.every((v) => v === undefined || (typeof v === "number" && !Number.isNaN(v)))) continue;
      const names = spellings(options, flag);
      const typed = typedValue(names, cliArgs);
      const configKey = sources.configKey(names);
      if (typed === undefined && configKey !== undefined) {
        problems.push(`--${flag} must be a number, got ${JSON.stringify(sources.config[configKey])} (from ${sources.configFile})`);
      } else {
        problems.push(`--${flag} must be a number, got ${JSON.stringify(typed ?? "nothing")}`);
      }
    }
    if (problems.length > 0) throw new CliError(problems.join("\n"));
  };
}
