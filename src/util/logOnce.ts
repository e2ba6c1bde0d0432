// "Log this kind of problem once" without letting hostile input grow the set
// of remembered kinds: past MAX_KEYS distinct keys, further new keys are
// logged at their 1st, 10th, 100th, ... occurrence instead of remembered.
import { log } from "./log.js";

const MAX_KEYS = 1024;

export class LogOnce {
  private readonly seen = new Set<string>();
  private overflow = 0;

  constructor(private readonly level: "warn" | "error" = "warn") {}

  /** Logs `msg` the first time `key` is seen (and returns true then). */
  log(key: string, msg: string, fields: Record<string, unknown>): boolean {
    if (this.seen.has(key)) return false;
    if (this.seen.size < MAX_KEYS) this.seen.add(key);
    else if (!Number.isInteger(Math.log10(++this.overflow))) return false;
    log[this.level](msg, this.seen.size < MAX_KEYS ? fields : { ...fields, unremembered: this.overflow });
    return true;
  }
}
