// A real HTTP server on 127.0.0.1 that serves one body by range as RFC 9110 says (HEAD, 200, single,
// open-ended, suffix and clamped ranges, 416 with `bytes */size`, invalid Range ignored, multiple
// ranges as multipart/byteranges, a strong ETag and If-Range), or with one chosen fault, so tests can
// show that `skiff check-ranges` (and whatever else reads ranges) notices each way of getting it wrong.
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type RangeFault =
  | "none"
  | "full-body" // 200 with the whole body for any Range
  | "wrong-content-range" // right bytes, Content-Range start (and end) off by one
  | "short-body" // 206 one byte short, Content-Length matching the short body
  | "long-body" // 206 one byte long, Content-Length matching the long body
  | "no-clamp" // 416 when a range's last byte is past the end
  | "broken-multipart" // the last part's Content-Range lies (off by one)
  | "corrupt-body"; // correct headers, one byte of every 206 body flipped

export interface RangeFaultServer {
  url: string;
  /** requests answered so far */
  requests: number;
  setFault(f: RangeFault): void;
  close(): Promise<void>;
}

interface Span {
  start: number;
  end: number; // inclusive, clamped to the body
  /** The last byte as requested (undefined for open-ended and suffix ranges). */
  askedEnd?: number;
}

/** RFC 9110 §14.1.2: "invalid" (ignore the header), [] (nothing satisfiable: 416), or the ranges. */
function parseRange(header: string, size: number): Span[] | "invalid" {
  const m = /^bytes=(.+)$/i.exec(header.trim());
  if (m === null) return "invalid";
  const spans: Span[] = [];
  for (const spec of m[1]!.split(",")) {
    const r = /^(\d*)-(\d*)$/.exec(spec.trim());
    if (r === null || (r[1] === "" && r[2] === "")) return "invalid";
    if (r[1] === "") {
      const n = Number(r[2]);
      if (n > 0 && size > 0) spans.push({ start: Math.max(0, size - n), end: size - 1 });
      continue;
    }
    const start = Number(r[1]);
    const askedEnd = r[2] === "" ? undefined : Number(r[2]);
    if (askedEnd !== undefined && askedEnd < start) return "invalid";
    if (start < size) spans.push({ start, end: Math.min(askedEnd ?? size - 1, size - 1), askedEnd });
  }
  return spans;
}

const flip = (b: Buffer): Buffer => {
  const c = Buffer.from(b);
  if (c.length > 0) c[c.length >> 1]! ^= 0xff;
  return c;
};

export function startRangeFaultServer(o: { body: Uint8Array; fault?: RangeFault; path?: string }): Promise<RangeFaultServer> {
  const body = Buffer.from(o.body.buffer, o.body.byteOffset, o.body.byteLength);
  const size = body.length;
  const path = o.path ?? "/blob";
  const etag = `"${createHash("sha256").update(body).digest("hex").slice(0, 32)}"`;
  const lastModified = new Date(Date.UTC(2024, 0, 1)).toUTCString();
  let fault: RangeFault = o.fault ?? "none";
  let requests = 0;

  const partBytes = (s: Span): Buffer => {
    const data = body.subarray(s.start, s.end + 1);
    if (fault === "short-body") return data.subarray(0, Math.max(0, data.length - 1));
    if (fault === "long-body") return Buffer.concat([data, Buffer.from([body[s.end + 1] ?? 0x2a])]);
    if (fault === "corrupt-body") return flip(data);
    return data;
  };
  const contentRange = (s: Span, lie = false) => {
    const shift = lie || fault === "wrong-content-range" ? 1 : 0;
    return `bytes ${s.start + shift}-${s.end + shift}/${size}`;
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const reqPath = new URL(req.url ?? "/", "http://x").pathname;
    if (reqPath !== path) return void res.writeHead(404, { "content-length": "0" }).end();
    if (req.method !== "GET" && req.method !== "HEAD") return void res.writeHead(405, { allow: "GET, HEAD", "content-length": "0" }).end();
    const common = { "accept-ranges": "bytes", etag, "last-modified": lastModified };
    const sendFull = () => {
      res.writeHead(200, { ...common, "content-type": "application/octet-stream", "content-length": String(size) });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    let range = req.method === "GET" ? req.headers.range : undefined;
    const ifRange = req.headers["if-range"];
    // If-Range: a strong ETag compared strongly, or the exact Last-Modified date; else the whole body.
    if (ifRange !== undefined && ifRange !== etag && ifRange !== lastModified) range = undefined;
    if (range === undefined || fault === "full-body") return sendFull();
    const spans = parseRange(range, size);
    if (spans === "invalid") return sendFull();
    if (spans.length === 0 || (fault === "no-clamp" && spans.some((s) => s.askedEnd !== undefined && s.askedEnd >= size))) {
      res.writeHead(416, { ...common, "content-range": `bytes */${size}`, "content-length": "0" });
      return void res.end();
    }
    if (spans.length === 1) {
      const data = partBytes(spans[0]!);
      res.writeHead(206, { ...common, "content-type": "application/octet-stream", "content-range": contentRange(spans[0]!), "content-length": String(data.length) });
      return void res.end(data);
    }
    const boundary = `skiff-fault-${randomBytes(8).toString("hex")}`;
    const pieces: Buffer[] = [];
    spans.forEach((s, i) => {
      const lie = fault === "broken-multipart" && i === spans.length - 1;
      pieces.push(Buffer.from(`--${boundary}\r\ncontent-type: application/octet-stream\r\ncontent-range: ${contentRange(s, lie)}\r\n\r\n`), partBytes(s), Buffer.from("\r\n"));
    });
    pieces.push(Buffer.from(`--${boundary}--\r\n`));
    const payload = Buffer.concat(pieces);
    res.writeHead(206, { ...common, "content-type": `multipart/byteranges; boundary=${boundary}`, "content-length": String(payload.length) });
    res.end(payload);
  };

  const server = createServer((req, res) => {
    requests++;
    handle(req, res);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}${path}`,
        get requests() {
          return requests;
        },
        setFault(f: RangeFault) {
          fault = f;
        },
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
