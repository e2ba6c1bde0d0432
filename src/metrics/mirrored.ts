// Counters whose truth is a plain number kept elsewhere (a stats object, an
// index's eviction count): on each scrape they add whatever the number grew by.
// Every labelled value is exported from the first scrape, at 0 if nothing
// happened yet, so rate() works at once.
import { Counter, type Registry } from "prom-client";

/** A counter labelled `label`, one value per entry of `read`. */
export function mirroredCounter(registry: Registry, name: string, help: string, label: string, read: Record<string, () => number>): Counter {
  const last = new Map<string, number>();
  return new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      for (const [value, get] of Object.entries(read)) {
        const now = get();
        this.inc({ [label]: value }, Math.max(0, now - (last.get(value) ?? 0)));
        last.set(value, now);
      }
    },
  });
}

/** An unlabelled counter mirroring one number. */
export function mirroredTotal(registry: Registry, name: string, help: string, read: () => number): Counter {
  let last = 0;
  return new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const now = read();
      this.inc(Math.max(0, now - last));
      last = now;
    },
  });
}
