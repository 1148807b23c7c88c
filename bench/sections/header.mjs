// The document's head: how and where the full run measured, and the targets (from sections 1,
// 2 and 3). Its results are the full run's own: how long it took, Chromium's version.
import { execFileSync } from 'node:child_process';
import { CHROMIUM, now, pct, f } from '../lib/common.mjs';

export const name = 'header';
export const title = "the document's head: the run, the machine, the targets";

/** At the end of the full run (`ctx.started`: when it began). */
export async function run(ctx) {
  return {
    seconds: (now() - ctx.started) / 1000,
    chromium: execFileSync(CHROMIUM, ['--version'], { encoding: 'utf8' }).trim(),
  };
}

/**
 * `header`: this section's results; `meta`: the full run's (date, iterations, rtt, machine,
 * node); `all`: every section's entry in results.json (the targets read sections 1, 2 and 3).
 */
export function render(header, meta, all) {
  for (const k of ['lifecycle', 'relay', 'scale']) {
    if (!all[k]) throw new Error(`the targets need section ${k} in results.json (the full run writes it with the header)`);
  }
  const lc = all.lifecycle.results;
  const relay = all.relay.results;
  const { mem } = all.scale.results;
  const rttP = (k, p) => pct(relay.rtt[k], p);
  const thr = (xs, bytes) => (bytes / 1024 / 1024) / (pct(xs, 50) / 1000);
  const warmCreate = pct(lc['warm/playwright'].map((x) => x.create), 50);
  const warmTotal = pct(lc['warm/playwright'].map((x) => x.total), 50);
  const directTotal = pct(lc['direct/playwright'].map((x) => x.total), 50);
  const overhead = rttP('via', 50) - rttP('direct', 50);
  const bigRatio = thr(relay.big.via, relay.tenMb) / thr(relay.big.direct, relay.tenMb);
  const shotRatio = pct(relay.shot.direct, 50) / pct(relay.shot.via, 50);
  const perSession = (mem[20] - mem[0]) / 20 / 1024;
  const ok = (b) => (b ? 'met' : '**missed**');
  return `# Benchmarks

Measured with \`scripts/bench\` (\`node bench/run.mjs --iterations ${meta.iterations} --rtt ${meta.rtt}\`), all
modes side by side in one run, interleaved iteration by iteration so that machine noise lands on
each alike. Medians (p50) and ratios are what to compare: these machines are noisy.

- Date: ${meta.date}; run took ${f(header.seconds / 60, 1)} min
- Machine: ${meta.machine.cpus} cores (${meta.machine.cpu}), ${f(meta.machine.memory / 2 ** 30, 1)} GiB memory
- ${header.chromium}; browserd release build; Node ${meta.node}, playwright-core 1.65.1, ws 8.23.0
- The page is served on loopback. "Direct" launches the same Chromium with the same flags and
  connects to its own websocket: the script a user would otherwise write. browserd's browsers
  run in its sandbox (section 1c); direct ones as root with \`--no-sandbox\`.

## Targets

| target | measured | |
|---|---|---|
| warm create p50 ≤ 15 ms | ${f(warmCreate)} ms | ${ok(warmCreate <= 15)} |
| whole lifecycle p50 ≤ half of direct (Playwright) | ${f(warmTotal)} ms vs ${f(directTotal)} ms = ${f(warmTotal / directTotal, 2)}× | ${ok(warmTotal <= directTotal / 2)} |
| relay round-trip overhead p50 ≤ 50 µs | ${f(overhead)} µs | ${ok(overhead <= 50)} |
| large-message throughput ≥ 90% of direct | 10 MB evaluate ${f(bigRatio * 100, 0)}%, screenshot ${f(shotRatio * 100, 0)}% | ${ok(bigRatio >= 0.9 && shotRatio >= 0.9)} |
| browserd RSS ≤ 2 MiB per idle session | ${f(perSession, 2)} MiB | ${ok(perSession <= 2)} |
`;
}
