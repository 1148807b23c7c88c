// The official Node SDK (@browserbasehq/sdk), playwright-core and puppeteer-core against browserd.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Browserbase from '@browserbasehq/sdk';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { useBrowserd, waitUntil } from './harness.mjs';

let server;
let site;
let bb;

useBrowserd((ctx) => ({ server, site, bb } = ctx));

test('create, retrieve, list and release through the SDK', async () => {
  const s = await bb.sessions.create({ keepAlive: true, api_timeout: 90, userMetadata: { suite: 'node' } });
  assert.equal(s.status, 'RUNNING');
  assert.equal(s.keepAlive, true);
  assert.match(s.connectUrl, /^ws:\/\/127\.0\.0\.1:\d+\/\?signingKey=/);
  assert.equal(Date.parse(s.expiresAt) - Date.parse(s.startedAt), 90_000);
  const got = await bb.sessions.retrieve(s.id);
  assert.equal(got.connectUrl, s.connectUrl);
  const listed = await bb.sessions.list({ q: "user_metadata['suite']:'node'" });
  assert.deepEqual(listed.map((x) => x.id), [s.id]);
  const released = await bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
  assert.equal(released.status, 'COMPLETED');
  assert.ok(released.endedAt);
});

test('playwright-core connectOverCDP: a page, keepAlive across reconnects, release closes it', async () => {
  const s = await bb.sessions.create({ keepAlive: true });
  let browser = await chromium.connectOverCDP(s.connectUrl);
  let page = browser.contexts()[0].pages()[0];
  assert.ok(page, 'contexts()[0].pages()[0] exists');
  await page.goto(`${site.url}/login`);
  await page.goto(`${site.url}/app`);
  await page.click('#b');
  await browser.close();

  assert.equal((await bb.sessions.retrieve(s.id)).status, 'RUNNING');
  browser = await chromium.connectOverCDP(s.connectUrl);
  page = browser.contexts()[0].pages()[0];
  assert.equal(page.url(), `${site.url}/app`);
  assert.equal(await page.textContent('#h'), 'clicked');
  const cookies = await browser.contexts()[0].cookies();
  assert.ok(cookies.some((c) => c.name === 'auth' && c.value === 'yes'));

  const disconnected = new Promise((r) => browser.on('disconnected', r));
  await bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
  await disconnected;
  await assert.rejects(page.evaluate('1'), /closed/);
});

test('a timed-out session disconnects playwright and reads TIMED_OUT', async () => {
  const s = await bb.sessions.create({ keepAlive: true, api_timeout: 3 });
  const browser = await chromium.connectOverCDP(s.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  const started = Date.now();
  // Playwright shows the close reason browserd sent.
  await assert.rejects(page.waitForFunction('false', null, { timeout: 30_000 }), /session timed out/);
  assert.ok(Date.now() - started < 15_000);
  const ended = await bb.sessions.retrieve(s.id);
  assert.equal(ended.status, 'TIMED_OUT');
});

test('puppeteer-core: connect, reconnect with keepAlive, browser.close() completes the session', async () => {
  const s = await bb.sessions.create({ keepAlive: true });
  let browser = await puppeteer.connect({ browserWSEndpoint: s.connectUrl, defaultViewport: null });
  let [page] = await browser.pages();
  await page.goto(`${site.url}/pptr`);
  await page.evaluate(() => { window.kept = 'yes'; });
  await browser.disconnect();

  browser = await puppeteer.connect({ browserWSEndpoint: s.connectUrl, defaultViewport: null });
  [page] = await browser.pages();
  assert.equal(page.url(), `${site.url}/pptr`);
  assert.equal(await page.evaluate(() => window.kept), 'yes');
  await browser.close();
  await waitUntil(async () => (await bb.sessions.retrieve(s.id)).status === 'COMPLETED', 'COMPLETED');
});

test('without keepAlive the last disconnect completes the session', async () => {
  const s = await bb.sessions.create();
  const browser = await puppeteer.connect({ browserWSEndpoint: s.connectUrl });
  await browser.disconnect();
  await waitUntil(async () => (await bb.sessions.retrieve(s.id)).status === 'COMPLETED', 'COMPLETED');
});

test('errors arrive as the SDK error classes', async () => {
  await assert.rejects(bb.sessions.create({ api_timeout: 21601 }), (e) => e instanceof Browserbase.BadRequestError && /timeout must be <= 21600/.test(e.message));
  await assert.rejects(bb.sessions.retrieve('00000000-0000-0000-0000-000000000000'), Browserbase.NotFoundError);
  const wrong = new Browserbase({ apiKey: 'wrong', baseURL: server.baseURL });
  await assert.rejects(wrong.sessions.list(), Browserbase.AuthenticationError);

  const out = server.cli('project', 'create', 'node-limited', '--concurrency', '1');
  const key = out.split('\n').find((l) => l.startsWith('API key:')).split(/\s+/)[2];
  const limited = new Browserbase({ apiKey: key, baseURL: server.baseURL });
  const first = await limited.sessions.create();
  await assert.rejects(limited.sessions.create(), (e) => e instanceof Browserbase.RateLimitError
    && /limit 1, currently 1/.test(e.message) && e.headers['x-should-retry'] === 'false');
  await limited.sessions.update(first.id, { status: 'REQUEST_RELEASE' });
});

test('projects, the project default timeout and usage', async () => {
  const [p] = await bb.projects.list();
  const patched = await bb.patch(`/v1/projects/${p.id}`, { body: { defaultTimeout: 600 } });
  assert.equal(patched.defaultTimeout, 600);
  assert.equal((await bb.projects.retrieve(p.id)).defaultTimeout, 600);
  const s = await bb.sessions.create();
  assert.equal(Date.parse(s.expiresAt) - Date.parse(s.startedAt), 600_000);
  await bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
  const usage = await bb.projects.usage(p.id);
  assert.ok(usage.browserMinutes >= 1);
  assert.equal(usage.proxyBytes, 0);
});
