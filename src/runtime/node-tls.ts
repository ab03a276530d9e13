// Node's https port for `skiff serve --tls-cert --tls-key`: node:http2's secure server speaks HTTP/2
// to clients that offer it (ALPN h2) and HTTP/1.1 to the rest, behind a front door that reads each
// connection's first byte. A TLS handshake starts with 0x16 and goes on to the secure server;
// anything else is a plain-http request, answered with one short 400 that says to use https, where
// the TLS layer would answer an alert that clients print as garbage.
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from "node:http2";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { answerClientError } from "./node-client-error.ts";
import type { TlsPair } from "./tls-pair.ts";

export type NodeRequestListener = (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void;

export interface TlsServer {
  /** The port's listener: listen() on it. */
  server: Server;
  /** New handshakes use `pair`; open connections keep theirs. */
  setPair(pair: TlsPair): void;
  /** Stops accepting, closes idle connections, and resolves once requests in flight have finished. */
  close(): Promise<void>;
}

const TLS_HANDSHAKE = 0x16;
/** A connection that sends nothing at all for this long is dropped. */
const FIRST_BYTE_MS = 10_000;
/** An HTTP/2 connection with no activity for this long is closed; an idle HTTP/1.1 one after 5 s, as node:http does. */
const H2_IDLE_MS = 120_000;
const HTTP1_KEEP_ALIVE_MS = 5_000;
/** An HTTP/1.1 connection must send its first request within this (node:http's headers timeout). */
const FIRST_REQUEST_MS = 60_000;

export function tlsServer(pair: TlsPair, listener: NodeRequestListener): TlsServer {
  let closing = false;
  const sessions = new Set<Http2Session>();
  // HTTP/1.1 connections: how many requests each has in flight, to close the idle ones on close(),
  // and until its first request, the timer that drops it if none comes.
  const http1 = new Map<TLSSocket, { inFlight: number; firstRequest: NodeJS.Timeout }>();

  const secure = createSecureServer({ allowHTTP1: true, cert: pair.cert, key: pair.key }, (req, res) => {
    const connection = req.httpVersionMajor === 1 && http1.get(req.socket as TLSSocket);
    if (connection) {
      const socket = req.socket as TLSSocket;
      clearTimeout(connection.firstRequest);
      connection.inFlight++;
      res.once("close", () => {
        if (--connection.inFlight === 0 && closing) socket.end();
      });
    }
    listener(req, res);
  });
  secure.on("clientError", answerClientError);
  // node:http's own keep-alive timeout, which the HTTP/1.1 side of an http2 server leaves unset (never).
  Object.assign(secure, { keepAliveTimeout: HTTP1_KEEP_ALIVE_MS });
  secure.on("secureConnection", (socket: TLSSocket) => {
    if (socket.alpnProtocol === "h2") return;
    if (closing) return void socket.end();
    // node:http's headers timeout needs connection tracking that only a listening server sets up;
    // this one is handed its connections, so a connection that sends no request in time is dropped here.
    const firstRequest = setTimeout(() => socket.destroy(), FIRST_REQUEST_MS);
    http1.set(socket, { inFlight: 0, firstRequest });
    socket.once("close", () => {
      clearTimeout(firstRequest);
      http1.delete(socket);
    });
  });
  secure.on("session", (session: Http2Session) => {
    if (closing) return void session.close();
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    // close(), not destroy(): streams in flight finish first.
    session.setTimeout(H2_IDLE_MS, () => session.close());
  });

  const server = createServer((socket) => {
    socket.setTimeout(FIRST_BYTE_MS, () => socket.destroy());
    socket.once("error", () => socket.destroy());
    socket.once("data", (first: Buffer) => {
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(first);
      if (first[0] === TLS_HANDSHAKE) {
        // The TLS socket reads what was unshifted before anything new.
        socket.removeAllListeners("error");
        secure.emit("connection", socket);
      } else refusePlainHttp(socket);
    });
  });

  return {
    server,
    setPair: (next) => secure.setSecureContext({ cert: next.cert, key: next.key }),
    close: () =>
      new Promise<void>((resolve) => {
        closing = true;
        // Resolves once every connection the front door took has closed.
        server.close(() => resolve());
        for (const session of sessions) session.close();
        for (const [socket, { inFlight }] of http1) if (inFlight === 0) socket.end();
      }),
  };
}

const PLAIN_HTTP_BODY = "This port speaks https: use https:// to reach it.\n";
const PLAIN_HTTP_ANSWER = Buffer.from(
  `HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${PLAIN_HTTP_BODY.length}\r\nConnection: close\r\n\r\n${PLAIN_HTTP_BODY}`,
);

/**
 * Answers a plain-http request and closes. What the client still sends is read and dropped: closing
 * with unread bytes would reset the connection, and the client could lose the answer.
 */
function refusePlainHttp(socket: Socket): void {
  socket.setTimeout(FIRST_BYTE_MS, () => socket.destroy());
  socket.on("error", () => socket.destroy());
  socket.end(PLAIN_HTTP_ANSWER);
  socket.resume();
}
