// The KV scorer API other endpoint pickers call (Mooncake RFC #1403 as
// Dynamo's standalone indexer serves it, lib/kv-router/src/standalone_indexer/server.rs):
// POST /query (token ids) and POST /query_by_hash (local block hashes) →
// per instance, matched tokens per DP rank and per tier. Counts are tokens
// (matched blocks × block size), as Dynamo's.
import type { IncomingMessage, ServerResponse } from "node:http";
import { parseWorkerKey } from "../protocols/events.js";
import { sequenceHash } from "../hashing/blockHash.js";
import { SequenceHashes } from "../hashing/sequenceHashes.js";
import { parseJsonLossless } from "../protocols/routerEventCodec.js";
import type { KvRouter } from "../router/router.js";
import { json } from "../util/httpRespond.js";
import { log } from "../util/log.js";

const U64 = (1n << 64n) - 1n;
/** JSON values a body may hold besides its token ids or hashes (model_name, lora_name, fields we ignore…). */
const OTHER_VALUES = 1024;

/** One instance's match, RFC #1403 shape: cumulative per tier (gpu ≤ cpu ≤ disk), per DP rank. */
export interface InstanceMatch {
  longest_matched: number;
  gpu: number;
  dp: Record<string, number>;
  cpu: number;
  disk: number;
}

export interface ScoreResponse {
  /** worker_id → dp_rank → matched tokens (Dynamo's legacy flat field). */
  scores: Record<string, Record<string, number>>;
  /** frequencies[i]: how many ranks hold block i of the prompt. */
  frequencies: number[];
  instances: Record<string, InstanceMatch>;
}

export class ScorerInputError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Scores a prompt's sequence hashes against the index. */
export function scoreSequence(router: KvRouter, sequence: SequenceHashes): ScoreResponse {
  const { blockSize } = router.config;
  const overlaps = router.index.findMatchesWords(sequence.words, sequence.length);
  const res: ScoreResponse = { scores: {}, frequencies: [], instances: {} };
  for (const [key, blocks] of overlaps) {
    if (blocks === 0) continue;
    const { workerId, dpRank } = parseWorkerKey(key);
    const id = String(workerId);
    const tokens = blocks * blockSize;
    (res.scores[id] ??= {})[String(dpRank)] = tokens;
    const inst = (res.instances[id] ??= { longest_matched: 0, gpu: 0, dp: {}, cpu: 0, disk: 0 });
    inst.dp[String(dpRank)] = tokens;
    // The index holds the device tier only, so the cumulative lower tiers equal it.
    inst.gpu = inst.cpu = inst.disk = inst.longest_matched = Math.max(inst.gpu, tokens);
    for (let i = 0; i < blocks; i++) res.frequencies[i] = (res.frequencies[i] ?? 0) + 1;
  }
  return res;
}

export interface ScorerOptions {
  router: KvRouter;
  /** Undefined when the model is served, else why not (→ 404). */
  modelProblem: (model: string) => string | undefined;
  maxTokens: number;
}

type Body = Record<string, unknown>;

function requireModel(body: Body, opts: ScorerOptions): void {
  const model = body.model_name;
  if (typeof model !== "string" || model === "") throw new ScorerInputError(400, "model_name is required (a string)");
  const problem = opts.modelProblem(model);
  if (problem) throw new ScorerInputError(404, problem);
}

function intList(v: unknown, field: string, max: number, ok: (n: bigint) => boolean, what: string): bigint[] {
  if (!Array.isArray(v)) throw new ScorerInputError(400, `${field} is required (a list of ${what})`);
  if (v.length > max) throw new ScorerInputError(400, `${field} has ${v.length} entries; the limit is ${max} (--max-tokens)`);
  return v.map((x, i) => {
    if (typeof x !== "bigint" || !ok(x)) throw new ScorerInputError(400, `${field}[${i}] is not ${what}: ${String(x)}`);
    return x;
  });
}

/** POST /query: {token_ids, model_name, lora_name?, tenant_id?} */
export function queryTokens(body: Body, opts: ScorerOptions): ScoreResponse {
  requireModel(body, opts);
  const tokens = intList(body.token_ids, "token_ids", opts.maxTokens, (n) => n >= 0n && n <= 0xffffffffn, "u32 token ids");
  const lora = body.lora_name ?? "";
  if (typeof lora !== "string") throw new ScorerInputError(400, "lora_name must be a string");
  const ids = Uint32Array.from(tokens, Number);
  return scoreSequence(opts.router, opts.router.sequenceHashes(ids, lora));
}

