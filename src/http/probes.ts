// The probes, answered the same on every port that serves them (--metrics-port
// and --http-port): /healthz, 200 while the process can serve (503 once it
// cannot, e.g. an index shard thread died, so an orchestrator restarts it
// even if the process has not exited yet); /readyz, 200 once the router
// serves with every event source started, else 503 with the reason.
import type { IncomingMessage, ServerResponse } from "node:http";
import { text } from "../util/httpRespond.js";

export type PathHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** What the probes report: each says why not, or undefined. */
export interface ProbeState {
  /** Why the router should get no traffic now (starting, stopping, or not live). */
  notReady(): string | undefined;
  /** Why the process cannot serve again without a restart. */
  notLive(): string | undefined;
}

export function probeHandlers(state: ProbeState): Record<"/healthz" | "/readyz", PathHandler> {
  return {
    "/healthz": (_req, res) => {
      const reason = state.notLive();
      if (reason === undefined) text(res, 200, "ok\n");
      else text(res, 503, `not live: ${reason}\n`);
    },
    "/readyz": (_req, res) => {
      const reason = state.notReady();
      if (reason === undefined) text(res, 200, "ready\n");
      else text(res, 503, `not ready: ${reason}\n`);
    },
  };
}
