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

export interface ConversationTraceOptions {
  conversations: number;
  /** Turns per conversation; each turn's prompt is the previous one plus new blocks. */
  turns: number;
  /** Unique hash ids (512-token blocks) of a conversation's first prompt, after the common block 0. */
  firstTurnBlocks: number;
  /** Hash ids each later turn appends. */
  blocksPerTurn: number;
  /** Milliseconds between the starts of conversations, and between a conversation's turns. */
  startGapMs: number;
  turnGapMs: number;
  outputLength: number;
  seed: number;
}

/**
 * JSONL shaped like Mooncake's conversation trace: every prompt starts with the
 * common block 0, and a conversation's later turns repeat its earlier prompt.
 */
export function conversationTrace(o: ConversationTraceOptions): string {
  const random = seededRandom(o.seed);
  let nextId = 1;
  const rows: { timestamp: number; input_length: number; output_length: number; hash_ids: number[] }[] = [];
  for (let c = 0; c < o.conversations; c++) {
    const hashIds = [0];
    const start = c * o.startGapMs;
    for (let turn = 0; turn < o.turns; turn++) {
      const added = turn === 0 ? o.firstTurnBlocks : o.blocksPerTurn;
      for (let j = 0; j < added; j++) hashIds.push(nextId++);
      const inputLength = hashIds.length * 512 - 1 - Math.floor(random() * 400);
      rows.push({ timestamp: start + turn * o.turnGapMs, input_length: inputLength, output_length: o.outputLength, hash_ids: [...hashIds] });
    }
  }
  rows.sort((a, b) => a.timestamp - b.timestamp);
  return rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
}
