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

export interface AgenticTraceOptions {
  sessions: number;
  /** Distinct system prompts (tool definitions + instructions) shared by sessions. */
  systemPrompts: number;
  /** Hash ids (512-token blocks) per system prompt. */
  systemBlocks: number;
  /** Turns per session: uniform in [minTurns, maxTurns]. */
  minTurns: number;
  maxTurns: number;
  /** Mean seconds between session starts (Poisson arrivals). */
  sessionGapMs: number;
  /** Mean think/tool time between a turn's arrival and the next (exponential). */
  turnGapMs: number;
  seed: number;
}

export const DEFAULT_AGENTIC: AgenticTraceOptions = {
  sessions: 400,
  systemPrompts: 4,
  systemBlocks: 6,
  minTurns: 3,
  maxTurns: 14,
  sessionGapMs: 1500,
  turnGapMs: 6000,
  seed: 0,
};

/**
 * An agentic-session trace (Mooncake JSONL plus `session_id`): each session
 * starts from one of a few shared system prompts, and every turn re-sends the
 * whole conversation so far plus new content: a user message (1 block) or a
 * tool output (1-8 blocks, heavy-tailed), then the model's answer to it
 * (output_length tokens) becomes part of the next turn's prompt.
 */
export function agenticTrace(o: AgenticTraceOptions): string {
  const random = seededRandom(o.seed);
  const exp = (mean: number) => -mean * Math.log(1 - random());
  let nextId = o.systemPrompts * o.systemBlocks;
  const rows: { timestamp: number; line: string }[] = [];
  let start = 0;
  for (let s = 0; s < o.sessions; s++) {
    start += exp(o.sessionGapMs);
    const sys = Math.floor(random() * o.systemPrompts);
    const history = Array.from({ length: o.systemBlocks }, (_, j) => sys * o.systemBlocks + j);
    const turns = o.minTurns + Math.floor(random() * (o.maxTurns - o.minTurns + 1));
    let t = start;
    for (let k = 0; k < turns; k++) {
      const tool = k > 0 && random() < 0.6;
      const newBlocks = tool ? 1 + Math.min(7, Math.floor(exp(2))) : 1;
      for (let j = 0; j < newBlocks; j++) history.push(nextId++);
      const output = 64 + Math.floor(random() * 448);
      rows.push({
        timestamp: Math.round(t),
        line: JSON.stringify({
          timestamp: Math.round(t),
          input_length: history.length * 512,
          output_length: output,
          hash_ids: [...history],
          session_id: `s${s}`,
        }),
      });
      // The answer (one block per 512 tokens, at least one) joins the conversation.
      for (let j = 0; j < Math.max(1, Math.ceil(output / 512)); j++) history.push(nextId++);
      t += exp(o.turnGapMs);
    }
  }
  rows.sort((a, b) => a.timestamp - b.timestamp);
  return rows.map((r) => r.line).join("\n") + "\n";
}
