// Synthetic Mooncake-format traces with known sharing, for tests and demos.
import { seededRandom } from "../util/random.js";

export interface SharedPrefixTraceOptions {
  requests: number;
  /** Distinct shared prefixes ("system prompts"). */
  groups: number;
  /** Hash ids (512-token blocks) in each shared prefix. */
  prefixBlocks: number;
  /** Unique hash ids after the prefix. */
  suffixBlocks: number;
  /** Milliseconds between arrivals. */
  gapMs: number;
  outputLength: number;
  seed: number;
}

/** JSONL where each request is one of `groups` shared prefixes followed by its own blocks. */
export function sharedPrefixTrace(o: SharedPrefixTraceOptions): string {
  const random = seededRandom(o.seed);
  let nextId = o.groups * o.prefixBlocks;
  const lines: string[] = [];
  for (let i = 0; i < o.requests; i++) {
    const g = Math.floor(random() * o.groups);
    const hashIds = Array.from({ length: o.prefixBlocks }, (_, j) => g * o.prefixBlocks + j);
    for (let j = 0; j < o.suffixBlocks; j++) hashIds.push(nextId++);
    // The last block is partial, as in real traces.
    const inputLength = hashIds.length * 512 - 100;
    lines.push(JSON.stringify({ timestamp: i * o.gapMs, input_length: inputLength, output_length: o.outputLength, hash_ids: hashIds }));
  }
  return lines.join("\n") + "\n";
}
