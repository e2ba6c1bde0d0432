// The README's curl section, run as written against the real CLI: every
// command of the block after the "run as written" marker is executed with sh
// (only the ports differ: the router takes free ones), and its output must be
// the "# →" line under it.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { type RouterProcess, spawnRouter } from "./support/cliProcess.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const MARKER = "<!-- The commands below are run as written";

interface Example {
  command: string;
  expected: string;
}

/** The README's tested block: commands (possibly several lines) each followed by a "# →" output line. */
export function readmeExamples(readme: string): Example[] {
  const at = readme.indexOf(MARKER);
  assert.ok(at >= 0, "README has the tested curl block");
  const start = readme.indexOf("```sh\n", at) + 6;
  const block = readme.slice(start, readme.indexOf("\n```", start));
  const out: Example[] = [];
  let current: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("# → ")) {
      out.push({ command: current.join("\n"), expected: line.slice(4) });
      current = [];
    } else if (current.length > 0 || (line.trim() !== "" && !line.startsWith("#"))) {
      current.push(line);
    }
  }
  assert.equal(current.length, 0, `a README command has no "# →" output line: ${current.join("\n")}`);
  return out;
}

let router: RouterProcess;
let httpPort: number;

before(async () => {
  router = await spawnRouter(["--block-size", "4", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "-1"]);
  for (let i = 0; i < 400 && !/kv-router http listening on \S+:(\d+)\n/.test(router.stdout()); i++) await new Promise((r) => setTimeout(r, 25));
  httpPort = Number(/kv-router http listening on \S+:(\d+)\n/.exec(router.stdout())![1]);
});
after(async () => {
  await router.stop();
});

describe("README curl examples", () => {
  it("print what the README says they print", async () => {
    const examples = readmeExamples(readFileSync(`${REPO}/README.md`, "utf8"));
    assert.ok(examples.length >= 6);
    const grpcPort = router.grpcAddress.split(":")[1];
    for (const { command, expected } of examples) {
      const run = command.replaceAll("localhost:8080", `127.0.0.1:${httpPort}`).replaceAll("127.0.0.1:50051", `127.0.0.1:${grpcPort}`);
      const { stdout } = await promisify(execFile)("sh", ["-c", run], { cwd: REPO });
      if (expected.startsWith("{")) assert.deepEqual(JSON.parse(stdout), JSON.parse(expected), command);
      else assert.equal(stdout.trim(), expected, command);
    }
  });
});
