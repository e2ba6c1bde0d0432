// The OTLP/gRPC receiver of bench/tracing.bench.ts in a process of its own,
// as a collector runs beside the router rather than inside it: decoding the
// spans it receives must not be counted as the router's work.
//   node --import tsx bench/otlpReceiverProcess.ts
// Prints "ENDPOINT http://127.0.0.1:PORT" once serving; when its stdin
// closes it prints "SPANS <received> EXPORTS <calls>" and exits.
import { startOtlpReceiver } from "../test/support/otlpReceiver.js";

const receiver = await startOtlpReceiver({ keep: false });
process.stdout.write(`ENDPOINT ${receiver.endpoint}\n`);
process.stdin.resume();
process.stdin.on("end", async () => {
  process.stdout.write(`SPANS ${receiver.received} EXPORTS ${receiver.exports}\n`);
  await receiver.stop();
  process.exit(0);
});
