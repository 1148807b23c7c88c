// Browserbase's own agent stack against a default (sandboxed) browserd, each pointed at it
// only through its documented settings: Stagehand 4 (`browserbase.launch({baseUrl})`; its
// extension opens the session's connectUrl from inside the browser), Stagehand 3 in its
// default mode (`STAGEHAND_API_URL`: the hosted API's start answered `available: false`),
// and the Browserbase MCP server over stdio without --experimental. No language model is
// called: create, navigate, read, screenshot and close make none; every model and
// telemetry endpoint points at loopback.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { browserbase, Stagehand } from '@browserbasehq/stagehand';
import { Stagehand as Stagehand3 } from 'stagehand3';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { API_KEY, MODEL_API_KEY, useBrowserd, waitUntil } from '../node/harness.mjs';

const require = createRequire(import.meta.url);
/** A file of an installed package (whose `exports` may not name it). */
const installed = (path) => new URL(`./node_modules/${path}`, import.meta.url).pathname;
let server;
let site;
let bb;
let projectId;

// Root hooks of two modules do not run in a set order: everything here is set up in the
// harness's own callback, and the project id is awaited where it is needed.
let projectReady;
useBrowserd((ctx) => {
  ({ server, site, bb } = ctx);
  // What the clients read from the environment, all pointed at loopback.
  Object.assign(process.env, {
    BROWSERBASE_API_KEY: API_KEY,
    BROWSERBASE_BASE_URL: server.baseURL,
    STAGEHAND_API_URL: server.baseURL,
    OPENAI_BASE_URL: `${site.url}/model`,
    DO_NOT_TRACK: '1',
    BROWSERBASE_TELEMETRY_DISABLED: '1',
  });
  projectReady = fetch(`${server.baseURL}/v1/projects`, { headers: { 'x-bb-api-key': API_KEY } })
    .then((r) => r.json())
    .then(([project]) => {
      projectId = project.id;
      process.env.BROWSERBASE_PROJECT_ID = projectId;
    });
});

beforeEach(() => projectReady);

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47]);

/** The session's status once it is no longer RUNNING. */
async function endedStatus(id) {
  return waitUntil(async () => {
    const s = await bb.sessions.retrieve(id);
    return s.status !== 'RUNNING' && s.status;
  }, `session ${id} to end`);
}

test('Stagehand 4: launch, create, navigate, screenshot and close on a sandboxed browserd', async () => {
  assert.ok(Number(process.versions.node.split('.')[0]) >= 22, `Stagehand 4 runs on Node ${process.version}`);
  const browser = await browserbase.launch({ apiKey: API_KEY, baseUrl: server.baseURL });
  // Fails with "CDP websocket failed to open" when the browser cannot reach its own session.
  const stagehand = await Stagehand.create({
    browser,
    model: { modelName: 'openai/gpt-4o-mini', apiKey: MODEL_API_KEY },
    apiUrl: `${site.url}/stagehand-api`,
  });
  const [page] = await browser.context.pages();
  await page.goto(`${site.url}/app`);
  assert.equal(await page.evaluate(() => document.querySelector('#h').textContent), 'Hello');
  const shot = await page.screenshot();
  assert.deepEqual(Buffer.from(shot).subarray(0, 4), PNG);

  const [running] = await bb.sessions.list({ status: 'RUNNING' });
  assert.equal(running.userMetadata?.stagehand, 'true');
  await stagehand.close();
  await browser.close();
  assert.equal(await endedStatus(running.id), 'COMPLETED');
});

test('Stagehand 3 in its default mode: the Stagehand API start is answered, Stagehand runs locally', async () => {
  const stagehand = new Stagehand3({
    env: 'BROWSERBASE',
    model: { modelName: 'openai/gpt-4o-mini', apiKey: MODEL_API_KEY },
    verbose: 0,
    disablePino: true,
  });
  await stagehand.init();
  const id = stagehand.browserbaseSessionId;
  const s = await bb.sessions.retrieve(id);
  assert.equal(s.status, 'RUNNING');
  assert.equal(s.userMetadata?.stagehand, 'true', 'created from browserbaseSessionCreateParams');
  const page = stagehand.context.pages()[0];
  await page.goto(`${site.url}/app`);
  assert.equal(await page.evaluate(() => document.querySelector('#h').textContent), 'Hello');
  await stagehand.close();
  assert.equal(await endedStatus(id), 'COMPLETED');
});

