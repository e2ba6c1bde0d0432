// The request/response protocol between the main thread and a shard thread.
// Each shard has a control word pair (request seq, response seq) and two
// SharedArrayBuffers; the caller writes a request, bumps the request seq and
// notifies; the shard answers in place, bumps the response seq and notifies.
// Rare, bulky answers (dumps, node lists) travel on a MessagePort that the
// waiting side drains synchronously with receiveMessageOnPort.
//
// Queued applies (the ingest path) do not wait: the caller writes a batch's
// records into the shard's queue ring (sharedRing.ts) and rings the doorbell;
// the shard applies queued batches in order and writes each batch's results
// into its result ring. A shard serves a find between two records of a queued
// batch (queries do not wait for ingest); every other request first applies
// everything queued before it, so a removal, eviction or dump is ordered after
// earlier batches. A queued batch that fails (an engine bug) answers with its
// error on the error port instead of a result entry.
import type { MessagePort } from "node:worker_threads";

export const CTL_REQ = 0;
export const CTL_RES = 1;
/** Set by a shard whose request failed; the error text waits on the port. */
export const CTL_ERROR = 2;
/**
 * The doorbell: bumped for every sync request and every queued batch (and
 * notified when the shard sleeps: CTL_SLEEPING), so an idle shard sleeps on
 * this one word whatever wakes it.
 */
export const CTL_BELL = 3;
/**
 * Set by a shard thread about to die of an exception that escaped its loop
 * (its last words wait on the last-words port), and notified on CTL_RES, so
 * a caller waiting for an answer learns at once. A thread that is
 * terminated or killed for memory runs no more JavaScript and cannot set it:
 * threadBackend.ts finds those gone by other means.
 */
export const CTL_DOWN = 4;
/**
 * Set by a shard just before it sleeps on CTL_BELL, cleared when it wakes:
 * the main thread notifies the doorbell only then (a wake-up is a system
 * call; a busy shard finds the work on its own, having bumped nothing).
 */
export const CTL_SLEEPING = 5;
/** Words of the control buffer. */
export const CTL_WORDS = 6;

export const REQ_APPLY = 1;
export const REQ_FIND = 2;
export const REQ_OLDEST = 3;
export const REQ_EVICT = 4;
export const REQ_DUMP_SLOT = 5;
export const REQ_NODES = 6;
export const REQ_STATS = 7;
export const REQ_SWAP_BUFFERS = 8;
export const REQ_STOP = 9;
export const REQ_SEQUENCE = 10;

/** Words before a request's payload: op, a, b, c (b..c also hold one f64). */
export const REQ_HEADER = 4;

export const INITIAL_REQ_BYTES = 1 << 20;
export const INITIAL_RES_BYTES = 1 << 20;

/** Words of each shard's queue ring and result ring (4 MiB each); a bigger batch applies synchronously. */
export const RING_WORDS = 1 << 20;
/** A queue entry: [length, batch id, record count, records...]; a result entry: [length, batch id, count, result codes...]. */
export const ENTRY_HEADER = 3;

/**
 * A raw queue entry (an IngestKvEvents message the shard decodes itself) has
 * this in its count word, then: its stream's flag (a word of the shared
 * raw-stream flags), byte length, pair count, (worker lo, worker hi,
 * dp_rank, slot) per pair, then the message
 * bytes. Its result entry's words: status (RAW_APPLIED / RAW_REFUSED),
 * event count, and per event RAW_EVENT_WORDS: result code, worker lo,
 * worker hi, dp_rank, event id lo, hi.
 */
export const RAW_ENTRY = 0xffffffff;
export const RAW_HEADER = ENTRY_HEADER + 3;
/**
 * A raw stream's message decoded on the main thread (while its shard is
 * behind) has this in its count word, then: the stream's flag, the record
 * count, the records. It is refused or applied like a raw entry, with the
 * same result entry.
 */
export const RAW_RECORDS = 0xfffffffe;
export const RAW_RECORDS_HEADER = ENTRY_HEADER + 2;
/** Client streams that may send raw messages at once (one flag word each); more take the decoded path. */
export const RAW_STREAMS = 4096;
export const RAW_PAIR_WORDS = 4;
/** Where (worker lo, hi, dp_rank) is among a raw entry's pairs (RAW_PAIR_WORDS each, from word `from`), or -1; the slot is 3 words on. */
export function pairIndex(w: Uint32Array, from: number, pairs: number, lo: number, hi: number, rank: number): number {
  for (let p = from; p < from + pairs * RAW_PAIR_WORDS; p += RAW_PAIR_WORDS) if (w[p] === lo && w[p + 1] === hi && w[p + 2] === rank) return p;
  return -1;
}

