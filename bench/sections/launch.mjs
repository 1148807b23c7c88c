// 8. Launching Chromium through Debian's wrapper script versus the binary: cold creates and
// Chromium's memory per session (--only-launch; the full run too).
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { now, sleep, pct } from '../lib/common.mjs';
import { startSite, startBrowserd } from '../lib/processes.mjs';
import { chromiumPssKiB } from '../lib/proc.mjs';

export const name = 'launch';
export const title = "8. launching Chromium: Debian's wrapper or the binary";

/**
 * Debian's /usr/bin/chromium is a shell script: it sources /etc/chromium.d and adds flags
 * (among them --load-extension for every package in /usr/share/chromium/extensions) before
 * exec'ing /usr/lib/chromium/chromium. Cold creates (pool off) through each, interleaved, and
 * the Chromium memory of 4 idle sessions on the same loopback page.
 */
async function benchLaunch(ctx) {
  const ITERATIONS = ctx.iterations;
  const site = await startSite();
  const paths = { wrapper: '/usr/bin/chromium', binary: '/usr/lib/chromium/chromium' };
  const servers = {};
  for (const [k, path] of Object.entries(paths)) {
    servers[k] = await startBrowserd({ warmPool: 0, maxSessions: 8, extra: ['--chromium', path] });
  }
  const n = Math.max(5, Math.round(ITERATIONS / 2));
  const creates = { wrapper: [], binary: [] };
  for (let i = 0; i < n + 2; i++) {
    for (const k of Object.keys(paths)) {
      const t = now();
      const { status, body } = await servers[k].api('POST', '/v1/sessions', {});
      const ms = now() - t;
      if (status !== 201) throw new Error(`create: ${status} ${JSON.stringify(body)}`);
      await servers[k].api('POST', `/v1/sessions/${body.id}`, { status: 'REQUEST_RELEASE' });
      if (i >= 2) creates[k].push(ms);
    }
  }
  const memory = {};
  for (const k of Object.keys(paths)) {
    const held = [];
    for (let i = 0; i < 4; i++) {
      const { body } = await servers[k].api('POST', '/v1/sessions', { keepAlive: true });
      const browser = await chromium.connectOverCDP(body.connectUrl);
      await browser.contexts()[0].pages()[0].goto(`${site.url}/`);
      held.push({ id: body.id, browser });
    }
    await sleep(3000);
    memory[k] = chromiumPssKiB(join(servers[k].dataDir, 'sessions')) / 1024 / held.length;
    for (const h of held) {
      await h.browser.close();
      await servers[k].api('POST', `/v1/sessions/${h.id}`, { status: 'REQUEST_RELEASE' });
    }
  }
  for (const s of Object.values(servers)) await s.stop();
  site.close();
  return { n, creates, memory };
}

export const run = benchLaunch;

export function render(r) {
  const f = (xs) => `${pct(xs, 50).toFixed(1)} / ${pct(xs, 95).toFixed(1)}`;
  return `## 8. Launching Chromium: Debian's wrapper script or the binary (sandbox on, pool off)

| | \`/usr/bin/chromium\` (wrapper) | \`/usr/lib/chromium/chromium\` | binary ÷ wrapper |
|---|---|---|---|
| cold create, ms p50 / p95 (${r.n} interleaved) | ${f(r.creates.wrapper)} | ${f(r.creates.binary)} | ${(pct(r.creates.binary, 50) / pct(r.creates.wrapper, 50)).toFixed(2)} |
| Chromium PSS per session, 4 idle sessions on one loopback page (MiB) | ${r.memory.wrapper.toFixed(0)} | ${r.memory.binary.toFixed(0)} | ${(r.memory.binary / r.memory.wrapper).toFixed(2)} |
`;
}
