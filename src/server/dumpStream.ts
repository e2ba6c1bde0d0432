// DumpIndex: the index as stored events, streamed with back-pressure, with a
// cap on concurrent dumps.
import { create } from "@bufbuild/protobuf";
import { type ServerWritableStream, status } from "@grpc/grpc-js";
import { DumpIndexResponseSchema } from "../../gen/kvrouter/v1/router_pb.js";
import type { RouterMetrics } from "../metrics/metrics.js";
import type { KvRouter } from "../router/router.js";
import { MalformedRequest } from "../protocols/grpcGlue.js";
import { toWireEvent } from "./convert.js";
import { failureOf } from "./unaryMethods.js";

const DUMP_BATCH = 1024;

/** The DumpIndex handler; at most `maxDumps` calls stream at once. */
export function dumpIndexHandler(router: KvRouter, metrics: RouterMetrics, maxDumps: number) {
  const failure = (method: string, err: unknown) => failureOf(metrics, method, err);
  let dumpsRunning = 0;
  return async (call: ServerWritableStream<unknown, unknown>) => {
    const stop = metrics.requestDuration.startTimer({ method: "DumpIndex" });
    const refuse = (code: status, details: string) => {
      stop({ code: status[code] });
      call.emit("error", { code, details });
    };
    if (call.request instanceof MalformedRequest) {
      metrics.invalidRequests.inc({ method: "DumpIndex" });
      refuse(status.INVALID_ARGUMENT, call.request.reason);
      return;
    }
    if (dumpsRunning >= maxDumps) {
      refuse(status.RESOURCE_EXHAUSTED, `${dumpsRunning} DumpIndex calls are streaming; the limit is ${maxDumps} (--max-concurrent-dumps)`);
      return;
    }
    dumpsRunning++;
    try {
      // Streamed with back-pressure: the next batch is built only once the
      // previous one was taken by the transport, so a slow (or stalled)
      // reader holds one batch and one worker's packed entries, never the
      // whole index. Each worker's entries are consistent with its cursor.
      let batch: ReturnType<typeof toWireEvent>[] = [];
      for (const event of router.dump()) {
        batch.push(toWireEvent(event));
        if (batch.length < DUMP_BATCH) continue;
        if (!(await writeInTurn(call, create(DumpIndexResponseSchema, { events: batch })))) break;
        batch = [];
      }
      if (!call.cancelled && batch.length > 0) await writeInTurn(call, create(DumpIndexResponseSchema, { events: batch }));
      if (!call.cancelled) call.end();
      stop({ code: call.cancelled ? "CANCELLED" : "OK" });
    } catch (err) {
      const { code, details } = failure("DumpIndex", err);
      refuse(code, details);
    } finally {
      dumpsRunning--;
    }
  };
}

/** Writes one message; resolves once the transport wants more (true) or the call is gone (false). */
function writeInTurn(call: ServerWritableStream<unknown, unknown>, message: unknown): Promise<boolean> {
  if (call.cancelled) return Promise.resolve(false);
  if (call.write(message)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (more: boolean) => () => {
      call.off("drain", onDrain);
      call.off("cancelled", onGone);
      call.off("close", onGone);
      resolve(more && !call.cancelled);
    };
    const onDrain = done(true);
    const onGone = done(false);
    call.once("drain", onDrain);
    call.once("cancelled", onGone);
    call.once("close", onGone);
  });
}
