// Counts KV events a source left out, by reason, and logs each (worker,
// reason) once so a misconfigured worker cannot flood the log; the rest of
// its batch still applies.
import { log } from "../util/log.js";

export class SkipCounter {
  readonly byReason = new Map<string, number>();
  private readonly logged = new Set<string>();

  constructor(private readonly where: Record<string, unknown>) {}

  skip(workerId: bigint | string, reason: string, detail: string): void {
    this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    const key = `${workerId}/${reason}`;
    if (this.logged.has(key)) return;
    this.logged.add(key);
    log.warn("KV event skipped (logged once per worker and reason)", { ...this.where, worker_id: String(workerId), reason, detail });
  }

  count(reason: string): number {
    return this.byReason.get(reason) ?? 0;
  }
}
