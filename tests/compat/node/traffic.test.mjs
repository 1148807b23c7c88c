// Where sessions' traffic goes, asked for through the official Node SDK and driven with
// playwright-core: through an upstream proxy (Debian's tinyproxy with basic auth, microsocks
// for SOCKS5), blockAds, and a private CA's certificate uploaded for a session to trust.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { toFile } from '@browserbasehq/sdk';
import { PROXY_PASSWORD, useBrowserd, waitUntil } from './harness.mjs';

let site;
let bb;

useBrowserd((ctx) => ({ site, bb } = ctx));

async function freePort() {
  const probe = createServer().listen(0, '127.0.0.1');
  await new Promise((r) => probe.once('listening', r));
  const { port } = probe.address();
  await new Promise((r) => probe.close(r));
  return port;
}

/** Waits until something accepts connections on 127.0.0.1:port. */
function waitListening(port, name) {
  return waitUntil(() => new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  }), `${name} to listen`);
}

/** A tinyproxy on loopback asking for `user` and PROXY_PASSWORD. */
async function startTinyproxy(user) {
  const dir = mkdtempSync(join(tmpdir(), 'browserd-node-tinyproxy-'));
  const port = await freePort();
  const log = join(dir, 'access.log');
  const conf = join(dir, 'tinyproxy.conf');
  // No ConnectPort line: CONNECT to any port (browserd tunnels plain HTTP too).
  writeFileSync(conf, `Port ${port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Connect\n`
    + `LogFile "${log}"\nBasicAuth ${user} ${PROXY_PASSWORD}\n`);
  const proc = spawn('tinyproxy', ['-d', '-c', conf], { stdio: 'ignore' });
  await waitListening(port, 'tinyproxy');
  return {
    server: `http://127.0.0.1:${port}`,
    port,
    /** The host:port of every CONNECT it was asked for. */
    tunnels: () => readFileSync(log, 'utf8').split('\n')
      .filter((l) => l.includes('): CONNECT ')).map((l) => l.split('): CONNECT ')[1].split(' ')[0]),
    stop: () => { proc.kill(); rmSync(dir, { recursive: true, force: true }); },
  };
}

const proxy = await startTinyproxy('dave');
after(() => proxy.stop());