/**
 * An engine feed's message (a vLLM/SGLang ZeroMQ payload, msgpack) that the
 * shard decodes, converts, hashes and applies itself has this in its count
 * word, then: its feed's flag (a word of the raw-stream flags, refused alike),
 * byte length, engine code (ENGINE_CODES), worker lo, worker hi, the
 * publisher's default dp_rank, pair count, per pair ENGINE_PAIR_WORDS
 * (dp_rank, slot, mode, last event id lo, hi), then the payload bytes. Mode
 * FEED_ID_GIVEN: the feed's last event id for that pair is the one given;
 * FEED_ID_CONTINUE: it is where the shard's previous entry for that slot
 * left it. Its result entry is a raw entry's (RAW_APPLIED / RAW_REFUSED,
 * event count, RAW_EVENT_WORDS per event), then, when applied: dp_rank, the
 * pair's last event id lo, hi, and the FEED_COUNT_WORDS count matrix.
 */
export const ENGINE_ENTRY = 0xffffff10;
export const ENGINE_HEADER = ENTRY_HEADER + 7;
export const ENGINE_PAIR_WORDS = 5;
export const FEED_ID_GIVEN = 1;
export const FEED_ID_CONTINUE = 0;
/** Words of an applied engine entry's result after its events: dp_rank, last id lo, hi (the count matrix follows). */
export const ENGINE_RESULT_TAIL = 3;

/**
 * Two-phase raw messages: a message naming workers of several shards (a
 * relay) goes to each of them as a part holding only its own events' bytes.
 * A RAW_PART entry has, after the count word: its stream's flag, the
 * message's token, byte length, pair count, the pairs (as a RAW_ENTRY's),
 * then the bytes. The shard decodes, validates and hashes it into a pending
 * batch, applying nothing, and answers RAW_PREPARED and its event count, or
 * RAW_REFUSED (the stream's flag is neither read nor set: the main thread
 * decides parts in stream order, and sets the flag itself when it aborts
 * one, so the stream's later raw entries are refused too). A prepared
 * answer's third word: the store stamps the part consumes. The main thread
 * then queues RAW_COMMIT (apply the pending batch, its stamps from the
 * entry's; the result is a raw entry's, RAW_APPLIED...) or RAW_ABORT (drop
 * it; the result is RAW_REFUSED) to every shard that prepared: flag, token,
 * first stamp (lo, hi words). A stream's prepared parts settle in the order
 * they were prepared.
 */
export const RAW_PART = 0xfffffff0;
export const RAW_PART_HEADER = ENTRY_HEADER + 4;
export const RAW_COMMIT = 0xfffffff1;
export const RAW_ABORT = 0xfffffff2;
export const RAW_SETTLE_HEADER = ENTRY_HEADER + 4;
/** A part's result status: decoded and held, waiting for commit or abort. */
export const RAW_PREPARED = 2;

export const RAW_APPLIED = 0;
export const RAW_REFUSED = 1;
export const RAW_RESULT_HEADER = 2;
export const RAW_EVENT_WORDS = 6;

export interface ShardThreadData {
  ctl: SharedArrayBuffer;
  /** The queue ring (main thread to shard) and the result ring (back). */
  queue: SharedArrayBuffer;
  results: SharedArrayBuffer;
  req: SharedArrayBuffer;
  res: SharedArrayBuffer;
  slots: SharedArrayBuffer;
  maxSlots: number;
  initialEntries: number;
  /** Sized for a --max-blocks bound (CoreOptions.bounded). */
  bounded: boolean;
  /** The store clock, shared by every shard and the main thread (one BigInt64, Atomics.add). */
  clock: SharedArrayBuffer;
  /** One word per raw stream: set by a shard that refused one of the stream's messages, cleared by the main thread. */
  rawFlags: SharedArrayBuffer;
  /** Tokens per block, for decoding raw messages (0: the index takes none). */
  blockSize: number;
  /** Tokens per block of the engine feeds' messages the shard decodes (ENGINE_ENTRY); 0 or absent: it takes none. */
  feedBlockSize?: number;
  /** With shared reads (sharedNodes.ts): the node side's header words, and the port new buffers are posted on. */
  nodeHeader: SharedArrayBuffer | undefined;
  views: MessagePort | undefined;
  /** Test hook (ThreadBackendOptions.testOnlyThrowOnEvent): worker lo, hi, event id lo, hi of the event whose apply throws. */
  testOnlyThrowOnEvent?: [number, number, number, number];
}

/** A shard thread's first message: it serves; `task` is its thread's /proc entry (Linux), to see it gone without its help. */
export interface ShardReady {
  task: string | undefined;
}
