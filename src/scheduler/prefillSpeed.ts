// The fleet's prefill speed as the router measures it, in ms per prompt token:
// the time from routing a prompt to its MarkPrefillCompleted, over the tokens
// it had to prefill, for prompts that found no other prompt of the router's
// waiting on their worker (so the time is the prefill's own, at the speed the
// engine runs beside its decodes). The kv-adaptive policy turns a measured
// wait into the prefill it could have bought, so it needs no per-fleet speed.

/**
 * Weight of a new sample. Averages of the time and of the tokens are kept
 * separately, so the speed is their ratio and long prompts (whose time is
 * mostly prefill, not the routing round trip) count for more.
 */
const SAMPLE_WEIGHT = 0.1;
/** Prompts shorter than an engine block's worth of tokens measure the round trip, not the prefill. */
const MIN_SAMPLE_TOKENS = 64;

export class PrefillSpeed {
  private ms = 0;
  private tokens = 0;
  private samples = 0;

  /** One prompt's prefill: `tokens` uncached tokens in `ms`. */
  sample(tokens: number, ms: number): void {
    if (tokens < MIN_SAMPLE_TOKENS || !(ms > 0)) return;
    if (this.samples++ === 0) {
      this.ms = ms;
      this.tokens = tokens;
      return;
    }
    this.ms += SAMPLE_WEIGHT * (ms - this.ms);
    this.tokens += SAMPLE_WEIGHT * (tokens - this.tokens);
  }

  /** Ms per prefill token; 0 before the first sample. */
  get msPerToken(): number {
    return this.samples === 0 ? 0 : this.ms / this.tokens;
  }
}

/**
 * How long a request holds its engine's batch slot after its first token, averaged over the
 * fleet: from MarkPrefillCompleted to Free. A full batch frees a slot about every
 * (this / slots) ms, so a prompt with n requests waiting ahead of it waits about n + 1 of those.
 */
export class DecodeTime {
  private avg = 0;
  private samples = 0;

  sample(ms: number): void {
    if (!(ms >= 0)) return;
    this.avg = this.samples++ === 0 ? ms : this.avg + SAMPLE_WEIGHT * (ms - this.avg);
  }

  /** 0 before the first sample. */
  get ms(): number {
    return this.avg;
  }
}
