// Plain HTTP answers for the non-Connect endpoints.
import type { ServerResponse } from "node:http";

export function text(res: ServerResponse, code: number, body: string): void {
  res.writeHead(code, { "content-type": "text/plain; charset=utf-8" }).end(body);
}

export function json(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));
}
