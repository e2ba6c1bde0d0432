import { BinaryReader } from "@bufbuild/protobuf/wire";
const bytes = Buffer.from(process.argv[2], "hex");
const r = new BinaryReader(bytes);
while (r.pos < r.len) { const p = r.pos; const [f, wt] = r.tag(); const start = r.pos; r.skip(wt, f); console.log(p, f, wt, Buffer.from(bytes.subarray(start, r.pos)).toString("hex")); }
