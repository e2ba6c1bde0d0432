// `kv-router --config FILE`: the router's flags as a YAML or JSON mapping (YAML
// reads JSON too), named as on the command line without the dashes
// (`block-size: 64`, `zmq-worker: [...]`). Flags and DYN_ variables override it.
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { CliError, type InputSources } from "./errors.js";

/** yargs' `.config()` parser: reads FILE and records its keys in `sources` (for messages naming it). */
export function configFileParser(sources: InputSources) {
  return (path: string): Record<string, unknown> => {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new CliError(`--config ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    let doc: unknown;
    try {
      doc = parse(text);
    } catch (err) {
      throw new CliError(`--config ${path}: not YAML or JSON: ${(err as Error).message.split("\n")[0].replace(/:$/, "")}`);
    }
    if (doc === null || doc === undefined) doc = {}; // an empty file
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
      throw new CliError(`--config ${path}: must be a mapping of flag names to values (e.g. "block-size: 64")`);
    }
    sources.configFile = path;
    sources.config = doc as Record<string, unknown>;
    return sources.config;
  };
}
