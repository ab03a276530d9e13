// The skiff command on Deno (deno.json's tasks: `deno task serve`, `deno task skiff CMD`): the same
// commands, with `serve` on Deno.serve (src/runtime/deno.ts). Type-checked by `deno check`, not by
// the Node tsc projects.
import { startDenoServer } from "../runtime/deno.ts";
import { main } from "./main.ts";

// The exit status is set, not forced, as on Node; `serve` exits by itself once shut down (serve.ts).
if (import.meta.main) Deno.exitCode = await main(Deno.args, startDenoServer);
