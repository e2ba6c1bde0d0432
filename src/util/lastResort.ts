// The process's last line of defence: an exception or rejection that escaped
// every handler is logged and counted, and the router keeps serving. Each
// source and handler turns its own failures into statuses or counted skips;
// reaching this handler is a bug, which the log line says.
import { log } from "./log.js";

let installed = false;
/** Exceptions and rejections that reached the last-resort handler. */
export const lastResortCounts = { uncaughtException: 0, unhandledRejection: 0 };

export function installLastResortHandlers(): void {
  if (installed) return;
  installed = true;
  process.on("uncaughtException", (err) => {
    lastResortCounts.uncaughtException++;
    log.error("uncaught exception (a bug); the router keeps serving", { error: String((err as Error)?.stack ?? err) });
  });
  process.on("unhandledRejection", (reason) => {
    lastResortCounts.unhandledRejection++;
    log.error("unhandled promise rejection (a bug); the router keeps serving", {
      error: String((reason as Error)?.stack ?? reason),
    });
  });
}
