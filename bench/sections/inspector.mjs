// 2b. The inspector's cost: logging and recording both on (the default) versus both off, in
// round trips and whole warm lifecycles. Part of the full run (ctx.site, ctx.warm, ctx.cold:
// the runner's shared servers).
import { chromium } from 'playwright-core';
import { now, pct, f } from '../lib/common.mjs';
import { Cdp } from '../lib/cdp.mjs';

export const name = 'inspector';
export const title = '2b. logging and recording on and off';

const BOTH_OFF = { logSession: false, recordSession: false };

/** One warm session, Playwright, with logging and recording on or off: the whole lifecycle. */
async function inspectedRound(server, site, settings) {
  const start = now();
  const created = await server.api('POST', '/v1/sessions', { keepAlive: true, browserSettings: settings });
  if (created.status !== 201) throw new Error(`create: ${created.status} ${JSON.stringify(created.body)}`);
  const create = now() - start;
  const browser = await chromium.connectOverCDP(created.body.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await page.goto(`${site.url}/page`);
  await server.api('POST', `/v1/sessions/${created.body.id}`, { status: 'REQUEST_RELEASE' });
  await browser.close();
  return { create, total: now() - start };
}

async function benchInspector(ctx) {
  const { iterations: ITERATIONS, rtt: RTT_CALLS } = ctx;
  // Round trips: two sessions on the cold server, one with logging and recording on (the
  // defaults), one with both off, measured in alternating rounds.
  const server = ctx.cold;
  const on = (await server.api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600 })).body;
  const off = (await server.api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600, browserSettings: BOTH_OFF })).body;
  const clients = { on: await Cdp.connect(on.connectUrl), off: await Cdp.connect(off.connectUrl) };
  const pages = { on: await clients.on.firstPage(), off: await clients.off.firstPage() };
  const rtt = { on: [], off: [] };
  const rounds = 10;
  for (let r = 0; r < rounds; r++) {
    for (const k of r % 2 ? ['on', 'off'] : ['off', 'on']) {
      for (let i = 0; i < RTT_CALLS / rounds; i++) {
        const s = now();
        await clients[k].call('Runtime.evaluate', { expression: '1+1' }, pages[k]);
        rtt[k].push((now() - s) * 1000);
      }
    }
  }
  clients.on.close(); clients.off.close();
  for (const s of [on, off]) await server.api('POST', `/v1/sessions/${s.id}`, { status: 'REQUEST_RELEASE' });

  // Lifecycles on the warm server, interleaved.
  const lifecycle = { on: [], off: [] };
  const n = Math.max(10, Math.floor(ITERATIONS / 2));
  for (let i = 0; i < n; i++) {
    for (const k of i % 2 ? ['on', 'off'] : ['off', 'on']) {
      await ctx.warm.waitWarm(ctx.warm.warmPool);
      lifecycle[k].push(await inspectedRound(ctx.warm, ctx.site, k === 'on' ? {} : BOTH_OFF));
    }
  }
  return { rtt, lifecycle, n };
}

export const run = benchInspector;

/** `meta.rtt`: the round trips per session. */
export function render(inspector, meta) {
  return `## 2b. Logging and recording: both on (the default) versus both off

Every session logs its CDP commands and replies and records its primary tab with rrweb unless
\`browserSettings\` turns them off. Round trips: two sessions side by side on one server, ${meta.rtt}
\`Runtime.evaluate("1+1")\` calls each in alternating rounds. Lifecycle: warm sessions, Playwright
connect, load a page on loopback, release; ${inspector.n} of each, interleaved.

| measure | both on | both off | on − off |
|---|---|---|---|
| round trip p50 | ${f(pct(inspector.rtt.on, 50))} µs | ${f(pct(inspector.rtt.off, 50))} µs | ${f(pct(inspector.rtt.on, 50) - pct(inspector.rtt.off, 50))} µs |
| round trip p99 | ${f(pct(inspector.rtt.on, 99))} µs | ${f(pct(inspector.rtt.off, 99))} µs | ${f(pct(inspector.rtt.on, 99) - pct(inspector.rtt.off, 99))} µs |
| create p50 | ${f(pct(inspector.lifecycle.on.map((x) => x.create), 50))} ms | ${f(pct(inspector.lifecycle.off.map((x) => x.create), 50))} ms | ${f(pct(inspector.lifecycle.on.map((x) => x.create), 50) - pct(inspector.lifecycle.off.map((x) => x.create), 50))} ms |
| lifecycle p50 | ${f(pct(inspector.lifecycle.on.map((x) => x.total), 50))} ms | ${f(pct(inspector.lifecycle.off.map((x) => x.total), 50))} ms | ${f(pct(inspector.lifecycle.on.map((x) => x.total), 50) - pct(inspector.lifecycle.off.map((x) => x.total), 50))} ms |
| lifecycle p95 | ${f(pct(inspector.lifecycle.on.map((x) => x.total), 95))} ms | ${f(pct(inspector.lifecycle.off.map((x) => x.total), 95))} ms | |
`;
}
