// CDP on a websocket: a minimal client, and the relay's fixtures (one browser reached through
// browserd, on its own websocket and through socat; a relayed session of its own).
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import WebSocket from 'ws';
import { sleep } from './common.mjs';
import { freePort } from './processes.mjs';

/** A minimal raw CDP client. */
export class Cdp {
  static async connect(url) {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 512 * 1024 * 1024 });
    await once(ws, 'open');
    ws._socket.setNoDelay(true);
    return new Cdp(ws);
  }
  constructor(ws) {
    this.ws = ws; this.id = 0; this.pending = new Map(); this.waiters = [];
    ws.on('message', (data) => {
      const msg = JSON.parse(data);
      if (msg.id !== undefined) { const p = this.pending.get(msg.id); this.pending.delete(msg.id); p?.(msg); return; }
      this.waiters = this.waiters.filter((w) => !(w.method === msg.method && (w.resolve(msg), true)));
    });
  }
  call(method, params = {}, sessionId) {
    const id = ++this.id;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.ws.send(JSON.stringify({ id, method, params, sessionId }));
    });
  }
  event(method) { return new Promise((resolve) => this.waiters.push({ method, resolve })); }
  async firstPage() {
    const { result } = await this.call('Target.getTargets');
    const page = result.targetInfos.find((t) => t.type === 'page');
    const attached = await this.call('Target.attachToTarget', { targetId: page.targetId, flatten: true });
    return attached.result.sessionId;
  }
  close() { this.ws.close(); }
}

/** Opens the same browser twice: through browserd and on Chromium's own websocket. */
export async function sameBrowserBothWays(server) {
  const { body } = await server.api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600 });
  const dirs = readdirSync(join(server.dataDir, 'sessions'));
  if (dirs.length !== 1) throw new Error(`expected one browser folder, found ${dirs.length}`);
  const [port, path] = readFileSync(join(server.dataDir, 'sessions', dirs[0], 'profile', 'DevToolsActivePort'), 'utf8').split('\n');
  const via = await Cdp.connect(body.connectUrl);
  const direct = await Cdp.connect(`ws://127.0.0.1:${port}${path.trim()}`);
  // socat copies bytes between two sockets and nothing else: the floor for any proxy that
  // is a separate process.
  const socatPort = await freePort();
  const socat = spawn('socat', [`TCP-LISTEN:${socatPort},bind=127.0.0.1,fork,reuseaddr,nodelay`,
    `TCP:127.0.0.1:${port},nodelay`], { stdio: 'ignore' });
  let floor;
  for (let i = 0; i < 200 && !floor; i++) {
    await sleep(10);
    floor = await Cdp.connect(`ws://127.0.0.1:${socatPort}${path.trim()}`).catch(() => null);
  }
  return { via, direct, floor, socat, id: body.id };
}

/** A session of its own on `server`, connected through browserd. */
export async function relayedSession(server) {
  const { body } = await server.api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600 });
  return { client: await Cdp.connect(body.connectUrl), id: body.id };
}
