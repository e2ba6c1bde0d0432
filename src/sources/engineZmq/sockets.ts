// The one ZeroMQ context every engine subscriber uses, and the descriptor
// budget that decides whether one more subscriber fits.
//
// libzmq's default context allows 1,023 sockets; a 128-node x 8-GPU fleet
// needs more. This context allows as many as the process may open files
// (Node raises its soft RLIMIT_NOFILE to the hard limit at start). Sockets
// cannot be shared between publishers: a SUB socket connected to several PUB
// endpoints interleaves their messages with nothing to say which publisher
// sent one, and each publisher has its own sequence numbers to track.
import { readFileSync, readdirSync } from "node:fs";
import * as zmq from "zeromq";

/** Descriptors kept free for everything else (gRPC clients, NATS, files, replay sockets). */
export const FD_HEADROOM = 256;
/** Descriptors one subscriber may hold at once: its SUB socket's mailbox and connection, a replay DEALER's two. */
export const FDS_PER_SUBSCRIBER = 4;

/** The process's open-files limit, or undefined where /proc does not say. */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = line?.split(/\s{2,}/)[1];
    return soft === undefined || soft === "unlimited" ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

/** Descriptors the process has open now, or undefined where /proc does not say. */
export function openFileCount(): number | undefined {
  try {
    return readdirSync("/proc/self/fd").length;
  } catch {
    return undefined;
  }
}

let shared: zmq.Context | undefined;

/** The subscribers' context, created on first use with the socket limit raised to the process's file limit. */
export function zmqContext(): zmq.Context {
  if (shared === undefined) {
    const defaults = zmq.context; // libzmq's own default context: read its limits, never open sockets on it
    const limit = Math.min(openFileLimit() ?? defaults.maxSockets, defaults.maxSocketsLimit);
    shared = new zmq.Context({ maxSockets: Math.max(defaults.maxSockets, limit), blocky: false });
  }
  return shared;
}

/**
 * Why one more subscriber does not fit (undefined: it fits): more sockets than
 * the context allows, or too few free descriptors left for the rest of the router.
 */
export function subscriberRoomProblem(subscribers: number, maxSubscribers: number | undefined): string | undefined {
  const maxSockets = zmqContext().maxSockets;
  const cap = Math.min(maxSubscribers ?? Infinity, Math.floor(maxSockets / 2));
  if (subscribers + 1 > cap) return `${subscribers} ZeroMQ subscribers are open; the limit is ${cap}`;
  const limit = openFileLimit();
  const open = openFileCount();
  if (limit !== undefined && open !== undefined && open + FDS_PER_SUBSCRIBER + FD_HEADROOM > limit) {
    return `${open} of the process's ${limit} file descriptors are open; one more subscriber would leave fewer than ${FD_HEADROOM} free (raise 'ulimit -n')`;
  }
  return undefined;
}
