// Fuzzing the command line: random mixes of valid and broken flags. Parsing
// either yields options the server can be built from, or fails with a
// message — never an exception of another kind.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import yargs from "yargs";
import { serveOptions } from "../src/cli/options.js";
import { serverOptionsFrom } from "../src/cli/config.js";
import { seededRandom } from "../src/util/random.js";

const CASES = Number(process.env.FUZZ_CASES ?? 400);

const FLAGS: [string, string[]][] = [
  ["--block-size", ["16", "0", "-4", "1.5", "abc", "", "65537", "1e3"]],
  ["--router-block-size", ["64", "NaN"]],
  ["--kv-overlap-score-weight", ["0", "1", "-1", "Infinity", "x"]],
  ["--router-temperature", ["0", "0.5", "-0.1"]],
  ["--router-kv-overlap-score-credit", ["0", "2.5", "-1", "x"]],
  ["--router-prefill-load-scale", ["0", "3", "-0.5"]],
  ["--router-queue-policy", ["fcfs", "wspt", "lifo"]],
  ["--router-queue-threshold", ["0", "1.5", "-2"]],
  ["--router-event-threads", ["1", "4", "0"]],
  ["--router-prefill-load-model", ["aic", "none", "magic"]],
  ["--aic-tp-size", ["2", "two"]],
  ["--no-router-track-output-blocks", []],
  ["--grpc-port", ["0", "50051", "70000", "-2", "port"]],
  ["--metrics-port", ["-1", "0", "9090", "-5"]],
  ["--endpoint", ["a.b.c", "bad", "a..c", "a.b.c.d", ""]],
  ["--max-tokens", ["1", "0", "1048576"]],
  ["--router-ttl-secs", ["120", "0", "-3"]],
  ["--indexer-shards", ["0", "2", "65", "-1"]],
  ["--max-blocks", ["0", "1000", "-1"]],
  ["--zmq-worker", ["1=tcp://127.0.0.1:5557", "x=tcp://h:1", "1=http://h", "=", "1=tcp://h:99999"]],
  ["--nats-url", ["nats://127.0.0.1:4222", "", ",,", "not a url"]],
  ["--tls-cert", ["/nonexistent.pem"]],
  ["--no-kv-events", []],
  ["--no-track-active-blocks", []],
  ["--seed", ["7", "seven"]],
  ["--unknown-flag", ["1"]],
];

describe("fuzzing the command line", () => {
  it(`${CASES} random flag mixes parse or fail with a message`, async () => {
    const rnd = seededRandom(31);
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < CASES; i++) {
      const args: string[] = [];
      const n = 1 + Math.floor(rnd() * 5);
      if (rnd() < 0.7) args.push("--block-size", "16");
      for (let k = 0; k < n; k++) {
        const [flag, values] = FLAGS[Math.floor(rnd() * FLAGS.length)];
        args.push(flag);
        if (values.length > 0) args.push(values[Math.floor(rnd() * values.length)]);
      }
      let failure: string | undefined;
      const parser = serveOptions(yargs(args))
        .strict()
        .exitProcess(false)
        .fail((msg, err) => {
          failure = msg ?? err?.message ?? "failed";
        });
      let argv: Awaited<ReturnType<typeof parser.parse>> | undefined;
      try {
        argv = await parser.parse();
      } catch (err) {
        // yargs rethrows check() failures after calling fail(): they must carry a message.
        failure ??= (err as Error).message;
      }
      if (failure !== undefined) {
        assert.ok(failure.length > 0, `case ${i} ${args.join(" ")}: empty failure message`);
        refused++;
        continue;
      }
      const opts = serverOptionsFrom(argv!);
      assert.ok(Number.isInteger(opts.router.blockSize) && opts.router.blockSize >= 1, `case ${i} ${args.join(" ")}`);
      assert.ok(opts.grpcPort >= 0 && opts.grpcPort <= 65535);
      for (const w of [opts.router.prefillLoadScale, opts.router.overlapScoreCredit, opts.router.decodeActiveRequestWeight]) {
        assert.ok(Number.isFinite(w) && w >= 0, `case ${i} ${args.join(" ")}: cost weight ${w}`);
      }
      accepted++;
    }
    assert.ok(accepted > 0 && refused > 0, `accepted ${accepted}, refused ${refused}`);
  });
});
