import { ingestTraffic, sendAll } from "./ingestWire.js";
const port = Number(process.argv[2]);
const warm = ingestTraffic(51200, true, 3, 90000);
await sendAll(port, warm.messages);
const ts = Array.from({ length: 4 }, (_, i) => ingestTraffic(51200, true, 30 + i, 5000 * (i + 1)));
let total = 0, secs = 0;
for (const t of ts) {
  await sendAll(port, t.messages.slice(0, 8));
  secs += await sendAll(port, t.messages.slice(8));
  total += t.blocks - 8 * 16 * 32;
}
console.log(process.argv.slice(3).join(" "), (total / secs / 1e6).toFixed(3), "M blocks/s");
