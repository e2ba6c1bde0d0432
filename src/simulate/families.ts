// Trace families for comparing routing policies: seeded generators, each with
// a different kind of sharing and arrival process (docs/simulation/families.md).
// All produce Mooncake rows (hash ids of 512 tokens; equal ids, equal tokens)
// at a nominal arrival rate; the load levels scale that rate (SimOptions.speedup).
import { agenticTrace, DEFAULT_AGENTIC } from "./synthetic.js";
import { seededRandom } from "../util/random.js";
import { MOONCAKE_BLOCK_TOKENS, parseTrace, type TraceRequest } from "./trace.js";

interface Row {
  timestamp: number;
  input_length: number;
  output_length: number;
  hash_ids: number[];
  session_id?: string;
}

function toTrace(rows: Row[], source: string): TraceRequest[] {
  rows.sort((a, b) => a.timestamp - b.timestamp);
  return parseTrace(rows.map((r) => JSON.stringify({ ...r, timestamp: Math.round(r.timestamp) })).join("\n"), source);
}

/** Draws from a Zipf(s) law over 0..n-1 by inverting its cumulative weights. */
function zipf(n: number, s: number, random: () => number): () => number {
  const cumulative: number[] = [];
  let total = 0;
  for (let k = 1; k <= n; k++) cumulative.push((total += 1 / k ** s));
  return () => {
    const u = random() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

export interface RagOptions {
  requests: number;
  /** Documents in the corpus; each 2-8 hash ids; popularity Zipf(1.1). */
  documents: number;
  /** Mean requests per second inside a burst, and between bursts. */
  burstRate: number;
  quietRate: number;
  /** Mean burst and quiet durations (ms); both exponential. */
  burstMs: number;
  quietMs: number;
  seed: number;
}

export const DEFAULT_RAG: Omit<RagOptions, "seed"> = {
  requests: 1500,
  documents: 120,
  burstRate: 24,
  quietRate: 3,
  burstMs: 8_000,
  quietMs: 12_000,
};

/**
 * Bursty retrieval-augmented generation: a shared instruction block, then 1-3
 * retrieved documents (the first drawn by popularity, so popular documents
 * open many prompts), then the user's question (under one block). Requests
 * share a prefix when they open with the same document. Arrivals alternate
 * between bursts and quiet spells (a two-state Markov-modulated Poisson process).
 */
export function ragTrace(o: RagOptions): TraceRequest[] {
  const random = seededRandom(o.seed);
  const exp = (mean: number) => -mean * Math.log(1 - random());
  const pick = zipf(o.documents, 1.1, random);
  const docs: number[][] = [];
  let nextId = 1;
  for (let d = 0; d < o.documents; d++) docs.push(Array.from({ length: 2 + Math.floor(random() * 7) }, () => nextId++));
  const rows: Row[] = [];
  let t = 0;
  let bursting = true;
  let phaseEnd = exp(o.burstMs);
  while (rows.length < o.requests) {
    t += exp(1000 / (bursting ? o.burstRate : o.quietRate));
    while (t > phaseEnd) {
      bursting = !bursting;
      phaseEnd += exp(bursting ? o.burstMs : o.quietMs);
    }
    const hashIds = [0];
    const k = 1 + Math.floor(random() * 3);
    for (let j = 0; j < k; j++) hashIds.push(...docs[j === 0 ? pick() : Math.floor(random() * o.documents)]);
    hashIds.push(nextId++);
    const question = 40 + Math.floor(random() * 400);
    rows.push({
      timestamp: t,
      input_length: (hashIds.length - 1) * MOONCAKE_BLOCK_TOKENS + question,
      output_length: 64 + Math.floor(random() * 192),
      hash_ids: hashIds,
    });
  }
  return toTrace(rows, `rag:${o.seed}`);
}

export interface ChatOptions {
  sessions: number;
  /** Shared system prompts (one hash id each), popularity Zipf(1). */
  systemPrompts: number;
  /** Mean session starts per second (Poisson) and mean gap between a session's turns (ms, exponential). */
  sessionRate: number;
  turnGapMs: number;
  seed: number;
}

export const DEFAULT_CHAT: Omit<ChatOptions, "seed"> = { sessions: 700, systemPrompts: 8, sessionRate: 6, turnGapMs: 4_000 };

/**
 * Many short chats: a system prompt (one block) shared by many sessions, and
 * 1-4 turns of short user messages (30-400 tokens) and answers (30-300 tokens),
 * each turn re-sending the conversation so far. Prompts stay under ~3,000 tokens.
 */
export function chatTrace(o: ChatOptions): TraceRequest[] {
  const random = seededRandom(o.seed);
  const exp = (mean: number) => -mean * Math.log(1 - random());
  const pickSystem = zipf(o.systemPrompts, 1, random);
  let nextId = o.systemPrompts;
  const rows: Row[] = [];
  let start = 0;
  for (let s = 0; s < o.sessions; s++) {
    start += exp(1000 / o.sessionRate);
    // Each message and answer is a hash id cut to its length: later turns repeat its first tokens.
    const history: number[] = [pickSystem()];
    let tokens = MOONCAKE_BLOCK_TOKENS;
    const turns = 1 + Math.floor(random() * 4);
    let t = start;
    for (let k = 0; k < turns; k++) {
      const message = 30 + Math.floor(random() * 370);
      history.push(nextId++);
      const output = 30 + Math.floor(random() * 270);
      rows.push({ timestamp: t, input_length: tokens + message, output_length: output, hash_ids: [...history], session_id: `c${s}` });
      // The message's block is then complete in the history (its tail filled by the answer's start).
      history.push(nextId++);
      tokens += MOONCAKE_BLOCK_TOKENS * 2;
      t += exp(o.turnGapMs);
    }
  }
  return toTrace(rows, `chat:${o.seed}`);
}

/** Long agentic sessions: the agentic generator with 20-40 turns per session and fewer, slower-starting sessions. */
export function longAgenticTrace(seed: number, sessions = 45): TraceRequest[] {
  const text = agenticTrace({ ...DEFAULT_AGENTIC, sessions, minTurns: 20, maxTurns: 40, sessionGapMs: 4_000, turnGapMs: 4_000, seed });
  return parseTrace(text, `agentic-long:${seed}`);
}

/** The agentic generator as `--trace synthetic:agentic` runs it, with fewer sessions (about 1,300 requests). */
export function agenticFamilyTrace(seed: number, sessions = 150): TraceRequest[] {
  return parseTrace(agenticTrace({ ...DEFAULT_AGENTIC, sessions, seed }), `agentic:${seed}`);
}

/**
 * A window of a recorded trace as one "seed": `count` requests from `start`,
 * timestamps rebased to start at 0 (Mooncake's conversation trace, 12,031 requests).
 */
export function traceWindow(trace: readonly TraceRequest[], start: number, count: number): TraceRequest[] {
  const slice = trace.slice(start, start + count);
  const t0 = slice[0]?.timestampMs ?? 0;
  return slice.map((r, i) => ({ ...r, index: i, timestampMs: r.timestampMs - t0 }));
}

export const FAMILY_NAMES = ["agentic", "rag", "chat", "agentic-long", "mooncake"] as const;
export type FamilyName = (typeof FAMILY_NAMES)[number];

/**
 * A family's trace for a seed. `mooncake` needs the recorded trace (`recorded`);
 * the others are generated.
 */
export function familyTrace(family: FamilyName, seed: number, recorded?: readonly TraceRequest[]): TraceRequest[] {
  switch (family) {
    case "agentic":
      return agenticFamilyTrace(seed);
    case "rag":
      return ragTrace({ ...DEFAULT_RAG, seed });
    case "chat":
      return chatTrace({ ...DEFAULT_CHAT, seed });
    case "agentic-long":
      return longAgenticTrace(seed);
    case "mooncake":
      if (recorded === undefined) throw new Error("the mooncake family needs the recorded trace (--mooncake FILE)");
      return traceWindow(recorded, mooncakeWindowStart(seed), MOONCAKE_WINDOW);
  }
}

/** Requests per Mooncake window, and the stride between windows 0-3. */
const MOONCAKE_WINDOW = 1500;
const MOONCAKE_STRIDE = 3500;

/**
 * Where Mooncake "seed" `seed` starts. Windows 0-3 start every 3,500 requests
 * (the trace's 12,031 requests hold four); seeds 4-6 are the gaps between them,
 * each starting halfway between windows seed-4 and seed-3, so they share no
 * request with windows 1-3 or each other (held-out data for the second round).
 * The trace has no room for a third set of disjoint windows: seeds 7-9 start a
 * quarter of the way from window seed-7 to the gap after it (875 requests in),
 * so each shares 625 of its 1,500 requests with window seed-7 and 625 with
 * window seed-3 (the third round's new, partly seen, windows).
 */
export function mooncakeWindowStart(seed: number): number {
  if (seed >= 7) return (seed - 7) * MOONCAKE_STRIDE + MOONCAKE_STRIDE / 4;
  return seed < 4 ? seed * MOONCAKE_STRIDE : (seed - 4) * MOONCAKE_STRIDE + MOONCAKE_STRIDE / 2;
}
