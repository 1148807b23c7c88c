// What the sections start: the loopback site, browserd servers, Chromium launched directly.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { BIN, KEY, CHROMIUM_BINARY, FLAGS, sleep } from './common.mjs';

export async function startSite() {
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

export async function freePort() {
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address();
  probe.close();
  return port;
}

/** Whether a browserd build has `--sandbox` (builds before the sandbox do not). */
const knowsSandboxFlags = (bin) => bin === BIN
  || execFileSync(bin, ['serve', '--help'], { encoding: 'utf8' }).includes('--sandbox');

/** Running browserd servers: a bench that fails stops them (and so their browsers) on exit. */
export const servers = new Set();
process.on('exit', () => { for (const proc of servers) proc.kill('SIGTERM'); });

/**
 * A browserd on loopback. `sandbox: 'off'` runs its browsers unsandboxed, so their own
 * DevTools port is on the host's loopback (the relay section connects to it directly);
 * `bin` runs another build (an older one knows neither sandbox flag).
 */
export async function startBrowserd({ warmPool, maxSessions, sandbox = 'auto', bin = BIN, extra = [], env = {} }) {
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
export async function launchDirect() {
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

export async function stopDirect(d) {
  const exited = once(d.proc, 'exit');
  try { process.kill(-d.proc.pid, 'SIGKILL'); } catch { /* already gone */ }
  await exited;
  rmSync(d.dir, { recursive: true, force: true });
}
