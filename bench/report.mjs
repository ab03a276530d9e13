// Shared by the benchmark scripts: a description of the machine, a process's CPU time, and the
// rewrite of one marked section of docs/benchmarks.md so each script owns its part of the page.
import { execFileSync } from "node:child_process";
import { cpus, totalmem } from "node:os";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

export function machine() {
  const cpu = cpus()[0]?.model?.trim() ?? "unknown CPU";
  const date = new Date().toISOString().slice(0, 10);
  return `${cpu}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${date}`;
}

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());

/** The fields of /proc/PID/stat after the command name, which may hold spaces and ")": state is [0]. */
export function statFields(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
}

/** CPU seconds (user + system) process `pid` has used so far, from /proc. */
export function cpuSeconds(pid) {
  const fields = statFields(pid);
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** Minor page faults of process `pid` so far (fault-ins of fresh memory). */
export function minorFaults(pid) {
  return Number(statFields(pid)[7]);
}

/** The middle value; of an even count, the upper of the two middle ones (always a measured run). */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1];
}

/** Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, appending it if absent. */
export function replaceSection(file, name, title, body) {
  const start = `<!-- bench:${name} -->`;
  const end = `<!-- /bench:${name} -->`;
  const block = `${start}\n## ${title}\n\n${body.trim()}\n${end}`;
  let page = existsSync(file) ? readFileSync(file, "utf8") : "# Benchmarks\n\nEvery table says where, when and with which command it was measured.\n";
  const a = page.indexOf(start);
  const b = page.indexOf(end);
  page = a >= 0 && b > a ? page.slice(0, a) + block + page.slice(b + end.length) : `${page.trimEnd()}\n\n${block}\n`;
  writeFileSync(file, page);
}
