// Reading /proc: a process's memory (status fields, PSS), the machine's available memory,
// Chromium's processes (by command line, by parent links, its crash handlers).
import { readFileSync, readdirSync } from 'node:fs';

/** A field of a process's /proc status (VmRSS, VmHWM, …) in KiB. */
export function procStatusKiB(pid, field) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)[1]);
}

/** The machine's MemAvailable in MiB. */
export function memAvailableMiB() {
  return Math.round(Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))[1]) / 1024);
}

/** Every process's pid. */
export const allPids = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number);

/** A process's command line, split ('' once it is gone). */
export function cmdlineOf(pid) {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'); } catch { return ['']; }
}

/** A process's PSS in KiB (0 once it is gone). */
export function pssKiB(pid) {
  try {
    return Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
  } catch { return 0; }
}

/** Chromium's PSS (KiB) over every process whose command line names `dir`. */
export function chromiumPssKiB(dir) {
  return allPids().filter((pid) => cmdlineOf(pid).join('\0').includes(dir))
    .reduce((total, pid) => total + pssKiB(pid), 0);
}

/** The pids below `root` (not `root` itself), from /proc's parent links. */
export function descendants(root) {
  const children = new Map();
  for (const pid of allPids()) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(pid);
    } catch { /* gone */ }
  }
  const out = [];
  const stack = [root];
  while (stack.length) for (const c of children.get(stack.pop()) ?? []) { out.push(c); stack.push(c); }
  return out;
}

/** PSS (KiB) and count of Chromium's processes among `pids` (bwrap and node not counted). */
export function chromiumOf(pids) {
  const chromium = pids.filter((pid) => /chrom/.test(cmdlineOf(pid)[0]));
  return { pss: chromium.reduce((total, pid) => total + pssKiB(pid), 0), count: chromium.length };
}

/**
 * Chromium's crash handlers: they double-fork out of the browser's process tree (to init, or
 * to the sandbox's init under browserd), so they are counted by name, those started during a
 * measurement being that measurement's.
 */
export function crashHandlers() {
  return allPids().filter((pid) => cmdlineOf(pid)[0].endsWith('chrome_crashpad_handler'));
}
