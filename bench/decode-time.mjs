// Prints the median time to decode (and fully validate) a bootstrap file, over 20 runs.
import { readFileSync } from "node:fs";
import { Bootstrap } from "../dist/src/format/decode.js";

const bytes = new Uint8Array(readFileSync(process.argv[2]));
Bootstrap.decode(bytes); // warm up
const times = [];
for (let i = 0; i < 20; i++) {
  const t = performance.now();
  Bootstrap.decode(bytes);
  times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
console.log(`${times[10].toFixed(1)} ms`);
