// The query path with prompt hashing (issue 21: find_matches with hashing and
// XXH3 of 8,192 tokens), now against the paths it replaced, all in one run:
//
// - before issue 21: the scalar WebAssembly hasher (bench/wasmXxh3Scalar.ts),
//   local and sequence hashes as bigints, CompactIndex.findMatches(bigints);
// - bigints (the code before this change): today's SIMD hasher, sequence
//   hashes as bigints (hashPromptSequence), findMatches(bigints), which turns
//   them back into u32 words;
// - words (now): hashPromptWords (the sequence hashes leave the hasher as u32
//   words) and findMatchesWords, no bigints.
//
// From wire bytes (FindBestWorker's request, as the gRPC service receives it),
// before: token ids decoded into a Uint32Array (promptDecoder.ts without a
// space), then copied into the hasher; now: decoded straight into the
// hasher's memory and hashed there (a PromptSpace).
//
// Variants run in alternating passes over the same prompts (the order
// rotates every pass); each pass gives a p50 per variant; a ratio is the
// median over passes of variant p50 / baseline p50.
import { create, toBinary } from "@bufbuild/protobuf";
import { FindBestWorkerRequestSchema } from "../gen/kvrouter/v1/router_pb.js";
import { hashPromptSequence, hashPromptWords } from "../src/hashing/prompt.js";
import { HashedPrompt } from "../src/hashing/sequenceHashes.js";
import type { CompactIndex } from "../src/indexer/compactIndex.js";
import { decodeFindBestWorkerFast, promptSpace, promptTokens } from "../src/server/promptDecoder.js";
import { type Latency, latency, median, usSince } from "./stats.js";
import { hashPromptScalarWasm } from "./wasmXxh3Scalar.js";

export interface Compared {
  now: Latency;
  baseline: Latency;
  /** Median over passes of now p50 / baseline p50, and its range. */
  ratioP50: number;
  ratioMin: number;
  ratioMax: number;
}

/**
 * Times every variant over the same `n` inputs in alternating passes (the
 * order rotates each pass). Returns each variant's latency over all passes and
 * per-pass p50s.
 */
export function alternate(variants: Record<string, (i: number) => unknown>, n: number, passes: number) {
  const names = Object.keys(variants);
  const samples = new Map(names.map((k) => [k, [] as number[]]));
  const p50s = new Map(names.map((k) => [k, [] as number[]]));
  for (let pass = 0; pass < passes; pass++) {
    for (let j = 0; j < names.length; j++) {
      const name = names[(pass + j) % names.length];
      const run = variants[name];
      const s: number[] = [];
      for (let i = 0; i < n; i++) {
        const t = process.hrtime.bigint();
        run(i);
        s.push(usSince(t));
      }
      samples.get(name)!.push(...s);
      p50s.get(name)!.push(median(s));
    }
  }
  const compare = (now: string, baseline: string): Compared => {
    const ratios = p50s.get(now)!.map((p, i) => p / p50s.get(baseline)![i]);
    return { now: latency(samples.get(now)!), baseline: latency(samples.get(baseline)!), ratioP50: median(ratios), ratioMin: Math.min(...ratios), ratioMax: Math.max(...ratios) };
  };
  return { latency: Object.fromEntries(names.map((k) => [k, latency(samples.get(k)!)])), compare };
}

/** FindBestWorker's request bytes for each prompt (token ids only, as the e2e bench sends them). */
export function wireRequests(prompts: Uint32Array[]): Uint8Array[] {
  return prompts.map((p) => toBinary(FindBestWorkerRequestSchema, create(FindBestWorkerRequestSchema, { tokenIds: Array.from(p) })));
}

/**
 * find_matches with prompt hashing on `index`, and prompt hashing alone, of
 * `prompts` (block `blockSize`): now against the bigint path and the path
 * before issue 21, from token arrays and from wire bytes.
 */
export function runQueryComparison(index: CompactIndex, prompts: Uint32Array[], blockSize: number, passes: number) {
  const wire = wireRequests(prompts);
  const space = promptSpace(blockSize, 1 << 20)!;
  const plainTokens = (i: number) => promptTokens(decodeFindBestWorkerFast(wire[i])!) as Uint32Array;
  const hashedPrompt = (i: number) => promptTokens(decodeFindBestWorkerFast(wire[i], space)!) as HashedPrompt;
  // Every variant must answer the same: checked once before timing.
  for (let i = 0; i < Math.min(20, prompts.length); i++) {
    const want = JSON.stringify([...index.findMatches(hashPromptSequence(prompts[i], blockSize))].sort());
    const words = hashPromptWords(prompts[i], blockSize);
    const h = hashedPrompt(i);
    if (!(h instanceof HashedPrompt)) throw new Error("the hashing decoder did not hash");
    for (const got of [index.findMatchesWords(words.words, words.length), index.findMatchesWords(h.sequence.words, h.sequence.length), index.findMatches(hashPromptScalarWasm(prompts[i], blockSize).sequence)]) {
      if (JSON.stringify([...got].sort()) !== want) throw new Error(`prompt ${i}: the query paths disagree`);
    }
  }
  const n = prompts.length;
  const find = alternate(
    {
      "before issue 21": (i) => index.findMatches(hashPromptScalarWasm(prompts[i], blockSize).sequence),
      bigints: (i) => index.findMatches(hashPromptSequence(prompts[i], blockSize)),
      words: (i) => {
        const s = hashPromptWords(prompts[i], blockSize);
        return index.findMatchesWords(s.words, s.length);
      },
      "wire, before issue 21": (i) => index.findMatches(hashPromptScalarWasm(plainTokens(i), blockSize).sequence),
      "wire, bigints": (i) => index.findMatches(hashPromptSequence(plainTokens(i), blockSize)),
      "wire, words decoded in place": (i) => {
        const s = hashedPrompt(i).sequence;
        return index.findMatchesWords(s.words, s.length);
      },
    },
    n,
    passes,
  );
  const hash = alternate(
    {
      "before issue 21 (local + sequence bigints)": (i) => hashPromptScalarWasm(prompts[i], blockSize),
      "sequence bigints": (i) => hashPromptSequence(prompts[i], blockSize),
      "sequence words": (i) => hashPromptWords(prompts[i], blockSize),
      "wire: decode, before issue 21": (i) => hashPromptScalarWasm(plainTokens(i), blockSize),
      "wire: decode, sequence bigints": (i) => hashPromptSequence(plainTokens(i), blockSize),
      "wire: decode into the hasher, words": (i) => hashedPrompt(i),
      "wire: decode alone": (i) => plainTokens(i),
    },
    n,
    passes,
  );
  return {
    prompts: n,
    passes,
    findMatchesWithHashing: {
      "words vs bigints": find.compare("words", "bigints"),
      "words vs before issue 21": find.compare("words", "before issue 21"),
      "wire: decoded in place vs bigints": find.compare("wire, words decoded in place", "wire, bigints"),
      "wire: decoded in place vs before issue 21": find.compare("wire, words decoded in place", "wire, before issue 21"),
    },
    hashing: {
      "words vs bigints": hash.compare("sequence words", "sequence bigints"),
      "words vs before issue 21": hash.compare("sequence words", "before issue 21 (local + sequence bigints)"),
      "wire: decode + hash in place vs decode + bigints": hash.compare("wire: decode into the hasher, words", "wire: decode, sequence bigints"),
      "wire: decode + hash in place vs before issue 21": hash.compare("wire: decode into the hasher, words", "wire: decode, before issue 21"),
    },
    latency: { findMatchesWithHashing: find.latency, hashing: hash.latency },
  };
}
