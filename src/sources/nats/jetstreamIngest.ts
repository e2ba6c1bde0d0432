// KV events from a JetStream stream, as Dynamo workers publish them (one JSON
// RouterEvent per message on `{stream}.queue`). Each router replica reads
// through its own durable pull consumer and applies messages strictly in
// stream order: a message that arrives past a hole (lost in flight during a
// NATS failover) first pulls the missing ones straight from the stream, so a
// later event never overtakes an earlier one. Ack after apply (AckAll, once
// per burst); undecodable messages are counted, logged once per worker, and
// acked.
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import type { IndexEvent } from "../../protocols/events.js";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import { whileClusterForms } from "../../nats/connection.js";
import type { NatsNames } from "../../protocols/natsNames.js";
import { DecodeError, decodeRouterEvent, parseJsonEvents, workerIdOf } from "../../protocols/routerEventCodec.js";
import { SkipCounter } from "../skipCounter.js";
import { LogOnce } from "../../util/logOnce.js";

export interface IngestStats {
  /** Messages read (delivered or fetched to fill a gap), redeliveries aside. */
  messages: number;
  applied: number;
  rejected: number;
  /** Undecodable events (a message that is not JSON counts as one). */
  malformed: number;
  /** Messages with at least one undecodable event (their good events still apply). */
  malformedMessages: number;
  /** Well-formed messages the router refused whole (e.g. no index slot left for their workers). */
  refused: number;
  gapFilled: number;
  duplicates: number;
}

/** Consumers of routers that vanished without deleting theirs go away after this. */
const CONSUMER_INACTIVE_MS = 10 * 60_000;
/** A hole larger than this is not filled message by message (logged instead). */
const MAX_GAP_FILL = 100_000;
/** Applied messages between acks while a burst is still flowing. */
const ACK_EVERY = 500;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function ensureStream(jsm: JetStreamManager, names: NatsNames, replicas: number): Promise<void> {
  try {
    await whileClusterForms(`stream ${names.stream}`, () => jsm.streams.info(names.stream));
    return;
  } catch (err) {
    if (!/not found/i.test(String(err))) throw err;
  }
  try {
    await whileClusterForms(`stream ${names.stream}`, () =>
      jsm.streams.add({ name: names.stream, subjects: [names.streamSubjects], num_replicas: replicas }),
    );
    log.info("created JetStream stream", { stream: names.stream, subjects: names.streamSubjects, replicas });
  } catch (err) {
    // Another replica may have created it a moment ago.
    if (!/already in use|exists/i.test(String(err))) throw err;
  }
}

