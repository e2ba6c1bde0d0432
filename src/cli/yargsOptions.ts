// What the command line needs from yargs' option table: a flag's spellings,
// and whether the user typed it.

/** The parts of yargs' (untyped) `getOptions()` this needs. */
export interface YargsOptions {
  key: Record<string, unknown>;
  alias: Record<string, string[]>;
  boolean: string[];
  number: string[];
  array: string[];
}

export const camel = (flag: string) => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** The flag's name as declared (its first spelling) and every alias. */
export function spellings(options: YargsOptions, flag: string): string[] {
  const canonical = Object.keys(options.alias).find((k) => k === flag || options.alias[k].includes(flag)) ?? flag;
  return [canonical, ...(options.alias[canonical] ?? []).filter((n) => n !== camel(canonical))];
}

/** Whether any spelling of the flag is on the command line (`--flag`, `--flag=v`, `--no-flag`). */
export function onCommandLine(names: readonly string[], cliArgs: readonly string[]): boolean {
  return cliArgs.some((arg) => names.some((n) => new RegExp(`^--(no-)?(${n}|${camel(n)})(=|$)`).test(arg)));
}

/** What the user typed for a flag on the command line (`--flag v` or `--flag=v`), if they did. */
export function typedValue(names: readonly string[], cliArgs: readonly string[]): string | undefined {
  for (let i = 0; i < cliArgs.length; i++) {
    for (const n of names) {
      for (const spelled of [n, camel(n)]) {
        if (cliArgs[i] === `--${spelled}`) return cliArgs[i + 1];
        if (cliArgs[i].startsWith(`--${spelled}=`)) return cliArgs[i].slice(spelled.length + 3);
      }
    }
  }
  return undefined;
}