test('Stagehand 3 resumes a keepAlive session by its id', async () => {
  const kept = await bb.sessions.create({ keepAlive: true });
  const stagehand = new Stagehand3({
    env: 'BROWSERBASE',
    browserbaseSessionID: kept.id,
    model: { modelName: 'openai/gpt-4o-mini', apiKey: MODEL_API_KEY },
    verbose: 0,
    disablePino: true,
  });
  await stagehand.init();
  assert.equal(stagehand.browserbaseSessionId, kept.id);
  const page = stagehand.context.pages()[0];
  await page.goto(`${site.url}/app`);
  await stagehand.close();
  assert.equal((await bb.sessions.retrieve(kept.id)).status, 'RUNNING', 'keepAlive: still running');
  await bb.sessions.update(kept.id, { status: 'REQUEST_RELEASE' });
});

test('the Stagehand API routes: start needs the key, refuses an ended session, end releases', async () => {
  const start = (headers, body) => fetch(`${server.baseURL}/v1/sessions/start`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  assert.equal((await start({}, {})).status, 401);
  const ok = await start({ 'x-bb-api-key': API_KEY, 'x-model-api-key': MODEL_API_KEY },
    { modelName: 'openai/gpt-4o-mini', browserbaseSessionCreateParams: { projectId, keepAlive: true } });
  assert.equal(ok.status, 200);
  const { success, data } = await ok.json();
  assert.equal(success, true);
  assert.equal(data.available, false);
  assert.equal((await bb.sessions.retrieve(data.sessionId)).keepAlive, true);
  const end = await fetch(`${server.baseURL}/v1/sessions/${data.sessionId}/end`, {
    method: 'POST', headers: { 'x-bb-api-key': API_KEY },
  });
  assert.equal(end.status, 200);
  assert.equal((await bb.sessions.retrieve(data.sessionId)).status, 'COMPLETED');
  const resumeEnded = await start({ 'x-bb-api-key': API_KEY }, { browserbaseSessionID: data.sessionId });
  assert.equal(resumeEnded.status, 410);
});

test('the Browserbase MCP server over stdio: session create, navigate, screenshot, close', async () => {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [require.resolve('@browserbasehq/mcp-server-browserbase/cli.js')],
    env: { ...process.env, GEMINI_API_KEY: MODEL_API_KEY },
    stderr: 'ignore',
  });
  const client = new Client({ name: 'browserd-compat', version: '1' });
  await client.connect(transport);
  try {
    const call = async (name, args = {}) => {
      const r = await client.callTool({ name, arguments: args });
      assert.ok(!r.isError, `${name}: ${JSON.stringify(r.content)}`);
      return r.content;
    };
    await call('browserbase_session_create');
    const [running] = await bb.sessions.list({ status: 'RUNNING' });
    assert.equal(running.userMetadata?.mcp, 'true');
    const url = `${site.url}/app`;
    assert.match((await call('browserbase_stagehand_navigate', { url }))[0].text, /Navigated to/);
    assert.equal((await call('browserbase_stagehand_get_url'))[0].text, url);
    const image = (await call('browserbase_screenshot')).find((c) => c.type === 'image');
    assert.deepEqual(Buffer.from(image.data, 'base64').subarray(0, 4), PNG);
    await call('browserbase_session_close');
    assert.equal(await endedStatus(running.id), 'COMPLETED');
  } finally {
    await client.close();
  }
});

