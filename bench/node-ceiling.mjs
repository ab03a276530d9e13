// What node:http itself can do on this machine: a bare server answering `Range: bytes=a-b` for one
// file with a blocking read into a reused buffer and the headers skiff sends, nothing else (no
// routing, no access check, no metrics). bench:serving measures it beside skiff on Node, so the
// part of the gap to nginx that is Node's own shows in the same run.
//   node bench/node-ceiling.mjs FILE PORT
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { createServer } from "node:http";

const [file, port] = process.argv.slice(2);
const fd = openSync(file, "r");
const size = fstatSync(fd).size;
const buffer = Buffer.alloc(1 << 20);
const server = createServer((req, res) => {
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
  const start = m ? Number(m[1]) : 0;
  const end = m ? Math.min(Number(m[2]), size - 1) : -1;
  const length = end - start + 1;
  if (!m || length <= 0 || length > buffer.byteLength) {
    res.writeHead(m ? 416 : 400).end();
    return;
  }
  readSync(fd, buffer, 0, length, start);
  res.writeHead(206, {
    "Content-Type": "application/octet-stream",
    "Content-Length": String(length),
    "Content-Range": `bytes ${start}-${end}/${size}`,
    "Accept-Ranges": "bytes",
    ETag: '"ceiling"',
    "Cache-Control": "public, max-age=31536000, immutable",
  });
  res.end(buffer.subarray(0, length));
});
server.listen(Number(port), "127.0.0.1");
process.once("SIGTERM", () => server.close(() => closeSync(fd)) && server.closeAllConnections());
