// `kv-router describe [NAME]`: the gRPC API as a person reads it, from the
// compiled proto descriptors: without NAME every method; with a method name its
// request and response fields (and the messages they contain); with a message
// name that message. Field names are the proto (and `buf curl` JSON) names.
import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { KvRouterService } from "../../gen/kvrouter/v1/router_pb.js";
import { CliError } from "./errors.js";

const KIND: Record<string, string> = {
  unary: "unary",
  server_streaming: "server stream",
  client_streaming: "client stream",
  bidi_streaming: "bidirectional stream",
};

const scalar = (t: ScalarType) => ScalarType[t].toLowerCase();

function typeOf(f: DescField): string {
  switch (f.fieldKind) {
    case "scalar":
      return scalar(f.scalar) + (f.presence === 1 ? " (optional)" : ""); // EXPLICIT presence
    case "enum":
      return `enum ${f.enum.name}`;
    case "message":
      return f.message.name;
    case "list":
      return `repeated ${f.listKind === "scalar" ? scalar(f.scalar) : f.listKind === "enum" ? f.enum.name : f.message.name}`;
    case "map":
      return `map<${scalar(f.mapKey)}, ${f.mapKind === "scalar" ? scalar(f.scalar) : f.mapKind === "enum" ? f.enum.name : f.message.name}>`;
  }
}

const messageOf = (f: DescField): DescMessage | undefined =>
  f.fieldKind === "message" ? f.message : f.fieldKind === "list" && f.listKind === "message" ? f.message : undefined;

/** The messages' fields, then (once each) the messages they contain. */
function messageLines(...roots: DescMessage[]): string[] {
  const lines: string[] = [];
  const seen = new Set<string>();
  const queue = [...roots];
  while (queue.length > 0) {
    const m = queue.shift()!;
    if (seen.has(m.typeName)) continue;
    seen.add(m.typeName);
    lines.push("", `message ${m.name}${m.fields.length === 0 ? " {}" : ""}`);
    const width = Math.max(0, ...m.fields.map((f) => f.name.length));
    for (const f of m.fields) {
      const oneof = f.oneof ? `  (one of ${f.oneof.name})` : "";
      lines.push(`  ${f.name.padEnd(width)}  ${typeOf(f)}${oneof}`);
      const inner = messageOf(f);
      if (inner && inner.typeName.startsWith("kvrouter.")) queue.push(inner);
    }
  }
  return lines;
}

export function describe(name: string | undefined): string {
  const methods = KvRouterService.methods;
  const signature = (m: (typeof methods)[number]) => `${m.name}(${m.input.name}) returns (${m.output.name})  [${KIND[m.methodKind]}]`;
  if (name === undefined) {
    return [`service ${KvRouterService.typeName}`, ...methods.map((m) => `  rpc ${signature(m)}`), "", "kv-router describe METHOD shows a method's request and response fields."].join("\n");
  }
  const method = methods.find((m) => m.name.toLowerCase() === name.toLowerCase());
  if (method) return [`rpc ${signature(method)}`, ...messageLines(method.input, method.output)].join("\n");
  const message = KvRouterService.file.messages.find((m) => m.name.toLowerCase() === name.toLowerCase());
  if (message) return messageLines(message).slice(1).join("\n");
  throw new CliError(`describe: no method or message "${name}"; kv-router describe lists the methods`);
}
