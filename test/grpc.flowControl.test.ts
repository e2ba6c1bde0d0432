// The gRPC server's HTTP/2 receive windows (src/server/flowControl.ts): a
// plain node:http2 client, as any gRPC client's transport, reads the SETTINGS
// the router advertises and the connection window it grants. With HTTP/2's
// 64 KB default a client streaming IngestKvEvents waits for a WINDOW_UPDATE
// every 64 KB; the router raises both windows on every new session.
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { describe, it } from "node:test";
import yargs from "yargs";
import { serveOptions } from "../src/cli/options.js";
import { serverOptionsFrom } from "../src/cli/config.js";
import { DEFAULT_FLOW_CONTROL_WINDOW } from "../src/server/flowControl.js";
import { stored } from "./support/events.js";
import { startTestRouter, tokens } from "./support/router.js";

/** The stream window the server advertises and the connection window it has granted this client. */
async function windowsOf(port: number): Promise<{ stream: number; connection: number }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    // The session's first SETTINGS, then the one the router sends right after accepting it.
    const stream = await new Promise<number>((resolve, reject) => {
      session.once("error", reject);
      const check = (settings: http2.Settings) => {
        if (settings.initialWindowSize !== 65_535) resolve(settings.initialWindowSize!);
      };
      session.on("remoteSettings", check);
      setTimeout(() => resolve(session.remoteSettings.initialWindowSize!), 1000);
    });
    // A ping round trip: any WINDOW_UPDATE sent before its answer has arrived.
    await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
    return { stream, connection: session.state.remoteWindowSize! };
  } finally {
    session.close();
  }
}

describe("gRPC HTTP/2 receive windows", () => {
  it("advertises 4 MiB per stream and per connection by default, and ingest still works", async () => {
    const r = await startTestRouter();
    try {
      assert.equal(DEFAULT_FLOW_CONTROL_WINDOW, 4 * 1024 * 1024);
      assert.deepEqual(await windowsOf(r.server.grpcPort), { stream: DEFAULT_FLOW_CONTROL_WINDOW, connection: DEFAULT_FLOW_CONTROL_WINDOW });
      const res = await r.client.sendEvents([stored(1, 1, tokens(16, 0), 4, 100n)]);
      assert.equal(res.applied, 1n);
      assert.equal((await r.client.findBestWorker({ tokenIds: tokens(16, 0) })).overlapBlocks, 4);
    } finally {
      await r.close();
    }
  });

  it("takes --grpc-flow-control-window, and 65535 leaves HTTP/2's defaults", async () => {
    for (const [flag, expected] of [
      ["1048576", 1_048_576],
      ["65535", 65_535],
    ] as const) {
      const argv = await serveOptions(yargs(["--block-size", "4", "--grpc-flow-control-window", flag])).strict().exitProcess(false).parse();
      const { flowControlWindow } = serverOptionsFrom(argv);
      assert.equal(flowControlWindow, expected);
      const r = await startTestRouter({}, { flowControlWindow });
      try {
        assert.deepEqual(await windowsOf(r.server.grpcPort), { stream: expected, connection: expected });
      } finally {
        await r.close();
      }
    }
  });

  it("refuses a window HTTP/2 cannot have, naming the flag and the range", async () => {
    for (const bad of ["100", "2147483648", "1.5"]) {
      const parse = () =>
        serveOptions(yargs(["--block-size", "4", "--grpc-flow-control-window", bad]))
          .strict()
          .exitProcess(false)
          .fail((msg: string) => {
            throw new Error(msg);
          })
          .parse();
      await assert.rejects(async () => await parse(), /--grpc-flow-control-window must be an integer in \[65535, 2147483647\]/);
    }
  });
});
