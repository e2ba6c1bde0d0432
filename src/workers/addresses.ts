// Where each routable (worker, dp_rank) serves HTTP: an `ip:port` a gateway
// sends requests to (the EPP's x-gateway-destination-endpoint). One DP rank
// is one port. Filled by RegisterWorker, --zmq-worker / --workers-file
// entries and discovery backends; each source owns the entries it set.
import { type WorkerKey, workerKeyString } from "../protocols/events.js";

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s:,[\]]+):(\d{1,5})$/;

/** Checks an `ip:port` (or `host:port`, `[v6]:port`); returns an error message or undefined. */
export function addressProblem(address: string): string | undefined {
  const m = HOST_PORT.exec(address);
  if (!m) return `address must look like ip:port (e.g. 10.0.0.5:8000), got ${JSON.stringify(address)}`;
  const port = Number(m[2]);
  if (port < 1 || port > 65_535) return `address ${address} has port ${port}; 1-65535 expected`;
  return undefined;
}

/** The address of DP rank `dpRank` when rank 0 serves on `address`: rank r on port + r. */
export function rankAddress(address: string, dpRank: number): string {
  const i = address.lastIndexOf(":");
  const port = Number(address.slice(i + 1)) + dpRank;
  if (port > 65_535) throw new Error(`${address} has no port for dp rank ${dpRank}`);
  return `${address.slice(0, i)}:${port}`;
}

export class WorkerAddresses {
  private readonly byKey = new Map<string, { worker: WorkerKey; address: string; owner: string }>();

  set(worker: WorkerKey, address: string, owner: string): void {
    this.byKey.set(workerKeyString(worker), { worker, address, owner });
  }

  get(worker: WorkerKey): string | undefined {
    return this.byKey.get(workerKeyString(worker))?.address;
  }

  /** The (worker, dp_rank) serving on `address`, if any. */
  find(address: string): WorkerKey | undefined {
    for (const e of this.byKey.values()) if (e.address === address) return e.worker;
    return undefined;
  }

  /** Drops every rank of a worker. */
  forgetWorker(workerId: bigint): void {
    for (const [key, e] of this.byKey) if (e.worker.workerId === workerId) this.byKey.delete(key);
  }

  /** Drops the entries `owner` set that are not in `keep` (worker keys). */
  retain(owner: string, keep: ReadonlySet<string>): void {
    for (const [key, e] of this.byKey) if (e.owner === owner && !keep.has(key)) this.byKey.delete(key);
  }

  entries(): { worker: WorkerKey; address: string }[] {
    return [...this.byKey.values()].map(({ worker, address }) => ({ worker, address }));
  }
}