export class StreamIngest {
  readonly stats: IngestStats = {
    messages: 0,
    applied: 0,
    rejected: 0,
    malformed: 0,
    malformedMessages: 0,
    refused: 0,
    gapFilled: 0,
    duplicates: 0,
  };
  /** Well-formed events left out (unknown tier or domain, cache-owner residency), by reason. */
  readonly skips: SkipCounter;
  /** Stream sequence of the last message applied (everything up to it is in the index). */
  lastAppliedSeq = 0;
  private stopped = false;
  private messages: ConsumerMessages | undefined;
  private loop: Promise<void> | undefined;
  private readonly loggedWorkers = new LogOnce();
  private readonly loggedRefusals = new LogOnce();
  private router: KvRouter | undefined;
  private unacked = 0;

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly names: NatsNames,
    private readonly consumerName: string,
  ) {
    this.skips = new SkipCounter({ stream: names.stream });
  }

  /** (Re)creates this replica's durable consumer at `fromSeq` and starts applying. */
  async start(router: KvRouter, fromSeq: number): Promise<void> {
    this.router = router;
    const info = await this.jsm.streams.info(this.names.stream);
    // Messages before the stream's first sequence were purged behind a snapshot.
    const startSeq = Math.max(fromSeq, info.state.first_seq, 1);
    if (startSeq > fromSeq && fromSeq > 1) {
      log.error("the stream was trimmed past the snapshot this replica loaded; events may be missing", { from: fromSeq, first: startSeq });
    }
    this.lastAppliedSeq = startSeq - 1;
    await this.recreateConsumer(startSeq);
    this.loop = this.run();
  }

  /** Resolves once every message the stream held when called has been applied. */
  async caughtUp(timeoutMs = 30_000): Promise<void> {
    const target = (await this.jsm.streams.info(this.names.stream)).state.last_seq;
    const deadline = Date.now() + timeoutMs;
    while (this.lastAppliedSeq < target) {
      if (Date.now() > deadline) throw new Error(`stream not caught up: at ${this.lastAppliedSeq} of ${target}`);
      await sleep(20);
    }
  }

  async stop(deleteConsumer: boolean): Promise<void> {
    this.stopped = true;
    this.messages?.stop();
    await this.loop?.catch(() => undefined);
    if (deleteConsumer) {
      await this.jsm.consumers.delete(this.names.stream, this.consumerName).catch(() => undefined);
    }
  }

  private async recreateConsumer(startSeq: number): Promise<void> {
    // A restarted router has an empty index: its consumer must start where its
    // state (empty or a snapshot) ends, not where its previous life stopped.
    await this.jsm.consumers.delete(this.names.stream, this.consumerName).catch(() => undefined);
    await this.jsm.consumers.add(this.names.stream, {
      durable_name: this.consumerName,
      // Acking message n acks everything before it: one ack per burst, not per message.
      ack_policy: AckPolicy.All,
      deliver_policy: startSeq <= 1 ? DeliverPolicy.All : DeliverPolicy.StartSequence,
      ...(startSeq > 1 ? { opt_start_seq: startSeq } : {}),
      max_ack_pending: 10_000,
      ack_wait: nanos(30_000),
      inactive_threshold: nanos(CONSUMER_INACTIVE_MS),
    });
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        const consumer = await this.js.consumers.get(this.names.stream, this.consumerName);
        this.messages = await consumer.consume({ max_messages: 1000, idle_heartbeat: 1000, expires: 5000 });
        if (this.stopped) this.messages.stop();
        for await (const m of this.messages) {
          await this.handle(m);
          if (this.stopped) break;
        }
      } catch (err) {
        if (this.stopped) break;
        log.warn("event stream consumer interrupted; retrying", { stream: this.names.stream, error: String(err) });
        if (/consumer not found|consumer deleted/i.test(String(err))) {
          await this.recreateConsumer(this.lastAppliedSeq + 1).catch(() => undefined);
        }
        await sleep(250);
      }
    }
  }

  private async handle(m: JsMsg): Promise<void> {
    const seq = m.seq;
    if (seq <= this.lastAppliedSeq) {
      this.stats.duplicates++; // a redelivery of something already applied
      this.ackEventually(m);
      return;
    }
    if (seq > this.lastAppliedSeq + 1) await this.fillGap(seq);
    this.applyPayload(m.data);
    this.lastAppliedSeq = seq;
    this.ackEventually(m);
  }

  /** Acks (everything up to m) at the end of a burst or every ACK_EVERY messages. */
  private ackEventually(m: JsMsg): void {
    if (++this.unacked >= ACK_EVERY || m.info.pending === 0) {
      m.ack();
      this.unacked = 0;
    }
  }

  private async fillGap(upTo: number): Promise<void> {
    const from = this.lastAppliedSeq + 1;
    if (upTo - from > MAX_GAP_FILL) {
      log.error("event stream skipped too far to fill; events may be missing", { from, to: upTo - 1 });
      return;
    }
    for (let seq = from; seq < upTo && !this.stopped; seq++) {
      for (let attempt = 0; ; attempt++) {
        try {
          const stored = await this.jsm.streams.getMessage(this.names.stream, { seq });
          if (stored !== null) {
            this.applyPayload(stored.data);
            this.stats.gapFilled++;
          }
          break; // null: deleted or purged, nothing to apply
        } catch (err) {
          if (/no message found|not found/i.test(String(err))) break;
          if (attempt >= 40 || this.stopped) throw err;
          await sleep(250);
        }
      }
      this.lastAppliedSeq = seq;
    }
  }

  private applyPayload(data: Uint8Array): void {
    this.stats.messages++;
    let values: unknown[];
    try {
      values = parseJsonEvents(data);
    } catch (err) {
      this.stats.malformedMessages++;
      this.malformed("unknown", err as Error);
      return;
    }
    const events: IndexEvent[] = [];
    let malformed = false;
    for (const v of values) {
      try {
        const d = decodeRouterEvent(v);
        if (d.kind === "event") events.push(d.event);
        else this.skips.skip(d.workerId, d.reason, d.detail);
      } catch (err) {
        // Any throw from a decoder is a poison message: counted, logged once, acked (never retried).
        malformed = true;
        this.malformed(workerIdOf(v), err as Error);
      }
    }
    if (malformed) this.stats.malformedMessages++;
    if (events.length === 0) return;
    try {
      const summary = this.router!.applyEvents(events);
      this.stats.applied += summary.applied;
      this.stats.rejected += summary.rejected;
    } catch (err) {
      // Refused whole (nothing applied): skip it, or the consumer would retry it forever.
      this.stats.refused++;
      const message = (err as Error)?.message ?? String(err);
      this.loggedRefusals.log(message.slice(0, 80), "KV event message refused and skipped (logged once per reason)", {
        stream: this.names.stream,
        error: message,
      });
    }
  }

  private malformed(workerId: string, err: Error): void {
    this.stats.malformed++;
    this.loggedWorkers.log(workerId, "malformed KV event message skipped (logged once per worker)", {
      stream: this.names.stream,
      worker_id: workerId,
      error: err instanceof DecodeError ? err.message : String(err),
    });
  }
}
