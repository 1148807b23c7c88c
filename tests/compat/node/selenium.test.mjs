// Selenium's official JavaScript bindings (selenium-webdriver) on a session's
// seleniumRemoteUrl, with the HTTP agent Browserbase's Selenium guide has users write: it
// adds the session's signing key to every request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { Builder, By } from 'selenium-webdriver';
import chrome from 'selenium-webdriver/chrome.js';
import { chromium } from 'playwright-core';
import { API_KEY, useBrowserd, waitUntil } from './harness.mjs';

let server;
let site;
let bb;

useBrowserd((ctx) => ({ server, site, bb } = ctx));

/** As in Browserbase's guide: an agent that signs every request. */
function signingAgent(headers) {
  const agent = new http.Agent({});
  agent.addRequest = (req, options) => {
    for (const [name, value] of Object.entries(headers)) req.setHeader(name, value);
    http.Agent.prototype.addRequest.call(agent, req, options);
  };
  return agent;
}

function remote(session, headers = { 'x-bb-signing-key': session.signingKey }) {
  return new Builder()
    .forBrowser('chrome')
    .setChromeOptions(new chrome.Options())
    .usingHttpAgent(signingAgent(headers))
    .usingServer(session.seleniumRemoteUrl)
    .build();
}

/** chromedriver processes of this server's sessions. */
function chromedrivers() {
  let out = '';
  try { out = execFileSync('pgrep', ['-af', 'chromedriver'], { encoding: 'utf8' }); } catch { /* none */ }
  return out.split('\n').filter((l) => l.includes(server.dataDir));
}

test('selenium-webdriver drives the session\'s browser; quit completes a session without keepAlive', async () => {
  const s = await bb.sessions.create({});
  const driver = await remote(s);
  await driver.get(`${site.url}/app`);
  await driver.findElement(By.id('b')).click();
  assert.equal(await driver.findElement(By.id('h')).getText(), 'clicked');
  assert.equal(await driver.executeScript('return 6 * 7'), 42);
  const png = Buffer.from(await driver.takeScreenshot(), 'base64');
  assert.equal(png.subarray(1, 4).toString(), 'PNG');
  await driver.manage().addCookie({ name: 'flavour', value: 'oat' });
  assert.equal((await driver.manage().getCookie('flavour')).value, 'oat');
  assert.ok(chromedrivers().length > 0, 'a chromedriver runs for the session');
  await driver.quit();
  await waitUntil(async () => (await bb.sessions.retrieve(s.id)).status === 'COMPLETED', 'COMPLETED');
  await waitUntil(() => chromedrivers().length === 0, 'its chromedriver to stop');
});

test('keepAlive: Playwright and Selenium share one browser, and quit leaves the session running', async () => {
  const s = await bb.sessions.create({ keepAlive: true });
  const browser = await chromium.connectOverCDP(s.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await page.goto(`${site.url}/login`);
  const driver = await remote(s);
  assert.equal(await driver.getCurrentUrl(), `${site.url}/login`);
  await driver.quit();
  assert.equal((await bb.sessions.retrieve(s.id)).status, 'RUNNING');
  const again = await remote(s, { 'session-id': s.id, 'x-bb-api-key': API_KEY });
  assert.equal(await again.getCurrentUrl(), `${site.url}/login`);
  await again.quit();
  await browser.close();
});

test('a wrong signing key is a 401', async () => {
  const s = await bb.sessions.create({ keepAlive: true });
  await assert.rejects(remote(s, { 'x-bb-signing-key': 'forged' }), /401|Authorization|signing/i);
});
