// `node --import tsx bench/hashing.run.ts [prompts]`: prompt hashing of 8,192
// tokens (issue 21 §4) in one run, without the index bench's workload: today's
// WebAssembly hasher against the SIMD one before its long path was unrolled
// and pipelined (bench/wasmXxh3Loop.ts), the hasher from before issue 21
// (bench/wasmXxh3Scalar.ts) and the JavaScript fallback. Passes alternate
// (hashingVsBefore); ratios are now / baseline of the p50s. Prompts are
// distinct arrays (64 MB for 2,000), so each is read from memory, not cache,
// as in the index bench.
import { availableParallelism, cpus } from "node:os";
import { hashPromptFast, hashPromptJs } from "../src/hashing/prompt.js";
import { createWasmHasher } from "../src/hashing/wasmXxh3.js";
import { seededRandom } from "../src/util/random.js";
import { hashingVsBefore } from "./indexer.bench.js";
import { latency, usSince } from "./stats.js";
import { hashPromptLoopSimd, hashSequenceLoopSimd } from "./wasmXxh3Loop.js";
import { hashPromptScalarWasm } from "./wasmXxh3Scalar.js";

const count = Number(process.argv[2] ?? 2000);
const rnd = seededRandom(21);
const prompts = Array.from({ length: count }, () => Uint32Array.from({ length: 8192 }, () => Math.floor(rnd() * 128_000)));
console.log(`${availableParallelism()} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}, ${count} prompts of 8,192 tokens`);

const warm = performance.now();
for (let i = 0; performance.now() - warm < 300; i++) {
  const p = prompts[i % count];
  hashPromptFast(p, 64);
  hashPromptLoopSimd(p, 64);
  hashPromptScalarWasm(p, 64);
}
const row = (name: string, r: ReturnType<typeof hashingVsBefore>) =>
  console.log(`${name.padEnd(48)} ${r.now.p50.toFixed(2).padStart(6)} | ${r.before.p50.toFixed(2).padStart(6)} us  ${r.ratioP50.toFixed(2)}x (passes ${r.ratioMin.toFixed(2)}-${r.ratioMax.toFixed(2)})`);
console.log("p50 per prompt: now | baseline");
for (const bs of [64, 128, 16]) {
  const ps = bs === 16 ? prompts.slice(0, 400) : prompts;
  row(`block ${bs}, local + sequence vs loop SIMD`, hashingVsBefore(ps, bs, { old: (t) => hashPromptLoopSimd(t, bs) }));
  row(`block ${bs}, sequence alone vs loop SIMD`, hashingVsBefore(ps, bs, { sequenceAlone: true, old: (t) => hashSequenceLoopSimd(t, bs) }));
  row(`block ${bs}, local + sequence vs before issue 21`, hashingVsBefore(ps, bs, { passes: bs === 16 ? 2 : 6 }));
}
const p50 = (ps: Uint32Array[], hash: (t: Uint32Array) => unknown) => {
  const samples: number[] = [];
  for (const p of ps) {
    const t = process.hrtime.bigint();
    hash(p);
    samples.push(usSince(t));
  }
  return latency(samples).p50.toFixed(2);
};
// Where the time of a call goes, through the decoders' API: local hashes as u32 pairs (no bigints),
// after copying the tokens in, and with the tokens already in the hasher's memory (as ingest decodes them).
const hasher = createWasmHasher();
const copyIn = (t: Uint32Array) => hasher.tokenSpace(t.length, 64).set(t);
console.log(`block 64, copy in + local hashes as u32 pairs p50 ${p50(prompts, (t) => (copyIn(t), hasher.hashLocals(0, 128, 64, 1337n)))} us`);
console.log(`block 64, copy in alone p50 ${p50(prompts, copyIn)} us`);
copyIn(prompts[0]);
console.log(`block 64, tokens already in place, local hashes as u32 pairs p50 ${p50(prompts, () => hasher.hashLocals(0, 128, 64, 1337n))} us`);
console.log(`block 64, JavaScript fallback p50 ${p50(prompts.slice(0, 300), (t) => hashPromptJs(t, 64))} us`);