/** POST /query_by_hash: {block_hashes (local hashes, i64 as Dynamo sends them), model_name, tenant_id?} */
export function queryHashes(body: Body, opts: ScorerOptions): ScoreResponse {
  requireModel(body, opts);
  if (body.cache_salt !== undefined && body.cache_salt !== null) {
    throw new ScorerInputError(400, "cache_salt is not supported by /query_by_hash: salt the block hashes before sending them");
  }
  const locals = intList(body.block_hashes, "block_hashes", opts.maxTokens, (n) => n >= -(1n << 63n) && n <= U64, "64-bit block hashes");
  let parent: bigint | undefined;
  const sequence = locals.map((h) => (parent = sequenceHash(parent, h & U64)));
  return scoreSequence(opts.router, SequenceHashes.fromBigints(sequence));
}

/** An HTTP handler for one of the two endpoints, reading at most maxBodyBytes. */
export function scorerHandler(
  handle: (body: Body, opts: ScorerOptions) => ScoreResponse,
  opts: ScorerOptions & {
    maxBodyBytes: number;
    onRefused?: (reason: string) => void;
    /** Why the request's authorization header is refused (→ 401), or undefined to serve it. */
    authRefusal?: (authorization: string | undefined) => string | undefined;
  },
) {
  return (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== "POST") return json(res, 405, { error: `use POST with a JSON body` });
    const refused = opts.authRefusal?.(req.headers.authorization);
    if (refused !== undefined) {
      opts.onRefused?.("unauthenticated");
      req.resume(); // drain the body so the answer reaches the client
      return json(res, 401, { error: refused });
    }
    readBody(req, opts.maxBodyBytes, opts.maxTokens).then(
      (text) => {
        try {
          let body: unknown;
          try {
            body = parseJsonLossless(text);
          } catch (err) {
            throw new ScorerInputError(400, `body is not JSON: ${(err as Error).message}`);
          }
          if (!body || typeof body !== "object" || Array.isArray(body)) throw new ScorerInputError(400, "body must be a JSON object");
          json(res, 200, handle(body as Body, opts));
        } catch (err) {
          if (!(err instanceof ScorerInputError)) {
            log.error("scorer query failed", { error: String((err as Error)?.stack ?? err) });
            return json(res, 500, { error: `internal error: ${(err as Error)?.message ?? err}` });
          }
          opts.onRefused?.(err.status === 404 ? "unknown_model" : "invalid");
          json(res, err.status, { error: err.message });
        }
      },
      (err: ScorerInputError) => {
        opts.onRefused?.("too_large");
        json(res, err.status ?? 400, { error: err.message });
      },
    );
  };
}

/**
 * Reads the body, at most `maxBytes`, counting its values as they arrive: parsing (lossless-json,
 * a BigInt per number) costs far more than reading, so a body with more values than --max-tokens
 * allows is refused (413) before it is parsed. Either way the rest is read and dropped, so the
 * answer reaches the client.
 */
function readBody(req: IncomingMessage, maxBytes: number, maxTokens: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const values = new ValueCounter();
    const maxValues = maxTokens + OTHER_VALUES;
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > maxBytes || values.count > maxValues) return;
      values.add(c);
      chunks.push(c);
    });
    req.on("end", () => {
      if (size > maxBytes) reject(new ScorerInputError(413, `body is ${size} bytes, over --max-body-bytes ${maxBytes}`));
      else if (values.count > maxValues) {
        reject(
          new ScorerInputError(
            413,
            `body holds more than ${maxValues} JSON values; token_ids and block_hashes may have at most ${maxTokens} entries (--max-tokens)`,
          ),
        );
      } else resolve(Buffer.concat(chunks).toString("utf8"));
    });
    req.on("error", reject);
  });
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;

/**
 * Counts a JSON text's values from its bytes: at most one more than its commas outside
 * strings. Chunks may split anywhere (UTF-8 continuation bytes are never ASCII).
 */
class ValueCounter {
  private commas = 0;
  private inString = false;
  private escaped = false;

  get count(): number {
    return this.commas + 1;
  }

  add(chunk: Uint8Array): void {
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) this.inString = false;
      } else if (c === COMMA) this.commas++;
      else if (c === QUOTE) this.inString = true;
    }
  }
}
