// 7. Selenium: a WebDriver session's lifecycle and command round trip through browserd versus
// selenium-webdriver with its own chromedriver (--only-selenium; the full run too).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import { Builder } from 'selenium-webdriver';
import chrome from 'selenium-webdriver/chrome.js';
import { CHROMIUM_BINARY, FLAGS, now, pct } from '../lib/common.mjs';
import { startSite, startBrowserd } from '../lib/processes.mjs';

export const name = 'selenium';
export const title = '7. Selenium';

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
async function benchSelenium(ctx) {
  const { iterations: ITERATIONS, rtt: RTT_CALLS } = ctx;
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

export const run = benchSelenium;

export function render(r) {
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
  return `## 7. Selenium: a session's lifecycle and a command's round trip (ms, p50 / p95)

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
`;
}
