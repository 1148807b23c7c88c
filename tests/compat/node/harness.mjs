// Starts the built browserd binary on a free port with a temporary data dir, and a page
// server on loopback, for the Node compatibility tests.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = process.env.BROWSERD_BIN ?? join(repo, 'target', 'debug', 'browserd');
export const API_KEY = 'bd_node_compat_key';

async function freePort() {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  s.close();
  return port;
}

export async function startBrowserd() {
  const dataDir = mkdtempSync(join(tmpdir(), 'browserd-node-'));
  const port = await freePort();
  const proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir,
    '--api-key', API_KEY, '--min-timeout', '1', '--max-sessions', '6'], { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise((resolveStarted, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      if (out.includes('listening on')) resolveStarted();
    });
    proc.on('exit', (code) => reject(new Error(`browserd exited with ${code}: ${out}`)));
  });
  return {
    baseURL: `http://127.0.0.1:${port}`,
    dataDir,
    cli: (...args) => execFileSync(BIN, ['--data-dir', dataDir, ...args], { encoding: 'utf8' }),
    async stop() {
      proc.kill('SIGTERM');
      const [code] = await once(proc, 'exit');
      rmSync(dataDir, { recursive: true, force: true });
      return code;
    },
  };
}

export async function startSite() {
  const server = createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
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
