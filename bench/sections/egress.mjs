// 6. The egress path: page loads straight out, through browserd's egress and on to an upstream
// proxy (tinyproxy); warm and cold creates with proxies (--only-egress; the full run too).
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { chromium } from 'playwright-core';
import { now, sleep, pct } from '../lib/common.mjs';
import { servers, startSite, freePort, startBrowserd } from '../lib/processes.mjs';

export const name = 'egress';
export const title = '6. the egress path';

/** A tinyproxy on loopback (no auth, CONNECT to any port): the upstream for section 6. */
async function startTinyproxy() {
  const dir = mkdtempSync(join(tmpdir(), 'bench-tinyproxy-'));
  const port = await freePort();
  const conf = join(dir, 'tinyproxy.conf');
  writeFileSync(conf, `Port ${port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 100\nLogLevel Error\nLogFile "${join(dir, 'log')}"\n`);
  const proc = spawn('tinyproxy', ['-d', '-c', conf], { stdio: 'ignore' });
  servers.add(proc);
  for (;;) {
    try { await fetch(`http://127.0.0.1:${port}/`); break; } catch { await sleep(20); }
  }
  return { server: `http://127.0.0.1:${port}`, stop: () => { proc.kill(); rmSync(dir, { recursive: true, force: true }); } };
}

/**
 * What the egress path costs a page: the same loopback page loaded in sessions whose
 * browsers connect straight out (--sandbox off), through browserd's egress (the default),
 * and through the egress to an upstream proxy; each page load on a new connection (the site
 * closes every one) and on a kept-alive one. Then the create: warm with and without
 * proxies (every browser has an egress, so a proxied session takes a warm browser), and
 * cold (what a proxied session would cost if only proxied browsers had an egress: a
 * browser's proxy is fixed at launch, so it could not come from the pool).
 */
async function benchEgress(ctx) {
  const ITERATIONS = ctx.iterations;
  const site = await startSite();
  const closing = createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.setHeader('connection', 'close');
    res.end('<html><head><title>bench</title></head><body><h1>browserd bench</h1></body></html>');
  });
  closing.listen(0, '127.0.0.1');
  await once(closing, 'listening');
  const closingUrl = `http://127.0.0.1:${closing.address().port}`;
  const tiny = await startTinyproxy();
  const off = await startBrowserd({ warmPool: 1, sandbox: 'off' });
  const on = await startBrowserd({ warmPool: 1 });
  const cold = await startBrowserd({ warmPool: 0 });
  const proxies = [{ type: 'external', server: tiny.server }];
  const modes = {
    direct: { server: off, body: { keepAlive: true } },
    egress: { server: on, body: { keepAlive: true } },
    upstream: { server: on, body: { keepAlive: true, proxies } },
    blockAds: { server: on, body: { keepAlive: true, browserSettings: { blockAds: true } } },
  };
  for (const m of Object.values(modes)) {
    await m.server.waitWarm(1);
    m.session = (await m.server.api('POST', '/v1/sessions', m.body)).body;
    m.browser = await chromium.connectOverCDP(m.session.connectUrl);
    m.page = m.browser.contexts()[0].pages()[0];
  }
  const n = Math.max(10, ITERATIONS);
  const loads = { fresh: {}, kept: {} };
  for (const [kind, url] of [['fresh', closingUrl], ['kept', site.url]]) {
    for (const k of Object.keys(modes)) {
      loads[kind][k] = [];
      for (let i = 0; i < 3; i++) await modes[k].page.goto(`${url}/?warmup=${i}`);
    }
    for (let i = 0; i < n; i++) {
      for (const k of Object.keys(modes)) {
        const t = now();
        await modes[k].page.goto(`${url}/?i=${i}`, { waitUntil: 'load' });
        loads[kind][k].push(now() - t);
      }
    }
  }
  for (const m of Object.values(modes)) {
    await m.browser.close();
    await m.server.api('POST', `/v1/sessions/${m.session.id}`, { status: 'REQUEST_RELEASE' });
  }
  const creates = { plain: [], proxied: [], blockAds: [], cold: [] };
  const timeCreate = async (server, body) => {
    const t = now();
    const { status, body: s } = await server.api('POST', '/v1/sessions', body);
    const ms = now() - t;
    if (status !== 201) throw new Error(`create: ${status} ${JSON.stringify(s)}`);
    await server.api('POST', `/v1/sessions/${s.id}`, { status: 'REQUEST_RELEASE' });
    return ms;
  };
  for (let i = 0; i < Math.max(5, Math.round(n / 2)); i++) {
    await on.waitWarm(1);
    creates.plain.push(await timeCreate(on, {}));
    await on.waitWarm(1);
    creates.proxied.push(await timeCreate(on, { proxies }));
    await on.waitWarm(1);
    creates.blockAds.push(await timeCreate(on, { browserSettings: { blockAds: true } }));
    creates.cold.push(await timeCreate(cold, { proxies }));
  }
  // "blockAds: ad-block lists read hosts=… ms=…" (its fields in the server's log line).
  const listLine = on.log().split('\n').find((l) => l.includes('ad-block lists read')) ?? '';
  const adHosts = /hosts=(\d+)/.exec(listLine)?.[1];
  const adListMs = /ms=(\d+)/.exec(listLine)?.[1];
  for (const s of [off, on, cold]) await s.stop();
  tiny.stop();
  closing.close();
  site.close();
  return { n, loads, creates, adHosts, adListMs };
}

