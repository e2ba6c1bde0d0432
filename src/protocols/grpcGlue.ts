// Bridges protobuf-es generated services to grpc-js: a grpc-js
// ServiceDefinition per GenService, and a FileDescriptorSet for reflection.
import { type DescFile, type DescMessage, type DescMethod, type DescService, type MessageShape, fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";

/**
 * Stands in for a request whose bytes are not a valid protobuf message, so the
 * handler can answer INVALID_ARGUMENT (grpc-js would otherwise say INTERNAL).
 */
export class MalformedRequest {
  constructor(readonly reason: string) {}
}

/**
 * `rawRequests`: local names of methods whose handlers get the request's
 * wire bytes (a Buffer) instead of a decoded message, to decode themselves.
 * `fastDecoders`: by local name, a decoder tried before protobuf-es; it
 * answers undefined for whatever it leaves to protobuf-es.
 */
export function serviceDefinition(
  service: DescService,
  rawRequests: readonly string[] = [],
  fastDecoders: Readonly<Record<string, (buf: Uint8Array) => unknown>> = {},
): ServiceDefinition {
  const def: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    const m = methodDefinition(service, method);
    const fast = fastDecoders[method.localName];
    if (rawRequests.includes(method.localName)) def[method.localName] = { ...m, requestDeserialize: (buf: Buffer) => buf };
    else if (fast !== undefined) def[method.localName] = { ...m, requestDeserialize: (buf: Buffer) => fast(buf) ?? m.requestDeserialize(buf) };
    else def[method.localName] = m;
  }
  return def;
}

/** Decodes a request, or says why its bytes are not a valid message. */
export function decodeRequest<T extends DescMessage>(schema: T, buf: Uint8Array): MessageShape<T> | MalformedRequest {
  try {
    return fromBinary(schema, buf);
  } catch (err) {
    return new MalformedRequest(`request is not a valid ${schema.typeName}: ${(err as Error).message}`);
  }
}

function methodDefinition(service: DescService, method: DescMethod): MethodDefinition<unknown, unknown> {
  const { input, output } = method;
  return {
    path: `/${service.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: (msg) => Buffer.from(toBinary(input, msg as never)),
    requestDeserialize: (buf: Buffer) => decodeRequest(input, buf),
    responseSerialize: (msg) => Buffer.from(toBinary(output, msg as never)),
    responseDeserialize: (buf: Buffer) => fromBinary(output, buf),
    originalName: method.localName,
  };
}

/** Serialized FileDescriptorSet of `files` and everything they import, dependencies first. */
export function fileDescriptorSet(files: readonly DescFile[]): Uint8Array {
  const ordered: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (f: DescFile) => {
    if (seen.has(f.name)) return;
    seen.add(f.name);
    f.dependencies.forEach(visit);
    ordered.push(f);
  };
  files.forEach(visit);
  return toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: ordered.map((f) => f.proto) }));
}
