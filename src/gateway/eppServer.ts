// The EPP port (--epp-port): Envoy's ext_proc service and the gRPC health
// services a GAIE gateway probes — liveness (the process answers), readiness
// and envoy.service.ext_proc.v3.ExternalProcessor (serving, index synced).
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { ExternalProcessor } from "../../gen/envoy/service/ext_proc/v3/external_processor_pb.js";
import { serviceDefinition } from "../protocols/grpcGlue.js";
import { GRPC_IDLE_CONNECTION_MS, capGrpcConnections } from "../server/grpcListeners.js";
import type { ConnectionLimits } from "../util/connectionCap.js";
import { log } from "../util/log.js";
import { BodyBudget } from "./bodyBudget.js";
import { type EppOptions, type EppShared, handleProcessStream } from "./epp.js";
import { EppLoads } from "./eppLoads.js";

export const EXT_PROC_SERVICE_NAME = ExternalProcessor.typeName;

export interface RunningEpp {
  port: number;
  shared: EppShared;
  setReady(ready: boolean): void;
  stop(): Promise<void>;
}

export async function startEppServer(
  host: string,
  port: number,
  opts: EppOptions & { maxMessageBytes: number; maxBufferedBytes: number; connections: ConnectionLimits },
): Promise<RunningEpp> {
  const server = new grpc.Server({ "grpc.max_receive_message_length": opts.maxMessageBytes, "grpc.max_connection_idle_ms": GRPC_IDLE_CONNECTION_MS });
  const shared: EppShared = { loads: new EppLoads(opts.router), bodies: new BodyBudget(opts.maxBufferedBytes) };
  opts.metrics.sources.eppInFlight = () => shared.loads.count;
  opts.metrics.sources.eppBufferedBytes = () => shared.bodies.used;
  server.addService(serviceDefinition(ExternalProcessor), {
    process: (call: Parameters<typeof handleProcessStream>[0]) => handleProcessStream(call, opts, shared),
  });
  const health = new HealthImplementation({
    liveness: "SERVING",
    readiness: "NOT_SERVING",
    [EXT_PROC_SERVICE_NAME]: "NOT_SERVING",
    "": "NOT_SERVING",
  });
  health.addToServer(server);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  if (!capGrpcConnections(server, opts.connections)) log.warn("could not cap the EPP port's connections (this grpc-js keeps its listeners elsewhere)");
  const setReady = (ready: boolean) => {
    for (const name of ["readiness", EXT_PROC_SERVICE_NAME, ""]) health.setStatus(name, ready ? "SERVING" : "NOT_SERVING");
  };
  return {
    port: bound,
    shared,
    setReady,
    stop: () =>
      new Promise<void>((resolve) => {
        setReady(false);
        const force = setTimeout(() => server.forceShutdown(), 5_000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}
