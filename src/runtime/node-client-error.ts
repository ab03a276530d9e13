// What node:http answers a request it could not parse. Its own answer is a bare status line; a
// registry client expects an OCI error body. Node 22 and later also refuse a request of more than
// about 1,000 header fields in the parser (Node 20 drops the rest, and ./node-shortcut.ts refuses
// past 500), so that refusal reaches clients through here.
import type { Duplex } from "node:stream";
import { errorAnswer } from "../http/errors.ts";
import { OciError } from "../oci/errors.ts";

/** node:http's parse errors, and the status and reason each is answered with. */
const ANSWERS: Record<string, [number, string, string]> = {
  HPE_HEADER_OVERFLOW: [431, "Request Header Fields Too Large", "request header fields too large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "Request Timeout", "request not received in time"],
};
const MALFORMED: [number, string, string] = [400, "Bad Request", "malformed HTTP request"];

/** A `clientError` listener for node:http (and node:http2's HTTP/1.1 side). */
export function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  // Nothing to answer on a connection the client dropped, or one whose answer has begun.
  const answering = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent;
  if (err.code === "ECONNRESET" || !socket.writable || answering) return void socket.destroy();
  const [status, reason, message] = ANSWERS[err.code ?? ""] ?? MALFORMED;
  const answer = errorAnswer(new OciError("UNSUPPORTED", message, { status }));
  const fields = Object.entries(answer.headers).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 ${status} ${reason}\r\n${fields}Connection: close\r\n\r\n`), answer.body!]));
}
