// Dynamo's conditional disaggregation, approximate retention and --load-aware
// flags through the real command-line parser (issue 22): values, defaults and
// start-up refusals as Dynamo's kv_router_args.py / frontend_args.py give them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { routerConfigFrom, startupWarnings } from "../src/cli/config.js";
import { parseServe as parse, refusal, routerOf } from "./support/cliParse.js";


describe("--router-conditional-disagg", () => {
  it("off by default; on with Dynamo's defaults (isl_bounding, 2048, 0.7, no decode gate), without a warning", async () => {
    assert.equal((await routerOf([])).conditionalDisagg!.enabled, false);
    const args = ["--router-conditional-disagg"];
    const argv = await parse(args);
    assert.deepEqual(routerConfigFrom(argv).conditionalDisagg, { enabled: true, policy: "isl_bounding", effIslThreshold: 2048, effIslRatioThreshold: 0.7 });
    assert.deepEqual(startupWarnings(argv, args, {}).filter((w) => /conditional/.test(w)), [], "implemented: no 'not supported' warning");
  });

  it("reads Dynamo's JSON config; the load policies' prefill busy line defaults to --router-queue-threshold", async () => {
    const json = JSON.stringify({ policy: "isl_or_load", eff_isl_threshold: 512, eff_isl_ratio_threshold: 0.5, decode_busy_threshold: 0.9 });
    const s = (await routerOf(["--router-conditional-disagg", "--router-conditional-disagg-config", json, "--router-queue-threshold", "2"])).conditionalDisagg;
    assert.deepEqual(s, { enabled: true, policy: "isl_or_load", effIslThreshold: 512, effIslRatioThreshold: 0.5, decodeBusyThreshold: 0.9, prefillBusyThreshold: 2 });
    const own = JSON.stringify({ policy: "prefill_load", prefill_busy_threshold: 0.25 });
    assert.equal((await routerOf(["--router-conditional-disagg", "--router-conditional-disagg-config", own])).conditionalDisagg!.prefillBusyThreshold, 0.25);
  });

  it("refuses what Dynamo refuses, naming the flag and field", async () => {
    const cfg = (o: unknown) => ["--router-conditional-disagg", "--router-conditional-disagg-config", JSON.stringify(o)];
    assert.match(await refusal(["--router-conditional-disagg-config", "{}"]), /--router-conditional-disagg-config requires --router-conditional-disagg/);
    assert.match(await refusal(["--router-conditional-disagg", "--router-conditional-disagg-config", "[1]"]), /must be a JSON object/);
    assert.match(await refusal(cfg({ polcy: "x" })), /unknown field\(s\): polcy/);
    assert.match(await refusal(cfg({ policy: "cache_or_load" })), /policy must be one of 'isl_bounding', 'prefill_load', 'isl_or_load'/);
    assert.match(await refusal(cfg({ eff_isl_threshold: 1.5 })), /eff_isl_threshold must be an integer >= 0/);
    assert.match(await refusal(cfg({ eff_isl_ratio_threshold: 1.5 })), /eff_isl_ratio_threshold must be a number in \[0.0, 1.0\]/);
    assert.match(await refusal(cfg({ decode_busy_threshold: -1 })), /decode_busy_threshold must be a number >= 0/);
    assert.match(await refusal(["--router-conditional-disagg", "--no-kv-events"]), /requires KV events/);
    assert.match(await refusal(["--router-conditional-disagg", "--load-aware"]), /requires KV events/);
  });
});

describe("--router-approximate-cache-policy", () => {
  it("ttl by default, lru with --no-kv-events; lru with KV events stops start-up, as in Dynamo", async () => {
    assert.equal((await routerOf([])).approxCachePolicy, "ttl");
    assert.equal((await routerOf(["--no-kv-events", "--router-approximate-cache-policy", "lru"])).approxCachePolicy, "lru");
    assert.equal((await routerOf(["--load-aware", "--router-approximate-cache-policy", "lru"])).approxCachePolicy, "lru");
    assert.match(await refusal(["--router-approximate-cache-policy", "lru"]), /lru requires --no-kv-events/);
    assert.match(await refusal(["--no-kv-events", "--router-approximate-cache-policy", "fifo"]), /Invalid values/);
  });
});

describe("--load-aware", () => {
  it("sets what Dynamo's _LOAD_AWARE_KWARG_OVERRIDES set, over the flags given", async () => {
    const c = await routerOf(["--load-aware", "--router-kv-overlap-score-credit", "2", "--router-predicted-ttl-secs", "5", "--router-assume-kv-reuse"]);
    assert.deepEqual(
      [c.overlapScoreCredit, c.useKvEvents, c.trackActiveBlocks, c.assumeKvReuse, c.trackPrefillTokens, c.predictedTtlMs],
      [0, false, true, false, true, 0],
    );
  });
});
