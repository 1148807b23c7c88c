// 1. Lifecycle: create, connect, navigate, release for browserd with its warm pool, browserd
// cold, and Chromium launched directly (what a user would otherwise write), with Playwright's
// connectOverCDP and with a raw CDP websocket client. Part of the full run (ctx.site, ctx.warm,
// ctx.cold: the runner's shared servers).
import { chromium } from 'playwright-core';
import { now, pct, log, f } from '../lib/common.mjs';
import { launchDirect, stopDirect } from '../lib/processes.mjs';
import { Cdp } from '../lib/cdp.mjs';

export const name = 'lifecycle';
export const title = '1. lifecycle: create, connect, navigate, release';

async function lifecycle(mode, client, ctx) {
  const t = {};
  let start = now();
  let target; // { url, release() }
  if (mode === 'direct') {
    const d = await launchDirect();
    target = { url: d.wsUrl, release: () => stopDirect(d) };
  } else {
    const server = ctx[mode];
    const { status, body } = await server.api('POST', '/v1/sessions', { keepAlive: true });
    if (status !== 201) throw new Error(`create: ${status} ${JSON.stringify(body)}`);
    target = { url: body.connectUrl, release: () => server.api('POST', `/v1/sessions/${body.id}`, { status: 'REQUEST_RELEASE' }) };
  }
  t.create = now() - start;

  start = now();
  let browser; let cdp; let page; let pageSession;
  if (client === 'playwright') {
    browser = await chromium.connectOverCDP(target.url);
    page = browser.contexts()[0].pages()[0];
  } else {
    cdp = await Cdp.connect(target.url);
    await cdp.call('Browser.getVersion');
  }
  t.connect = now() - start;

  start = now();
  if (client === 'playwright') {
    await page.goto(`${ctx.site.url}/page`);
  } else {
    pageSession = await cdp.firstPage();
    await cdp.call('Page.enable', {}, pageSession);
    const loaded = cdp.event('Page.loadEventFired');
    await cdp.call('Page.navigate', { url: `${ctx.site.url}/page` }, pageSession);
    await loaded;
  }
  t.navigate = now() - start;

  start = now();
  if (mode === 'direct') {
    if (browser) await browser.close(); else cdp.close();
    await target.release();
  } else {
    await target.release();
    if (browser) await browser.close(); else cdp.close();
  }
  t.release = now() - start;
  t.total = t.create + t.connect + t.navigate + t.release;
  return t;
}

async function benchLifecycle(ctx) {
  const ITERATIONS = ctx.iterations;
  const modes = ['warm', 'cold', 'direct'];
  const results = {};
  for (const client of ['playwright', 'raw']) {
    for (const m of modes) results[`${m}/${client}`] = [];
    for (let i = 0; i < ITERATIONS; i++) {
      // Interleaved, so machine noise lands on every mode alike. Each iteration starts with
      // the warm pool full (untimed), so no refill runs under another mode's measurement.
      // The order rotates too, so whatever one mode leaves behind (a browser still settling
      // after its launch) falls on each of the others in turn.
      for (let k = 0; k < modes.length; k++) {
        const m = modes[(i + k) % modes.length];
        await ctx.warm.waitWarm(ctx.warm.warmPool);
        results[`${m}/${client}`].push(await lifecycle(m, client, ctx));
      }
      if (i % 10 === 9) log(`lifecycle ${client}: ${i + 1}/${ITERATIONS}`);
    }
  }
  return results;
}

export const run = benchLifecycle;

function stageTable(results) {
  const rows = [];
  for (const client of ['playwright', 'raw']) {
    const base = results[`direct/${client}`];
    for (const mode of ['warm', 'cold', 'direct']) {
      const r = results[`${mode}/${client}`];
      const cells = ['create', 'connect', 'navigate', 'release', 'total'].map((st) => {
        const xs = r.map((x) => x[st]);
        return `${f(pct(xs, 50))} / ${f(pct(xs, 95))}`;
      });
      const ratio = pct(r.map((x) => x.total), 50) / pct(base.map((x) => x.total), 50);
      const label = { warm: 'browserd, warm pool', cold: 'browserd, cold', direct: 'direct Chromium (baseline)' }[mode];
      rows.push(`| ${client === 'raw' ? 'raw CDP' : 'Playwright'} | ${label} | ${cells.join(' | ')} | ${f(ratio, 2)}× |`);
    }
  }
  return ['| client | mode | create | connect | navigate | release | total | total p50 vs direct |',
    '|---|---|---|---|---|---|---|---|', ...rows].join('\n');
}

/** `lc`: the runs by `mode/client`; `meta.iterations`: how many each. */
export function render(lc, meta) {
  return `## 1. Lifecycle, ${meta.iterations} iterations each (ms, p50 / p95)

create = \`POST /v1/sessions\` until 201 (direct: spawn until \`DevToolsActivePort\`); connect =
Playwright \`connectOverCDP\` to the first page, or a raw websocket plus \`Browser.getVersion\`;
navigate = load a page on loopback; release = \`REQUEST_RELEASE\` until 200, which returns after
the browser is stopped (direct: kill the process group, wait for exit, remove the profile).
Before each iteration the bench waits (untimed) until the warm pool is full again, so a refill
never runs under another mode's measurement; the refill that follows a warm create does run
during that warm iteration's later stages, at low CPU priority.

${stageTable(lc)}
`;
}
