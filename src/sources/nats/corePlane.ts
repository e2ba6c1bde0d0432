// Dynamo's core-NATS event plane: MessagePack envelopes on plain (not
// durable) subjects, each carrying RouterEvents. Current workers publish on
// the endpoint-scoped subject, older ones on the component subject; both are
// read. Undecodable messages are counted and logged once per distinct error;
// events left out (unknown tier, ...) are counted by reason; the rest apply.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { IndexEvent } from "../../indexer/types.js";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import { DecodeError, decodeRouterEvent, parseEventPlane } from "../routerEventCodec.js";
import { SkipCounter } from "../skipCounter.js";

export interface CorePlaneStats {
  /** Messages decoded (their events given to the index). */
  messages: number;
  /** Messages that could not be decoded. */
  malformed: number;
  /** Events applied from the decoded messages. */
  applied: number;
}

export class NatsCorePlane {
  readonly stats: CorePlaneStats = { messages: 0, malformed: 0, applied: 0 };
  readonly skips: SkipCounter;
  private readonly subs: Subscription[] = [];
  private readonly loops: Promise<void>[] = [];
  private readonly logged = new Set<string>();

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
        })(),
      );
    }
  }

  async stop(): Promise<void> {
    for (const sub of this.subs) sub.unsubscribe();
    await Promise.all(this.loops.map((l) => l.catch(() => undefined)));
  }

  private handle(subject: string, data: Uint8Array, router: KvRouter): void {
    const events: IndexEvent[] = [];
    try {
      for (const v of parseEventPlane(data)) {
        const d = decodeRouterEvent(v);
        if (d.kind === "event") events.push(d.event);
        else this.skips.skip(d.workerId, d.reason, d.detail);
      }
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      this.stats.malformed++;
      if (!this.logged.has(err.message)) {
        this.logged.add(err.message);
        log.warn("malformed event-plane message skipped", { subject, error: err.message });
      }
      return;
    }
    this.stats.messages++;
    this.stats.applied += router.applyEvents(events).applied;
  }
}
