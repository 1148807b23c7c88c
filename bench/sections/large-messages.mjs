// 2d. Large messages from many clients at once: browserd's memory and a quiet session's round
// trips while 20 clients each send 20 MiB (--only-large-messages).
import { now, sleep, pct } from '../lib/common.mjs';
import { startBrowserd } from '../lib/processes.mjs';
import { Cdp } from '../lib/cdp.mjs';
import { procStatusKiB } from '../lib/proc.mjs';

export const name = 'large-messages';
export const title = '2d. large messages from many clients';

/**
 * 20 clients (4 sessions × 5) each send a 20 MiB command at once, three rounds, while a fifth
 * session's client measures round trips: browserd's resident memory (its peak, VmHWM, and
 * after) and whether the quiet session stays responsive.
 */
async function benchLargeMessages() {
  // browserd's default relay memory (1 GiB: all 20 messages fit at once), then a bound of
  // 256 MiB (six 20 MiB messages at a time, 40 MiB each), same machine, one after the other.
  const bounded = ['--relay-memory-mib', '256', '--max-message-mib', '100'];
  const unbound = await benchLargeMessagesWith([]);
  const bound = await benchLargeMessagesWith(bounded);
  // As the packaged unit and the container run it: glibc gives large buffers back at once.
  const tuned = await benchLargeMessagesWith(bounded, { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=1048576' });
  return { unbound, bound, tuned, bound_mib: 256 };
}

async function benchLargeMessagesWith(extra, env = {}) {
  const server = await startBrowserd({ warmPool: 0, maxSessions: 6, extra, env });
  const sessions = [];
  for (let i = 0; i < 5; i++) {
    sessions.push((await server.api('POST', '/v1/sessions', { keepAlive: true, timeout: 3600 })).body);
  }
  const [quietSession, ...busy] = sessions;
  const quiet = await Cdp.connect(quietSession.connectUrl);
  const quietPage = await quiet.firstPage();
  const clients = [];
  for (const s of busy) {
    for (let c = 0; c < 5; c++) {
      const cdp = await Cdp.connect(s.connectUrl);
      clients.push({ cdp, page: await cdp.firstPage() });
    }
  }
  const rtt = async (n) => {
    const out = [];
    for (let i = 0; i < n; i++) {
      const t = now();
      await quiet.call('Runtime.evaluate', { expression: '1+1' }, quietPage);
      out.push((now() - t) * 1000);
    }
    return out;
  };
  const idle = await rtt(300);
  const before = server.rssKiB();
  const SIZE = 20 * 1024 * 1024;
  const expression = `'${'z'.repeat(SIZE)}'.length`;
  const during = [];
  let stop = false;
  const probe = (async () => { while (!stop) during.push(...await rtt(10)); })();
  const rounds = [];
  for (let r = 0; r < 3; r++) {
    const t = now();
    const answers = await Promise.all(clients.map(({ cdp, page }) => cdp.call('Runtime.evaluate', { expression }, page)));
    rounds.push(now() - t);
    for (const a of answers) if (a.result?.result?.value !== SIZE) throw new Error(`a 20 MiB command failed: ${JSON.stringify(a).slice(0, 200)}`);
  }
  stop = true;
  await probe;
  const peak = procStatusKiB(server.pid, 'VmHWM');
  await sleep(2000);
  const after = server.rssKiB();
  for (const { cdp } of clients) cdp.close();
  quiet.close();
  await server.stop();
  return { idle, during, before, peak, after, rounds, size: SIZE, clients: clients.length };
}

export const run = benchLargeMessages;

export function render(both) {
  const f = (x, d = 1) => x.toFixed(d);
  const mib = (kib) => f(kib / 1024);
  const { unbound: a, bound: b, tuned: c } = both;
  const row = (name, pick) => `| ${name} | ${pick(a)} | ${pick(b)} | ${pick(c)} |`;
  return `## 2d. Large messages from many clients at once

\`node bench/run.mjs --only-large-messages\`: ${a.clients} clients (4 sessions × 5, sandboxed
browsers) each send a ${a.size / 1024 / 1024} MiB \`Runtime.evaluate\` at the same moment, three
rounds, while a fifth session's client measures \`Runtime.evaluate("1+1")\` round trips. Once
with the default \`--relay-memory-mib\` (1024: every message fits at once), once with
\`--relay-memory-mib ${both.bound_mib} --max-message-mib 100\` (six at a time), one server after
the other.

| measure | default (1024 MiB) | --relay-memory-mib ${both.bound_mib} | the same, with the unit's \`GLIBC_TUNABLES\` |
|---|---|---|---|
${row('browserd RSS before / peak (VmHWM) / 2 s after, MiB', (r) => `${mib(r.before)} / ${mib(r.peak)} / ${mib(r.after)}`)}
${row('peak − before', (r) => `${mib(r.peak - r.before)} MiB, ${f((r.peak - r.before) / 1024 / r.clients)} MiB a client`)}
${row(`one round (all ${a.clients} answered), median of 3`, (r) => `${f(pct(r.rounds, 50))} ms`)}
${row('quiet session round trip p50 / p99, idle', (r) => `${f(pct(r.idle, 50))} / ${f(pct(r.idle, 99))} µs`)}
${row('the same during the rounds', (r) => `${f(pct(r.during, 50))} / ${f(pct(r.during, 99))} µs (${r.during.length} calls)`)}

A message of 1 MiB or more needs relay memory of twice its size (tungstenite's buffer it
arrives in, the other leg's buffer it leaves by), taken when its first payload byte arrives;
one that does not fit waits, and its client sees TCP backpressure. The share is given back
once the message is relayed, and tungstenite (patched, vendor/README.md) frees those buffers
then instead of keeping their capacity for the connection's life. The peak is the bound plus
the buffers of messages under 1 MiB and the allocator's own slack; a client's message is at
most Chromium's 100 MiB (larger ones close that client with 1009). The last column runs
browserd as the packaged systemd unit and the container do, with
\`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576\`: glibc then gives a large buffer back
to the system when it is freed, where by default it raises its threshold after the first
one and keeps later ones in its heap (the RSS "after" shows what it kept).
`;
}
