// Test support: an engine listener that records what a simulated engine reports.
import type { IndexEvent } from "../../src/protocols/events.js";
import type { EngineListener, RequestRecord, SimRequest } from "../../src/simulate/engine.js";

export class Recorder implements EngineListener {
  events: IndexEvent[] = [];
  done: RequestRecord[] = [];
  rejected: string[] = [];
  onEvents(_w: number, events: IndexEvent[]) {
    this.events.push(...events);
  }
  onPrefillDone() {}
  onFinished(r: RequestRecord) {
    this.done.push(r);
  }
  onRejected(_req: SimRequest, _w: number, reason: string) {
    this.rejected.push(reason);
  }
}
