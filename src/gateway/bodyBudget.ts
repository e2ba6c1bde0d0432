// Request-body bytes all EPP streams hold at once. --max-body-bytes bounds one
// body; this bounds their sum (--epp-max-buffered-bytes), so many open streams
// each under the per-body limit cannot take the process's memory between them.
export class BodyBudget {
  /** Bytes charged now (kvrouter_epp_buffered_bytes). */
  used = 0;

  constructor(readonly limit: number) {}

  /** Charges `n` bytes; false, charging nothing, when they do not fit. */
  take(n: number): boolean {
    if (this.used + n > this.limit) return false;
    this.used += n;
    return true;
  }

  give(n: number): void {
    this.used -= n;
  }
}
