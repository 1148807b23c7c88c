// 3. Scale on one machine: concurrent creates (browserd versus direct Chromium), browserd's own
// memory per idle session, and how many sessions this machine holds before the first refusal
// (skipped with ctx.skipCapacity). Part of the full run (ctx.site).
import { chromium } from 'playwright-core';
import { now, sleep, log, f } from '../lib/common.mjs';
import { startBrowserd, launchDirect, stopDirect } from '../lib/processes.mjs';
import { memAvailableMiB } from '../lib/proc.mjs';

export const name = 'scale';
export const title = '3. scale on one machine';

async function benchConcurrentCreates(n) {
  const server = await startBrowserd({ warmPool: 2, maxSessions: n + 5 });
  await server.waitWarm(2);
  let s = now();
  const created = await Promise.all(Array.from({ length: n }, () => server.api('POST', '/v1/sessions', { keepAlive: true })));
  const viaMs = now() - s;
  const failed = created.filter((c) => c.status !== 201).length;
  await server.stop();
  s = now();
  const direct = await Promise.all(Array.from({ length: n }, () => launchDirect()));
  const directMs = now() - s;
  await Promise.all(direct.map(stopDirect));
  return { n, viaMs, directMs, failed };
}

async function benchIdleMemory() {
  const server = await startBrowserd({ warmPool: 0, maxSessions: 25 });
  await sleep(500);
  const rss = { 0: server.rssKiB() };
  for (const target of [10, 20]) {
    while ((await server.api('GET', '/v1/sessions?status=RUNNING')).body.length < target) {
      await server.api('POST', '/v1/sessions', { keepAlive: true });
    }
    await sleep(500);
    rss[target] = server.rssKiB();
  }
  await server.stop();
  return rss;
}

async function benchCapacity(ctx) {
  const server = await startBrowserd({ warmPool: 2 }); // the defaults a user gets
  const before = memAvailableMiB();
  const start = now();
  let count = 0; let failure = null; let lowest = before;
  for (;;) {
    const res = await server.api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600 });
    if (res.status !== 201) { failure = res; break; }
    const browser = await chromium.connectOverCDP(res.body.connectUrl);
    await browser.contexts()[0].pages()[0].goto(`${ctx.site.url}/page`);
    await browser.close();
    count++;
    lowest = Math.min(lowest, memAvailableMiB());
    if (count % 10 === 0) log(`capacity: ${count} sessions open`);
  }
  const seconds = (now() - start) / 1000;
  const max = (await server.project()).browserd.maxSessions;
  await server.stop();
  return { count, failure, seconds, before, lowest, max };
}

/** The three in turn, as the full run always ran them. */
export async function run(ctx) {
  log('concurrent creates');
  const creates = [await benchConcurrentCreates(10), await benchConcurrentCreates(20)];
  log('idle memory');
  const mem = await benchIdleMemory();
  const cap = ctx.skipCapacity ? null : (log('capacity'), await benchCapacity(ctx));
  return { creates, mem, cap };
}

/** `creates`: by burst size; `mem`: browserd's RSS (KiB) by idle sessions; `cap`: null if skipped. */
export function render({ creates, mem, cap }) {
  const perSession = (mem[20] - mem[0]) / 20 / 1024;
  return `## 3. Scale on one machine

| sessions created at once | browserd (warm pool 2): all ready | direct Chromium: all ready | refused |
|---|---|---|---|
${creates.map((c) => `| ${c.n} | ${f(c.viaMs, 0)} ms | ${f(c.directMs, 0)} ms | ${c.failed} |`).join('\n')}

browserd's own resident memory (Chromium excluded), idle keepAlive sessions, no warm pool:

| idle sessions | browserd RSS |
|---|---|
| 0 | ${f(mem[0] / 1024, 1)} MiB |
| 10 | ${f(mem[10] / 1024, 1)} MiB |
| 20 | ${f(mem[20] / 1024, 1)} MiB |
| per session | ${f(perSession, 2)} MiB |

${cap ? `Capacity with the defaults (\`--max-sessions\` ${cap.max} on this machine, warm pool 2): sessions
were created one after another, each with a page loaded on loopback and left open. The
machine held **${cap.count}** sessions; the next create was refused with HTTP ${cap.failure.status}:
\`${cap.failure.body.message}\` (with \`x-should-retry: false\`). MemAvailable went from
${cap.before} MiB to ${cap.lowest} MiB (${f((cap.before - cap.lowest) / Math.max(cap.count, 1), 0)} MiB per session with its page: ${f(1024 / Math.max((cap.before - cap.lowest) / Math.max(cap.count, 1), 1), 1)} sessions per GiB, the figure docs/operations.md sizes machines by). Filling it took ${f(cap.seconds, 0)} s.` : 'Capacity: skipped (--skip-capacity).'}
`;
}
