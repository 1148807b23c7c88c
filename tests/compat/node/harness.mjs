// Starts the built browserd binary on a free port with a temporary data dir, and a page
// server on loopback, for the Node compatibility tests.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { crc32, inflateRawSync } from 'node:zlib';
import assert from 'node:assert/strict';
import { before, after, afterEach } from 'node:test';
import Browserbase from '@browserbasehq/sdk';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = process.env.BROWSERD_BIN ?? join(repo, 'target', 'debug', 'browserd');
export const API_KEY = 'bd_node_compat_key';
/** The upstream proxy's password in traffic.test.mjs: never in a log. */
export const PROXY_PASSWORD = 'tiny-proxy-secret-node-8e2a';
/** A language-model key as Stagehand's clients send it (`x-model-api-key`): never in a log. */
export const MODEL_API_KEY = 'sk-model-key-never-logged-5f1c';

async function freePort() {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  s.close();
  return port;
}

/** Whether process `pid`'s command line names `path`. */
function names(pid, path) {
  try { return readFileSync(`/proc/${pid}/cmdline`).includes(path); } catch { return false; }
}

// With BROWSERD_COMPAT_DATABASE (a PostgreSQL URL), the SDK talks to a node that runs no
// browsers: every create is placed on a second node, and every request and websocket about a
// session is forwarded to it. The tests see the same contract either way.
const CLUSTER_DATABASE = process.env.BROWSERD_COMPAT_DATABASE;
const CONTEXT_KEY = '0123456789abcdef'.repeat(4);

// Every node logs at debug level into this folder; at the end no log may hold a secret.
const LOG_DIR = mkdtempSync(join(tmpdir(), 'browserd-node-logs-'));

async function startNode(dataDir, extra) {
  const port = await freePort();
  const env = {
    ...process.env,
    RUST_LOG: 'debug',
    ...(CLUSTER_DATABASE ? { BROWSERD_DATABASE: CLUSTER_DATABASE, BROWSERD_CONTEXT_KEY: CONTEXT_KEY } : {}),
  };
  const log = openSync(join(LOG_DIR, `${port}.log`), 'w');
  const proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir,
    '--api-key', API_KEY, '--min-timeout', '1', '--allow-local-egress', 'true',
    '--shutdown-ends-sessions', 'true', ...extra], { stdio: ['ignore', 'pipe', log], env });
  // A test file that dies before its `after` hook (a throwing `before`) must not leave the
  // server, and its browsers, running: SIGTERM ends every session (--shutdown-ends-sessions).
  process.on('exit', () => { if (proc.exitCode === null) proc.kill('SIGTERM'); });
  await new Promise((resolveStarted, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      if (out.includes('listening on')) resolveStarted();
    });
    proc.on('exit', (code) => reject(new Error(`browserd exited with ${code}: ${out}`)));
  });
  return { proc, baseURL: `http://127.0.0.1:${port}` };
}

/**
 * The servers' debug-level logs of the whole run hold no key, signing key, link token or
 * database password.
 */
function assertNoSecretLogged(dataDir) {
  const secrets = [API_KEY, CONTEXT_KEY, PROXY_PASSWORD, MODEL_API_KEY];
  const madeKey = join(dataDir, 'context.key');
  if (existsSync(madeKey)) secrets.push(readFileSync(madeKey, 'utf8').trim());
  const password = /^postgres:\/\/[^:]+:([^@]+)@/.exec(CLUSTER_DATABASE ?? '')?.[1];
  if (password) secrets.push(password);
  for (const name of readdirSync(LOG_DIR)) {
    const text = readFileSync(join(LOG_DIR, name), 'utf8');
    if (!text) throw new Error(`${name} is empty: the server logged nothing`);
    for (const secret of secrets) {
      if (text.includes(secret)) throw new Error(`a secret is in the log ${name}`);
    }
    for (const pattern of [/signingKey=[A-Za-z0-9]/, /apiKey=[A-Za-z0-9]/, /\/debug\/[0-9a-f]{32}\./]) {
      if (pattern.test(text)) throw new Error(`${pattern} matches in the log ${name}`);
    }
  }
}

export async function startBrowserd() {
  // dataDir: where the sessions' browsers and files are (the owner's).
  const dataDir = mkdtempSync(join(tmpdir(), 'browserd-node-'));
  const nodes = [];
  let baseURL;
  if (CLUSTER_DATABASE) {
    nodes.push(await startNode(dataDir, ['--max-sessions', '6', '--node-name', 'owner']));
    const gatewayDir = mkdtempSync(join(tmpdir(), 'browserd-node-gateway-'));
    const gateway = await startNode(gatewayDir, ['--max-sessions', '0', '--node-name', 'gateway']);
    gateway.dir = gatewayDir;
    nodes.unshift(gateway);
    baseURL = gateway.baseURL;
  } else {
    nodes.push(await startNode(dataDir, ['--max-sessions', '6']));
    baseURL = nodes[0].baseURL;
  }
  const cliEnv = CLUSTER_DATABASE
    ? { ...process.env, BROWSERD_DATABASE: CLUSTER_DATABASE }
    : process.env;
  return {
    baseURL,
    dataDir,
    cli: (...args) => execFileSync(BIN, ['--data-dir', dataDir, ...args], { encoding: 'utf8', env: cliEnv }),
    async stop() {
      let code = 0;
      for (const { proc, dir } of nodes) {
        proc.kill('SIGTERM');
        const [exit] = await once(proc, 'exit');
        code = code || exit;
        if (dir) rmSync(dir, { recursive: true, force: true });
      }
      // Every session ended at shutdown: no process of any of its browsers is left.
      const left = readdirSync('/proc').filter((pid) => /^\d+$/.test(pid) && names(pid, dataDir));
      if (left.length) throw new Error(`browser processes outlived browserd: ${left}`);
      assertNoSecretLogged(dataDir);
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(LOG_DIR, { recursive: true, force: true });
      return code;
    },
  };
}