test('a burst of 20 Stagehand 4 launches: each runs or gets a 429 that says when to retry, never a 5xx', async () => {
  // Stagehand hides the answer behind "Failed to create a Browserbase session": the
  // answers are read where they arrive, in the fetch its Browserbase client is given.
  const answers = [];
  const recordingFetch = async (input, init) => {
    // The SDK streams uploads; Node's fetch wants to be told so.
    const response = await fetch(input, init?.body ? { duplex: 'half', ...init } : init);
    const url = String(input?.url ?? input);
    if (url.startsWith(server.baseURL)) {
      answers.push({ path: new URL(url).pathname, method: init?.method ?? input?.method ?? 'GET',
        status: response.status, retryAfter: response.headers.get('retry-after'),
        shouldRetry: response.headers.get('x-should-retry') });
    }
    return response;
  };
  const launches = await Promise.allSettled(Array.from({ length: 20 }, async () => {
    const browser = await browserbase.launch({
      apiKey: API_KEY, baseUrl: server.baseURL, clientOptions: { fetch: recordingFetch },
    });
    try {
      const stagehand = await Stagehand.create({
        browser,
        model: { modelName: 'openai/gpt-4o-mini', apiKey: MODEL_API_KEY },
        apiUrl: `${site.url}/stagehand-api`,
      });
      const [page] = await browser.context.pages();
      await page.goto(`${site.url}/app`);
      await stagehand.close();
    } finally {
      await browser.close();
    }
  }));
  const creates = answers.filter((a) => a.method === 'POST' && a.path === '/v1/sessions');
  assert.ok(creates.length >= 20, `every create was seen: ${JSON.stringify(answers)}`);
  for (const a of answers) {
    assert.ok(a.status < 500, `a 5xx: ${JSON.stringify(a)}`);
    if (a.status >= 400) {
      // Over a rate: retry-after, which the SDK waits out. A full server: no retry, so a
      // burst does not hammer it (the SDK fails at once and Stagehand says so).
      assert.equal(a.status, 429, JSON.stringify(a));
      assert.ok(Number(a.retryAfter) > 0 || a.shouldRetry === 'false', `a 429 that says nothing: ${JSON.stringify(a)}`);
    }
  }
  const ran = launches.filter((l) => l.status === 'fulfilled').length;
  for (const l of launches.filter((x) => x.status === 'rejected')) {
    assert.match(String(l.reason), /Failed to create a Browserbase session/, l.reason?.stack);
  }
  assert.ok(ran >= 6, `${ran} of 20 ran; the server holds 6 at once`);
  // Nothing is left running.
  assert.deepEqual(await bb.sessions.list({ status: 'RUNNING' }), []);
});

test("Playwright's MCP server (--cdp-endpoint a connectUrl): navigate, snapshot, screenshot", async () => {
  const s = await bb.sessions.create({ keepAlive: true });
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [installed('@playwright/mcp/cli.js'), '--cdp-endpoint', s.connectUrl],
    env: { ...process.env },
    stderr: 'ignore',
  });
  const client = new Client({ name: 'browserd-compat', version: '1' });
  await client.connect(transport);
  try {
    const call = async (name, args = {}) => {
      const r = await client.callTool({ name, arguments: args });
      assert.ok(!r.isError, `${name}: ${JSON.stringify(r.content).slice(0, 500)}`);
      return r.content;
    };
    await call('browser_navigate', { url: `${site.url}/app` });
    const snapshot = (await call('browser_snapshot')).map((c) => c.text ?? '').join('\n');
    assert.match(snapshot, /heading "Hello"/);
    const image = (await call('browser_take_screenshot')).find((c) => c.type === 'image');
    assert.deepEqual(Buffer.from(image.data, 'base64').subarray(0, 4), PNG);
  } finally {
    await client.close();
  }
  assert.equal((await bb.sessions.retrieve(s.id)).status, 'RUNNING', 'keepAlive: it disconnected only');
  await bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
});

test('the browse CLI (BROWSERBASE_BASE_URL, --remote): open, read, screenshot, stop', async () => {
  const home = mkdtempSync(join(tmpdir(), 'browse-home-'));
  // Not execFileSync: the page it opens is served by this process.
  const browse = async (...args) => JSON.parse((await promisify(execFile)(process.execPath,
    [installed('browse/bin/run.js'), ...args, '-s', 'compat'], {
      cwd: home, encoding: 'utf8', timeout: 60_000,
      env: { ...process.env, HOME: home, BROWSE_DAEMON_DIR: join(home, 'daemon'), BROWSE_DISABLE_UPDATE_CHECK: '1' },
    })).stdout);
  try {
    const opened = await browse('open', `${site.url}/app`, '--remote');
    assert.equal(opened.url, `${site.url}/app`);
    assert.equal((await browse('get', 'text', '#h')).text, 'Hello');
    const saved = (await browse('screenshot')).saved;
    assert.deepEqual(readFileSync(saved).subarray(0, 4), PNG);
    const [running] = await bb.sessions.list({ status: 'RUNNING' });
    assert.ok(running, 'browse made a session on browserd');
    assert.equal((await browse('stop')).stopped, true);
    assert.equal(await endedStatus(running.id), 'COMPLETED', 'stopping it ended the session');
  } finally {
    // Its driver daemon outlives each command: stopped even when the test failed.
    await browse('stop').catch(() => {});
    rmSync(home, { recursive: true, force: true });
  }
});
