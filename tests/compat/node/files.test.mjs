// Contexts, extensions, uploads and downloads through the official Node SDK, playwright-core
// and puppeteer-core.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toFile } from '@browserbasehq/sdk';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { makeZip, readZip, useBrowserd, waitUntil } from './harness.mjs';

let server;
let site;
let bb;

useBrowserd((ctx) => ({ server, site, bb } = ctx));

async function whoIsSignedIn(session) {
  const browser = await chromium.connectOverCDP(session.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await page.goto(`${site.url}/account`);
  const who = await page.textContent('#who');
  return { browser, page, who };
}

test('a context carries a login to the next session; persist:false saves nothing', async () => {
  const ctx = await bb.contexts.create({});
  assert.ok(ctx.uploadUrl.length > 0);
  assert.equal(ctx.cipherAlgorithm, 'AES-256-GCM');
  const before = await bb.contexts.retrieve(ctx.id);

  const first = await bb.sessions.create({ keepAlive: true, browserSettings: { context: { id: ctx.id, persist: true } } });
  let { browser, page, who } = await whoIsSignedIn(first);
  assert.equal(who, 'Please sign in');
  await page.goto(`${site.url}/signin?user=carol`);
  await browser.close();
  // Released through the SDK: the save is done when the release answers.
  await bb.sessions.update(first.id, { status: 'REQUEST_RELEASE' });
  assert.ok(Date.parse((await bb.contexts.retrieve(ctx.id)).updatedAt) > Date.parse(before.updatedAt));

  const second = await bb.sessions.create({ browserSettings: { context: { id: ctx.id, persist: false } } });
  ({ browser, page, who } = await whoIsSignedIn(second));
  assert.equal(who, 'Welcome carol');
  await page.goto(`${site.url}/signin?user=dave`);
  await browser.close();
  await waitUntil(async () => (await bb.sessions.retrieve(second.id)).status === 'COMPLETED', 'the end');

  const third = await bb.sessions.create({ browserSettings: { context: { id: ctx.id } } });
  ({ browser, who } = await whoIsSignedIn(third));
  assert.equal(who, 'Welcome carol', 'persist:false left the context as it was');
  await browser.close();

  await bb.contexts.delete(ctx.id);
  await assert.rejects(bb.contexts.retrieve(ctx.id), (e) => e.status === 404);
  await assert.rejects(
    bb.sessions.create({ browserSettings: { context: { id: ctx.id } } }),
    (e) => e.status === 404 && /context .* not found/.test(e.message),
  );
});

test('an extension runs in the session (puppeteer-core)', async () => {
  const zip = makeZip({
    'manifest.json': JSON.stringify({
      manifest_version: 3, name: 'marker', version: '1.0',
      content_scripts: [{ matches: ['<all_urls>'], js: ['mark.js'], run_at: 'document_end' }],
    }),
    'mark.js': "document.documentElement.dataset.marked = 'node-extension';",
  });
  const ext = await bb.extensions.create({ file: await toFile(zip, 'marker.zip') });
  assert.equal(ext.fileName, 'marker.zip');
  assert.equal((await bb.extensions.retrieve(ext.id)).id, ext.id);

  const s = await bb.sessions.create({ browserSettings: { extensionId: ext.id } });
  const browser = await puppeteer.connect({ browserWSEndpoint: s.connectUrl });
  const [page] = await browser.pages();
  await page.goto(`${site.url}/page`);
  await page.waitForFunction("document.documentElement.dataset.marked === 'node-extension'");
  await browser.disconnect();

  await assert.rejects(
    bb.extensions.create({ file: await toFile(Buffer.from('plain text'), 'x.zip') }),
    (e) => e.status === 415,
  );
  await assert.rejects(
    bb.extensions.create({ file: await toFile(makeZip({ 'dir/manifest.json': '{}' }), 'x.zip') }),
    (e) => e.status === 400 && /manifest\.json/.test(e.message),
  );
  await bb.extensions.delete(ext.id);
  await assert.rejects(bb.extensions.retrieve(ext.id), (e) => e.status === 404);
});

test('an upload reaches a page form; a page download comes back as a zip (puppeteer-core)', async () => {
  const s = await bb.sessions.create({ keepAlive: true });
  const empty = readZip(Buffer.from(await (await bb.sessions.downloads.list(s.id)).arrayBuffer()));
  assert.deepEqual(Object.keys(empty), [], 'an empty zip while there are none');

  const reply = await bb.sessions.uploads.create(s.id, { file: await toFile(Buffer.from('from node'), 'hello.txt') });
  const path = reply.message.split(' to ')[1];
  assert.match(path, new RegExp(`/${s.id}/uploads/hello\\.txt$`));

  const browser = await puppeteer.connect({ browserWSEndpoint: s.connectUrl });
  const [page] = await browser.pages();
  await page.goto(`${site.url}/form`);
  const input = await page.$('#f');
  await input.uploadFile(path);
  await page.waitForFunction("document.getElementById('out').textContent !== ''");
  assert.equal(await page.$eval('#out', (e) => e.textContent), 'hello.txt:from node');

  // Puppeteer sets no download folder: browserd's default puts the file in the session's.
  await page.goto(`${site.url}/downloads`);
  await page.click('#get');
  const files = await waitUntil(async () => {
    const zip = readZip(Buffer.from(await (await bb.sessions.downloads.list(s.id)).arrayBuffer()));
    return Object.keys(zip).length > 0 && zip;
  }, 'the download in the zip');
  assert.deepEqual(Object.keys(files), ['data.csv']);
  assert.equal(files['data.csv'].toString(), 'a,b\n1,2\n');
  await browser.disconnect();
  await bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
  await assert.rejects(
    bb.sessions.uploads.create(s.id, { file: await toFile(Buffer.from('x'), 'late.txt') }),
    (e) => e.status === 409,
  );
});
