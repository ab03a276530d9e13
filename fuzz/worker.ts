// One target's campaign in a worker thread, so that the main thread can stop it if it hangs. The
// input number in progress is kept in shared memory: a hang is reported with the exact input.
import { parentPort, workerData } from "node:worker_threads";
import { runCampaign } from "./campaign.ts";
import { makeSeeds } from "./seeds.ts";
import { TARGETS } from "./targets.ts";

const { target: name, inputs, seed, only, current } = workerData as { target: string; inputs: number; seed: number; only?: number; current: SharedArrayBuffer };
const target = TARGETS.find((t) => t.name === name)!;
const at = new Int32Array(current);
const seeds = await makeSeeds();
const result = await runCampaign(target, seeds, {
  inputs,
  seed,
  only,
  onInput: (n) => Atomics.store(at, 0, n),
  onProgress: (done) => parentPort!.postMessage({ progress: done }),
});
parentPort!.postMessage({ result });
