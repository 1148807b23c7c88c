// scratch: relay RTT vs direct vs socat (not committed)
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import WebSocket from 'ws';
const BIN = process.argv[2] || '/work/main/target/release/browserd';
const N = Number(process.argv[3] || 3000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dir = mkdtempSync('/tmp/rl/d-');
const port = 7800 + Math.floor(Math.random() * 100);
const srv = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dir, '--api-key', 'k', '--warm-pool', '0', '--sandbox', 'off', '--shutdown-ends-sessions', 'true', ...(process.env.EXTRA ? process.env.EXTRA.split(' ') : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise((r) => srv.stdout.on('data', (d) => { if (String(d).includes('listening on')) r(); }));
const api = async (m, p, b) => (await fetch(`http://127.0.0.1:${port}${p}`, { method: m, headers: { 'X-BB-API-Key': 'k', 'content-type': 'application/json' }, body: b && JSON.stringify(b) })).json();
const s = await api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600, browserSettings: { logSession: process.env.LOG !== '0', recordSession: process.env.LOG !== '0' } });
const d = readdirSync(`${dir}/sessions`)[0];
const [cport, cpath] = readFileSync(`${dir}/sessions/${d}/profile/DevToolsActivePort`, 'utf8').split('\n');
const sp = port + 200;
const socat = spawn('socat', [`TCP-LISTEN:${sp},bind=127.0.0.1,fork,reuseaddr,nodelay`, `TCP:127.0.0.1:${cport},nodelay`], { stdio: 'ignore' });
await sleep(300);
function conn(url) {
  return new Promise((res, rej) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 30 });
    let id = 0; const wait = new Map();
    ws.on('message', (m) => { const j = JSON.parse(m); const w = wait.get(j.id); if (w) { wait.delete(j.id); w(j); } });
    ws.on('open', () => res({ call: (method, params, sessionId) => new Promise((r) => { const i = ++id; wait.set(i, r); ws.send(JSON.stringify({ id: i, method, params, sessionId })); }), ws }));
    ws.on('error', rej);
  });
}
const clients = { via: await conn(s.connectUrl), direct: await conn(`ws://127.0.0.1:${cport}${cpath.trim()}`), socat: await conn(`ws://127.0.0.1:${sp}${cpath.trim()}`) };
const sess = {};
for (const [k, c] of Object.entries(clients)) {
  const t = (await c.call('Target.getTargets', {})).result.targetInfos.find((t) => t.type === 'page');
  sess[k] = (await c.call('Target.attachToTarget', { targetId: t.targetId, flatten: true })).result.sessionId;
}
const rtt = { via: [], direct: [], socat: [] };
for (let r = 0; r < 10; r++) for (const k of Object.keys(clients)) for (let i = 0; i < N / 10; i++) {
  const t = process.hrtime.bigint(); await clients[k].call('Runtime.evaluate', { expression: '1+1' }, sess[k]); rtt[k].push(Number(process.hrtime.bigint() - t) / 1000);
}
const med = (a) => { const b = [...a].sort((x, y) => x - y); return b[b.length >> 1]; };
const m = Object.fromEntries(Object.entries(rtt).map(([k, v]) => [k, med(v)]));
console.log(JSON.stringify({ ...Object.fromEntries(Object.entries(m).map(([k, v]) => [k, Math.round(v)])), via_minus_socat: Math.round(m.via - m.socat), socat_minus_direct: Math.round(m.socat - m.direct) }));
for (const c of Object.values(clients)) c.ws.close();
socat.kill();
await api('POST', `/v1/sessions/${s.id}`, { status: 'REQUEST_RELEASE' });
srv.kill('SIGTERM'); await new Promise((r) => srv.on('exit', r));
