// What a raw IngestKvEvents stream and an engine feed share (CompactIndex's
// openRawStream and openEngineFeed): a raw flag held while submissions are
// outstanding. Closing with submissions outstanding keeps the flag until the
// last settles, so a flag still named by queued entries is never handed to
// another stream.
import type { ThreadBackend } from "./threadBackend.js";

export class FlaggedSubmissions {
  outstanding = 0;
  closed = false;

  constructor(
    private readonly threads: ThreadBackend,
    readonly flag: number,
  ) {}

  /**
   * Counts `submitted` as outstanding until it settles. On success `take`
   * maps its value first (what must happen before the submission stops
   * counting), then `done` runs, then `after`; on failure `done` runs and the
   * error passes on.
   */
  track<T, R>(submitted: Promise<T>, done: () => void, take: (value: T) => R, after: () => void): Promise<R> {
    this.outstanding++;
    const finish = (): void => {
      this.outstanding--;
      done();
      if (this.closed && this.outstanding === 0) this.threads.releaseRawFlag(this.flag);
    };
    return submitted.then(
      (value) => {
        const r = take(value);
        finish();
        after();
        return r;
      },
      (err: unknown) => {
        finish();
        throw err;
      },
    );
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.outstanding === 0) this.threads.releaseRawFlag(this.flag);
  }
}
