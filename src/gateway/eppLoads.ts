// The EPP's requests that hold load in the router: the one count behind
// --epp-max-in-flight and kvrouter_epp_in_flight. It does not keep a counter
// of its own, which could drift from the router; it keeps the router's record
// of each request it routed and counts those the router still holds. So a
// request the router let go without the EPP (--active-request-ttl, its worker
// gone) stops counting at once, and a stream frees only the request it
// routed, never a later one that reuses its request id.
import type { KvRouter } from "../router/router.js";
import type { ActiveRequest } from "../scheduler/activeSequences.js";

/** What a stream holds: the router's record of its request (undefined: nothing). */
export type Load = ActiveRequest | undefined;

export class EppLoads {
  private readonly held = new Map<string, ActiveRequest>();

  constructor(private readonly router: Pick<KvRouter, "active" | "free">) {}

  /** Requests routed by the EPP that the router still holds (drops the rest as it counts). */
  get count(): number {
    for (const [id, record] of this.held) if (this.router.active.get(id) !== record) this.held.delete(id);
    return this.held.size;
  }

  /** Takes note of a request the router has just routed; the stream keeps the result to release it. */
  hold(requestId: string): Load {
    const record = this.router.active.get(requestId);
    if (record !== undefined) this.held.set(requestId, record);
    return record;
  }

  /** Frees a load taken by hold(), if the router still holds that very request. */
  release(load: Load): void {
    if (load === undefined) return;
    if (this.held.get(load.requestId) === load) this.held.delete(load.requestId);
    if (this.router.active.get(load.requestId) === load) this.router.free(load.requestId);
  }
}
