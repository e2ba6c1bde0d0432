// Worker side: publish KV events the way Dynamo workers do in JetStream mode
// (one JSON RouterEvent per message on `{stream}.queue`). Used by tests,
// benchmarks and any TypeScript worker that wants to feed routers over NATS.
import type { JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { IndexEvent } from "../../protocols/events.js";
import { natsNames } from "../../protocols/natsNames.js";
import { stringifyJson, toRouterEvent } from "../../protocols/routerEventCodec.js";

export function routerEventJson(e: IndexEvent): Uint8Array {
  return new TextEncoder().encode(stringifyJson(toRouterEvent(e)));
}

/** Publishes with JetStream acks; retries through failovers; msgID makes retries idempotent. */
export async function publishKvEvents(js: JetStreamClient, endpoint: string, events: readonly IndexEvent[]): Promise<void> {
  const subject = natsNames(endpoint).publishSubject;
  for (const e of events) {
    const msgID = `${e.workerId}:${e.dpRank}:${e.eventId}`;
    for (let attempt = 0; ; attempt++) {
      try {
        await js.publish(subject, routerEventJson(e), { msgID, timeout: 2000 });
        break;
      } catch (err) {
        if (attempt >= 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

/** Fast bulk publish: plain core-NATS publishes into the stream's subject, one flush at the end. */
export async function publishKvEventsBulk(nc: NatsConnection, endpoint: string, events: readonly IndexEvent[]): Promise<void> {
  const subject = natsNames(endpoint).publishSubject;
  for (let i = 0; i < events.length; i++) {
    nc.publish(subject, routerEventJson(events[i]));
    if (i % 5000 === 4999) await nc.flush();
  }
  await nc.flush();
}
