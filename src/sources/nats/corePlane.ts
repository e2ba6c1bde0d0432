// Dynamo's core-NATS event plane: MessagePack envelopes on plain (not
// durable) subjects, each carrying RouterEvents. Current workers publish on
// the endpoint-scoped subject, older ones on the component subject; both are
// read. Undecodable messages (any decoder throw) and messages the router
// refuses whole are counted and logged once per distinct error; events left
// out (unknown tier, ...) are counted by reason; the rest apply.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { IndexEvent } from "../../protocols/events.js";
import type { IngestSummary } from "../../router/types.js";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import { LogOnce } from "../../util/logOnce.js";
import { DecodeError, eventPlaneEvents } from "../../protocols/routerEventCodec.js";
import { routerEventReader } from "../../decoding/dynamo/routerEventReader.js";
import { SkipCounter } from "../skipCounter.js";

export interface CorePlaneStats {
  /** Messages decoded (their events given to the index). */
  messages: number;
  /** Messages that could not be decoded. */
  malformed: number;
  /** Events applied from the decoded messages. */
  applied: number;
  /** Well-formed messages the router refused whole (e.g. no index slot left for their workers). */
  refused: number;
}

export class NatsCorePlane {
  readonly stats: CorePlaneStats = { messages: 0, malformed: 0, applied: 0, refused: 0 };
  readonly skips: SkipCounter;
  private readonly subs: Subscription[] = [];
  private readonly loops: Promise<void>[] = [];
  private readonly logged = new LogOnce();

  constructor(readonly subjects: readonly string[]) {
    this.skips = new SkipCounter({ subjects: subjects.join(",") });
  }

  /** Subscribes; flush the connection afterwards so the server knows the interest. */
  start(nc: NatsConnection, router: KvRouter): void {
    for (const subject of this.subjects) {
      const sub = nc.subscribe(subject);
      this.subs.push(sub);
      this.loops.push(
        (async () => {
          for await (const m of sub) this.handle(subject, m.data, router);
        })().catch((err) => log.error("event-plane subscription ended", { subject, error: String(err) })),
      );
    }
  }

  async stop(): Promise<void> {
    for (const sub of this.subs) sub.unsubscribe();
    await Promise.all(this.loops.map((l) => l.catch(() => undefined)));
  }

  private handle(subject: string, data: Uint8Array, router: KvRouter): void {
    // The common message (device-tier stores and removals) is read flat; the codec takes the rest.
    const batch = routerEventReader().read(data);
    if (batch !== undefined) {
      this.apply(subject, () => router.applyEventBatchAsync(batch));
      return;
    }
    let events: IndexEvent[];
    try {
      events = eventPlaneEvents(data, (d) => this.skips.skip(d.workerId, d.reason, d.detail));
    } catch (err) {
      // Any throw from a decoder is poison: counted, logged once per kind, skipped.
      this.stats.malformed++;
      const error = err instanceof DecodeError ? err.message : String(err);
      this.logged.log(error.slice(0, 80), "malformed event-plane message skipped", { subject, error });
      return;
    }
    this.apply(subject, () => router.applyEventsAsync(events));
  }

  /** One decoded message to the index: refusals counted and logged; with index shard threads the subscription goes on meanwhile. */
  private apply(subject: string, applying: () => Promise<IngestSummary>): void {
    try {
      applying().then(
        (summary) => {
          this.stats.applied += summary.applied;
        },
        (err: unknown) => this.logged.log("apply_failed", "the index failed to apply an event-plane message", { subject, error: String(err) }),
      );
      this.stats.messages++;
    } catch (err) {
      this.stats.refused++;
      const error = (err as Error)?.message ?? String(err);
      this.logged.log(`refused:${error.slice(0, 80)}`, "event-plane message refused and skipped", { subject, error });
    }
  }
}
