// The session inspector's API through the official Node SDK: debug URLs, logs, recording.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { useBrowserd, waitUntil } from './harness.mjs';

let server;
let site;
let bb;

useBrowserd((ctx) => ({ server, site, bb } = ctx));

test('debug URLs, logs and the recording, field by field', async () => {
  const s = await bb.sessions.create({ keepAlive: true });
  const browser = await chromium.connectOverCDP(s.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await page.goto(`${site.url}/app`);
  await page.click('#b');

  const host = server.baseURL.replace('http://', '');
  const debug = await bb.sessions.debug(s.id, { expiresIn: 600 });
  assert.match(debug.debuggerFullscreenUrl, new RegExp(`^http://${host}/debug/[^/]+/live$`));
  assert.match(debug.debuggerUrl, /\/devtools\/inspector\.html\?ws=/);
  assert.match(debug.wsUrl, new RegExp(`^ws://${host}/debug/[^/]+/devtools/browser$`));
  assert.equal(debug.pages.length, 1);
  const [tab] = debug.pages;
  for (const field of ['id', 'url', 'title', 'faviconUrl', 'debuggerUrl', 'debuggerFullscreenUrl']) {
    assert.equal(typeof tab[field], 'string', field);
  }
  assert.equal(tab.url, `${site.url}/app`);
  assert.equal(tab.title, '/app');
  // The grant carries its expiry: 600 s from now.
  const expiry = Number(/\/debug\/[0-9a-f]+\.(\d+)\./.exec(debug.debuggerFullscreenUrl)[1]);
  assert.ok(Math.abs(expiry - (Date.now() / 1000 + 600)) < 30, `expiry ${expiry}`);
  const live = await fetch(tab.debuggerFullscreenUrl);
  assert.equal(live.status, 200);
  assert.match(await live.text(), /browserd live view/);

  const logs = await waitUntil(async () => {
    const all = await bb.sessions.logs.list(s.id);
    return all.some((l) => l.method === 'Page.navigate') && all;
  }, 'Page.navigate in the log');
  const nav = logs.find((l) => l.method === 'Page.navigate');
  assert.equal(nav.request.params.url, `${site.url}/app`);
  assert.equal(typeof nav.pageId, 'number');
  assert.equal(typeof nav.sessionId, 'string');
  assert.equal(typeof nav.timestamp, 'number');
  assert.equal(nav.frameId, nav.response.result.frameId);
  assert.ok(nav.eventId);

  // A cold session's recording may start in about:blank; wait for the page's own snapshot
  // and the changes after it.
  const events = await waitUntil(async () => {
    const all = await bb.sessions.recording.retrieve(s.id);
    const at = all.findIndex((e) => e.type === 2 && JSON.stringify(e.data).includes('Hello'));
    return at >= 0 && all.slice(at).some((e) => e.type === 3) && all;
  }, "a full snapshot of the page and incremental events after it");
  for (const e of events) {
    assert.equal(e.sessionId, s.id);
    assert.equal(typeof e.timestamp, 'number');
    assert.equal(typeof e.id, 'string');
  }

  await browser.close();
  await bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
  assert.equal((await fetch(tab.debuggerFullscreenUrl)).status, 410, 'the links end with the session');
  await assert.rejects(bb.sessions.debug(s.id), (e) => e.status === 409);
  assert.ok((await bb.sessions.logs.list(s.id)).length > 0, 'logs outlive the session');
});
