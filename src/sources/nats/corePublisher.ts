// Worker side of Dynamo's core-NATS event plane (tests, benchmarks, TypeScript workers).
import type { IndexEvent } from "../../protocols/events.js";
import { encodeMsgpack, toRouterEvent } from "../../protocols/routerEventCodec.js";

/** Dynamo's core-NATS event plane: MessagePack envelope around a MessagePack RouterEvent. */
export function eventPlaneMessage(e: IndexEvent, publisherId: bigint, sequence: bigint): Uint8Array {
  return encodeMsgpack({
    publisher_id: publisherId,
    sequence,
    published_at: BigInt(Date.now()),
    topic: "kv-events",
    payload: encodeMsgpack(toRouterEvent(e)),
  });
}
