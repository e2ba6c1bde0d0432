// The probes, answered the same on every port that serves them (--metrics-port
// and --http-port): /healthz, the process answers; /readyz, 200 once the router
// serves with every event source started, else 503 with the reason.
import type { IncomingMessage, ServerResponse } from "node:http";
import { text } from "../util/httpRespond.js";

export type PathHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** `notReady` says why the router is not ready, or undefined when it is. */
export function probeHandlers(notReady: () => string | undefined): Record<"/healthz" | "/readyz", PathHandler> {
  return {
    "/healthz": (_req, res) => text(res, 200, "ok\n"),
    "/readyz": (_req, res) => {
      const reason = notReady();
      if (reason === undefined) text(res, 200, "ready\n");
      else text(res, 503, `not ready: ${reason}\n`);
    },
  };
}