/** A 1×1 PNG. */
const PIXEL = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489'
  + '0000000d49444154789c63f8cfc0f01f00050001ff89993d1d0000000049454e44ae426082', 'hex');

export async function startSite() {
  const server = createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
    if (req.url.startsWith('/signin')) {
      // A session cookie (no expiry): only browserd's cookie restore carries it over.
      const user = new URL(req.url, 'http://x').searchParams.get('user');
      res.setHeader('set-cookie', `session_user=${user}; Path=/; HttpOnly`);
      return res.end('<html><body>signed in</body></html>');
    }
    if (req.url.startsWith('/account')) {
      const user = /(?:^|; )session_user=([^;]*)/.exec(req.headers.cookie ?? '')?.[1];
      return res.end(`<html><body><h1 id="who">${user ? `Welcome ${user}` : 'Please sign in'}</h1></body></html>`);
    }
    if (req.url.startsWith('/form')) {
      return res.end(`<html><body><input type="file" id="f"><pre id="out"></pre><script>
        document.getElementById('f').addEventListener('change', async (e) => {
          const file = e.target.files[0];
          document.getElementById('out').textContent = file.name + ':' + await file.text();
        });</script></body></html>`);
    }
    if (req.url.startsWith('/files/data.csv')) {
      res.setHeader('content-type', 'text/csv');
      res.setHeader('content-disposition', 'attachment; filename=data.csv');
      return res.end('a,b\n1,2\n');
    }
    if (req.url.startsWith('/pixel.png')) {
      res.setHeader('content-type', 'image/png');
      return res.end(PIXEL);
    }
    if (req.url.startsWith('/ads')) {
      // A first-party image and one from a well-known ad host (EasyList: ||ad.doubleclick.net^).
      return res.end('<html><body><img id="own" src="/pixel.png"><img id="ad" src="http://ad.doubleclick.net/pixel.png"></body></html>');
    }
    if (req.url.startsWith('/downloads')) {
      return res.end('<html><body><a id="get" href="/files/data.csv">data</a></body></html>');
    }
    if (req.url.startsWith('/redirect')) {
      res.statusCode = 302;
      res.setHeader('location', new URL(req.url, 'http://x').searchParams.get('to'));
      return res.end();
    }
    if (req.url.startsWith('/login')) res.setHeader('set-cookie', 'auth=yes; Path=/');
    res.end(`<html><title>${req.url}</title><body><h1 id="h">Hello</h1>
      <button id="b" onclick="document.getElementById('h').textContent='clicked'">go</button></body></html>`);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

/** Polls `check` until it returns a truthy value; throws after `timeoutMs`. */
export async function waitUntil(check, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A zip (stored, no compression) of `{name: string|Buffer}`. */
export function makeZip(entries) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [name, content] of Object.entries(entries)) {
    const data = Buffer.from(content);
    const nameBuf = Buffer.from(name);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBuf.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBuf.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBuf, data);
    centrals.push(central, nameBuf);
    offset += 30 + nameBuf.length + data.length;
  }
  const dir = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(centrals.length / 2, 8);
  end.writeUInt16LE(centrals.length / 2, 10);
  end.writeUInt32LE(dir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, dir, end]);
}

/** The entries of a zip as `{name: Buffer}` (stored or deflated entries). */
export function readZip(buf) {
  const endAt = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  assert.ok(endAt >= 0, 'a zip has an end of central directory record');
  const count = buf.readUInt16LE(endAt + 10);
  let at = buf.readUInt32LE(endAt + 16);
  const out = {};
  for (let i = 0; i < count; i++) {
    const method = buf.readUInt16LE(at + 10);
    const size = buf.readUInt32LE(at + 20);
    const nameLen = buf.readUInt16LE(at + 28);
    const extraLen = buf.readUInt16LE(at + 30);
    const commentLen = buf.readUInt16LE(at + 32);
    const localAt = buf.readUInt32LE(at + 42);
    const name = buf.toString('utf8', at + 46, at + 46 + nameLen);
    const dataAt = localAt + 30 + buf.readUInt16LE(localAt + 26) + buf.readUInt16LE(localAt + 28);
    const raw = buf.subarray(dataAt, dataAt + size);
    out[name] = method === 8 ? inflateRawSync(raw) : raw;
    at += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/**
 * Registers a test file's hooks: browserd and the page site start before its tests (then
 * `onReady({ server, site, bb })`), running sessions are released after each test, and both
 * stop after the last one, browserd with exit code 0.
 */
export function useBrowserd(onReady) {
  let ctx;
  before(async () => {
    const server = await startBrowserd();
    const site = await startSite();
    ctx = { server, site, bb: new Browserbase({ apiKey: API_KEY, baseURL: server.baseURL }) };
    onReady(ctx);
  });
  afterEach(async () => {
    for (const s of await ctx.bb.sessions.list({ status: 'RUNNING' })) {
      await ctx.bb.sessions.update(s.id, { status: 'REQUEST_RELEASE' });
    }
  });
  after(async () => {
    ctx.site.close();
    assert.equal(await ctx.server.stop(), 0, 'browserd exits cleanly on SIGTERM');
  });
}
