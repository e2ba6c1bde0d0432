// Mooncake-format request traces: one JSON object per line,
//   {"timestamp": ms, "input_length": n, "output_length": m, "hash_ids": [...]}
// where each hash id stands for one block of `traceBlockSize` (512) tokens and
// equal ids mean equal content. The ids are expanded into synthetic token ids
// deterministically, so equal ids give equal tokens at any router block size.
import { readFileSync } from "node:fs";

export const MOONCAKE_BLOCK_TOKENS = 512;

export interface TraceRequest {
  /** Position in the trace (arrival order; ties in timestamp keep file order). */
  index: number;
  timestampMs: number;
  inputLength: number;
  outputLength: number;
  hashIds: number[];
  /** Optional `session_id` of the line (agentic traces): the kv policy sends it as its session hint. */
  sessionId?: string;
}

export class TraceError extends Error {}

function isNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Parses JSONL text; a bad line throws a TraceError naming the line and the field. */
export function parseTrace(text: string, source = "trace", traceBlockSize = MOONCAKE_BLOCK_TOKENS): TraceRequest[] {
  const out: TraceRequest[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    const at = `${source}:${i + 1}`;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw new TraceError(`${at}: not JSON (${(err as Error).message})`);
    }
    if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new TraceError(`${at}: expected a JSON object`);
    const { timestamp, input_length, output_length, hash_ids, session_id } = obj;
    if (typeof timestamp !== "number" || !Number.isFinite(timestamp) || timestamp < 0) {
      throw new TraceError(`${at}: "timestamp" must be a number of milliseconds >= 0`);
    }
    if (!isNonNegInt(input_length) || input_length < 1) throw new TraceError(`${at}: "input_length" must be an integer >= 1`);
    if (!isNonNegInt(output_length)) throw new TraceError(`${at}: "output_length" must be an integer >= 0`);
    if (!Array.isArray(hash_ids) || !hash_ids.every(isNonNegInt)) {
      throw new TraceError(`${at}: "hash_ids" must be an array of integers >= 0`);
    }
    if (hash_ids.length * traceBlockSize < input_length) {
      throw new TraceError(
        `${at}: ${hash_ids.length} hash ids of ${traceBlockSize} tokens cover only ${hash_ids.length * traceBlockSize} ` +
          `of input_length ${input_length}`,
      );
    }
    if (session_id !== undefined && typeof session_id !== "string") throw new TraceError(`${at}: "session_id" must be a string`);
    out.push({
      index: out.length,
      timestampMs: timestamp,
      inputLength: input_length,
      outputLength: output_length,
      hashIds: hash_ids,
      ...(session_id !== undefined ? { sessionId: session_id } : {}),
    });
  }
  // Arrival order: by timestamp, file order among equals (sort is stable).
  out.sort((a, b) => a.timestampMs - b.timestampMs);
  out.forEach((r, i) => (r.index = i));
  return out;
}

export function loadTrace(path: string, traceBlockSize = MOONCAKE_BLOCK_TOKENS): TraceRequest[] {
  return parseTrace(readFileSync(path, "utf8"), path, traceBlockSize);
}

/** A 32-bit integer mix (murmur3 finalizer): spreads nearby inputs over the whole range. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * The prompt's token ids: hash id h contributes `traceBlockSize` tokens that
 * depend only on h and the position inside its block, cut at input_length.
 */
export function expandTokens(req: TraceRequest, traceBlockSize = MOONCAKE_BLOCK_TOKENS): Uint32Array {
  const tokens = new Uint32Array(req.inputLength);
  for (let b = 0; b * traceBlockSize < req.inputLength; b++) {
    const h = req.hashIds[b];
    // Two rounds so that ids above 2^32 still change every token.
    const base = mix32(mix32(h % 0x1_0000_0000) ^ Math.floor(h / 0x1_0000_0000));
    const end = Math.min(req.inputLength, (b + 1) * traceBlockSize);
    for (let t = b * traceBlockSize, j = 0; t < end; t++, j++) tokens[t] = mix32(base ^ Math.imul(j + 1, 0x9e3779b1));
  }
  return tokens;
}
