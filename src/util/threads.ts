// Starting a worker thread from a module next to the caller, compiled or not.
import { Worker, type WorkerOptions } from "node:worker_threads";

/** The module `name` beside `base` (an import.meta.url): .ts under tsx (tests, benchmarks), .js once compiled. */
export function siblingModule(base: string, name: string): URL {
  const ext = base.endsWith(".ts") ? "ts" : "js";
  return new URL(`./${name}.${ext}`, base);
}

/** A worker thread running `entry`; under tsx the thread registers the TypeScript loader itself (Node 20 does not carry --import hooks over). */
export function startThread(entry: URL, options: WorkerOptions): Worker {
  return entry.pathname.endsWith(".ts")
    ? new Worker(`import("tsx/esm/api").then((t) => { t.register(); return import(${JSON.stringify(entry.href)}); });`, {
        ...options,
        eval: true,
      })
    : new Worker(entry, options);
}
