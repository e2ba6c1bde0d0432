// Test support: `kv-router serve`'s real command-line parser (block size 16 unless given
// later), its errors thrown instead of exiting, and the message a command line stops with.
import assert from "node:assert/strict";
import yargs from "yargs";
import { routerConfigFrom } from "../../src/cli/config.js";
import { serveOptions } from "../../src/cli/options.js";

export async function parseServe(args: string[]) {
  return serveOptions(yargs(["--block-size", "16", ...args])).strict().exitProcess(false).fail((msg, err) => {
    throw err ?? new Error(msg);
  }).parse();
}

/** The router settings a command line gives. */
export const routerOf = async (args: string[]) => routerConfigFrom(await parseServe(args));

/** The error a command line stops with (fails the test when it is accepted). */
export async function refusal(args: string[]): Promise<string> {
  try {
    await parseServe(args);
  } catch (err) {
    return (err as Error).message;
  }
  assert.fail(`accepted: ${args.join(" ")}`);
}