test('an external proxy carries the session\'s traffic and proxyBytes counts it', async () => {
  const s = await bb.sessions.create({
    keepAlive: true,
    proxies: [
      { type: 'external', server: proxy.server, username: 'dave', password: PROXY_PASSWORD, domainPattern: '127\\.0\\.0\\.1' },
    ],
  });
  const browser = await chromium.connectOverCDP(s.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await page.goto(`${site.url}/app`);
  assert.equal(await page.textContent('#h'), 'Hello');
  assert.ok(proxy.tunnels().includes(site.url.replace('http://', '')), proxy.tunnels().join(','));
  await browser.close();
  await bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
  const ended = await bb.sessions.retrieve(s.id);
  assert.ok(ended.proxyBytes > 300, `proxyBytes ${ended.proxyBytes}`);
  const usage = await bb.projects.usage(s.projectId);
  assert.ok(usage.proxyBytes >= ended.proxyBytes, JSON.stringify(usage));
});

test('a proxy that refuses the credentials fails the navigation; the session log names it', async () => {
  const s = await bb.sessions.create({
    keepAlive: true,
    proxies: [{ type: 'external', server: proxy.server, username: 'dave', password: 'wrong' }],
  });
  const browser = await chromium.connectOverCDP(s.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await assert.rejects(page.goto(`${site.url}/app`), /ERR_SOCKS_CONNECTION_FAILED/);
  const named = await waitUntil(async () => (await bb.sessions.logs.list(s.id)).find((l) =>
    l.method === 'browserd.proxyFailed'
    && l.request?.params?.proxy === `http://dave@127.0.0.1:${proxy.port}`
    && l.request.params.reason.includes('credentials')), 'the refusal in the session log');
  assert.ok(!JSON.stringify(named).includes('wrong'), 'no password in the log');
  await browser.close();
});

test('blockAds keeps an ad host out and first-party images in', async () => {
  const s = await bb.sessions.create({ keepAlive: true, browserSettings: { blockAds: true } });
  const browser = await chromium.connectOverCDP(s.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await page.goto(`${site.url}/ads`, { waitUntil: 'load' });
  assert.deepEqual(await page.evaluate('[own.naturalWidth, ad.naturalWidth]'), [1, 0]);
  await waitUntil(async () => (await bb.sessions.logs.list(s.id)).find((l) =>
    l.method === 'browserd.egressRefused' && l.request?.params?.host === 'ad.doubleclick.net'
    && l.request.params.reason.includes('blockAds')), 'the ad host in the session log');
  await browser.close();
});

test('a geolocation no pool serves is a 400 that says so', async () => {
  await assert.rejects(
    bb.sessions.create({ proxies: [{ type: 'browserbase', geolocation: { country: 'JP' } }] }),
    (e) => e.status === 400 && /--proxy-pool/.test(e.message),
  );
});

test('a SOCKS5 upstream with a username and password carries the session\'s traffic', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'browserd-node-microsocks-'));
  const port = await freePort();
  const log = join(dir, 'connections.log');
  const out = openSync(log, 'w');
  // It logs each tunnel to stderr: "client[N] 127.0.0.1: connected to host:port".
  const proc = spawn('microsocks', ['-i', '127.0.0.1', '-p', String(port), '-u', 'erin', '-P', PROXY_PASSWORD],
    { stdio: ['ignore', 'ignore', out] });
  try {
    await waitListening(port, 'microsocks');
    const s = await bb.sessions.create({
      keepAlive: true,
      proxies: [{ type: 'external', server: `socks5://127.0.0.1:${port}`, username: 'erin', password: PROXY_PASSWORD }],
    });
    const browser = await chromium.connectOverCDP(s.connectUrl);
    const page = browser.contexts()[0].pages()[0];
    await page.goto(`${site.url}/app`);
    assert.equal(await page.textContent('#h'), 'Hello');
    assert.ok(readFileSync(log, 'utf8').includes(`connected to ${site.url.replace('http://', '')}`));
    await browser.close();
    await bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
  } finally {
    proc.kill();
    closeSync(out);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a CA certificate uploaded through the SDK is trusted by the session that names it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'browserd-node-ca-'));
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=browserd node CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', 'ca.key', '-out', 'ca.pem');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'site.key', '-out', 'site.csr');
  writeFileSync(join(dir, 'site.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', 'site.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '1', '-extfile', 'site.ext', '-out', 'site.pem');
  const port = await freePort();
  const server = spawn('openssl', ['s_server', '-quiet', '-www', '-accept', `127.0.0.1:${port}`,
    '-cert', 'site.pem', '-key', 'site.key'], { cwd: dir, stdio: 'ignore' });
  try {
    await waitListening(port, 'openssl s_server');
    const cert = await bb.certificates.create({ file: await toFile(readFileSync(join(dir, 'ca.pem')), 'ca.pem') });
    assert.ok((await bb.certificates.list()).some((c) => c.id === cert.id));
    const url = `https://127.0.0.1:${port}/`;
    for (const trusted of [true, false]) {
      const s = await bb.sessions.create({
        keepAlive: true,
        ...(trusted ? { proxySettings: { caCertificates: [cert.id] } } : {}),
      });
      const browser = await chromium.connectOverCDP(s.connectUrl);
      const page = browser.contexts()[0].pages()[0];
      if (trusted) {
        await page.goto(url);
        assert.match(await page.content(), /s_server/);
      } else {
        await assert.rejects(page.goto(url), /ERR_CERT_AUTHORITY_INVALID/);
      }
      await browser.close();
      await bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
    }
    await bb.certificates.delete(cert.id);
    await assert.rejects(bb.certificates.retrieve(cert.id), (e) => e.status === 404);
  } finally {
    server.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a navigation policy (SDK 2.24) holds on navigations, redirects, frames and popups, as it was at create', async () => {
  // 127.0.0.1 and localhost are the same loopback site under two names: one allowed.
  const blockedSite = site.url.replace('127.0.0.1', 'localhost');
  const policy = await bb.navigationPolicies.create({
    name: 'loopback by address only',
    defaultDecision: 'block',
    domainOverrides: [{ domain: '127.0.0.1', decision: 'allow' }],
  });
  assert.equal(policy.enabled, true);
  assert.equal(policy.unknownDomainBehavior, 'block');
  assert.ok((await bb.navigationPolicies.list()).data.some((p) => p.id === policy.id));
  const s = await bb.sessions.create({ keepAlive: true, browserSettings: { riskPolicyId: policy.id } });
  const browser = await chromium.connectOverCDP(s.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await page.goto(`${site.url}/app`);
  assert.equal(await page.textContent('#h'), 'Hello');
  await assert.rejects(page.goto(`${blockedSite}/app`), /ERR_SOCKS_CONNECTION_FAILED/);
  await assert.rejects(
    page.goto(`${site.url}/redirect?to=${encodeURIComponent(`${blockedSite}/app`)}`),
    /ERR_SOCKS_CONNECTION_FAILED/,
    'a redirect to a blocked host',
  );
  // A frame of a blocked host loads nothing; a popup to it fails. (A fresh tab: the failed
  // navigations' error pages may still be committing in the first.)
  const tab = await page.context().newPage();
  await tab.goto(`${site.url}/app`);
  await tab.evaluate((url) => new Promise((done) => {
    const frame = document.createElement('iframe');
    frame.src = url;
    frame.onload = done;
    frame.onerror = done;
    document.body.appendChild(frame);
    setTimeout(done, 5000);
  }), `${blockedSite}/app`);
  const framed = tab.frames().find((f) => f !== tab.mainFrame());
  assert.ok(framed, 'the frame exists');
  assert.equal(await framed.$('#h'), null, 'the blocked frame shows no page of the site');
  const [popup] = await Promise.all([
    tab.context().waitForEvent('page'),
    tab.evaluate((url) => { window.open(url); }, `${blockedSite}/app`),
  ]);
  await popup.waitForLoadState().catch(() => {});
  assert.equal(await popup.$('#h'), null, 'the blocked popup shows no page of the site');
  await waitUntil(async () => (await bb.sessions.logs.list(s.id)).find((l) =>
    l.method === 'browserd.egressRefused' && l.request?.params?.rule === 'navigation_policy'
    && l.request.params.host === 'localhost'), 'the refusal in the session log');

  // An edit applies to new sessions; this one keeps the policy it was created with.
  await bb.navigationPolicies.update(policy.id, { defaultDecision: 'allow' });
  await assert.rejects(tab.goto(`${blockedSite}/app`), /ERR_SOCKS_CONNECTION_FAILED/);
  const s2 = await bb.sessions.create({ keepAlive: true, browserSettings: { riskPolicyId: policy.id } });
  const browser2 = await chromium.connectOverCDP(s2.connectUrl);
  const page2 = browser2.contexts()[0].pages()[0];
  await page2.goto(`${blockedSite}/app`);
  assert.equal(await page2.textContent('#h'), 'Hello');
  await browser.close();
  await browser2.close();
  await bb.navigationPolicies.delete(policy.id);
  await assert.rejects(bb.navigationPolicies.retrieve(policy.id), /404/);
});