export const run = benchEgress;

export function render(e) {
  const f = (xs) => `${pct(xs, 50).toFixed(1)} / ${pct(xs, 95).toFixed(1)}`;
  const row = (name, xs) => `| ${name} | ${f(xs.direct)} | ${f(xs.egress)} | ${f(xs.upstream)} | ${f(xs.blockAds)} | ${(pct(xs.egress, 50) - pct(xs.direct, 50)).toFixed(1)} |`;
  const c = e.creates;
  return `## 6. The egress path: what it costs a page, and what each choice costs a create (ms, p50 / p95)

Every sandboxed browser's connections go through browserd's egress proxy (SOCKS5 inside its
network namespace), where allowedDomains and proxies are applied; with \`--sandbox off\`
Chromium connects straight out. The same loopback page, Playwright \`page.goto\` to
\`load\`, ${e.n} loads per mode, interleaved, in one keepAlive session per mode. Upstream:
tinyproxy on loopback (\`proxies: [{type: "external"}]\`; every connection a CONNECT).

| page load | straight out (\`--sandbox off\`) | browserd's egress (default) | egress → upstream proxy | egress with \`blockAds\` | egress − straight, p50 |
|---|---|---|---|---|---|
${row('new connection each load (the site closes it)', e.loads.fresh)}
${row('kept-alive connection', e.loads.kept)}

| create (sandbox on) | p50 / p95 |
|---|---|
| warm, no proxies | ${f(c.plain)} |
| warm, \`proxies\` (the egress is every browser's: the pool serves it) | ${f(c.proxied)} |
| warm, \`blockAds\` (the lists were read by the first such session, in the page-load runs above) | ${f(c.blockAds)} |
| cold, \`proxies\` (what it would cost if only proxied browsers had an egress: the proxy is fixed at launch, so no warm browser could serve it) | ${f(c.cold)} |

**The choice this measures** (issue 13): every browser, warm ones too, talks to an egress of
its own in browserd. Its cost on a page load in this run: ${(pct(e.loads.fresh.egress, 50) - pct(e.loads.fresh.direct, 50)).toFixed(1)} ms p50 with a new
connection per load, ${(pct(e.loads.kept.egress, 50) - pct(e.loads.kept.direct, 50)).toFixed(1)} ms on a kept-alive one, against
${pct(e.loads.fresh.direct, 50).toFixed(0)} ms loads. What it saves a proxied session's create: ${pct(c.proxied, 50).toFixed(1)} ms from the pool
instead of ${pct(c.cold, 50).toFixed(0)} ms cold (${(pct(c.cold, 50) / pct(c.proxied, 50)).toFixed(0)}×). The sandbox needs the egress anyway (its
namespace has no other way out), so allowedDomains, blockAds and proxies cost no extra hop.
\`blockAds\` checks each connection's host against ${e.adHosts ?? '?'} listed hosts (a hash lookup per
suffix); reading the lists took ${e.adListMs ?? '?'} ms, once per server start, on the first session that asks.
`;
}
