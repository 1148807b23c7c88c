// 2. The relay: CDP round trips and large messages, the same browser through browserd and on
// Chromium's own websocket (and through socat, a byte-copying floor; a sandboxed browser; an
// earlier build with BROWSERD_BEFORE_BIN). Part of the full run (ctx.site, ctx.cold: the
// runner's shared servers); section 9 (peers) runs it too.
import { BEFORE_BIN, now, pct, log, f } from '../lib/common.mjs';
import { startBrowserd } from '../lib/processes.mjs';
import { sameBrowserBothWays, relayedSession } from '../lib/cdp.mjs';

export const name = 'relay';
export const title = '2. the relay: round trips and large messages';

export async function benchRelay(ctx) {
  const RTT_CALLS = ctx.rtt;
  // Browsers unsandboxed, no warm ones: the session's browser is the only one, and its own
  // websocket is reachable from here.
  const open = await startBrowserd({ warmPool: 0, sandbox: 'off' });
  const { via, direct, floor, socat, id } = await sameBrowserBothWays(open);
  // The default: a sandboxed browser (its DevTools port only inside its own network namespace).
  const sandboxed = await relayedSession(ctx.cold);
  // The earlier build's own browser, unsandboxed like "via" when it knows the flag.
  const before = BEFORE_BIN ? await startBrowserd({ warmPool: 0, bin: BEFORE_BIN, sandbox: 'off' }) : null;
  const old = before ? await relayedSession(before) : null;
  const clients = { via, direct, floor, sandboxed: sandboxed.client, ...(old ? { before: old.client } : {}) };
  const sessions = {};
  for (const [k, c] of Object.entries(clients)) sessions[k] = await c.firstPage();
  const rtt = Object.fromEntries(Object.keys(clients).map((k) => [k, []]));
  const rounds = 10;
  for (let r = 0; r < rounds; r++) {
    for (const k of Object.keys(clients)) {
      for (let i = 0; i < RTT_CALLS / rounds; i++) {
        const s = now();
        await clients[k].call('Runtime.evaluate', { expression: '1+1' }, sessions[k]);
        rtt[k].push((now() - s) * 1000); // µs
      }
    }
  }
  sandboxed.client.close();
  await ctx.cold.api('POST', `/v1/sessions/${sandboxed.id}`, { status: 'REQUEST_RELEASE' });
  if (old) { old.client.close(); await before.stop(); }
  log('round trips done');

  const big = { via: [], direct: [] };
  const TEN_MB = 10 * 1024 * 1024;
  for (let r = 0; r < 10; r++) {
    for (const k of ['direct', 'via']) {
      const s = now();
      const res = await clients[k].call('Runtime.evaluate', { expression: `'x'.repeat(${TEN_MB})`, returnByValue: true }, sessions[k]);
      const ms = now() - s;
      if (res.result.result.value.length !== TEN_MB) throw new Error('short 10 MB reply');
      big[k].push(ms);
    }
  }
  await via.call('Page.enable', {}, sessions.via);
  const loaded = via.event('Page.loadEventFired');
  await via.call('Page.navigate', { url: `${ctx.site.url}/noise` }, sessions.via);
  await loaded;
  const shot = { via: [], direct: [] };
  let shotBytes = 0;
  for (let r = 0; r < 5; r++) {
    for (const k of ['direct', 'via']) {
      const s = now();
      const res = await clients[k].call('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true }, sessions[k]);
      shot[k].push(now() - s);
      shotBytes = res.result.data.length;
    }
  }
  via.close(); direct.close(); floor.close(); socat.kill();
  await open.api('POST', `/v1/sessions/${id}`, { status: 'REQUEST_RELEASE' });
  await open.stop();
  return { rtt, big, shot, shotBytes, tenMb: TEN_MB };
}

export const run = benchRelay;

/** `meta.rtt`: the round trips per client; `meta.beforeBin`: the earlier build's name, if any. */
export function render(relay, meta) {
  const rttP = (k, p) => pct(relay.rtt[k], p);
  const thr = (xs, bytes) => (bytes / 1024 / 1024) / (pct(xs, 50) / 1000);
  const overhead = rttP('via', 50) - rttP('direct', 50);
  const bigRatio = thr(relay.big.via, relay.tenMb) / thr(relay.big.direct, relay.tenMb);
  const shotRatio = pct(relay.shot.direct, 50) / pct(relay.shot.via, 50);
  return `## 2. The relay: the same browser through browserd and on its own websocket

| measure | through browserd | direct | ratio |
|---|---|---|---|
| \`Runtime.evaluate("1+1")\` round trip, p50 (${meta.rtt} calls each) | ${f(rttP('via', 50))} µs | ${f(rttP('direct', 50))} µs | +${f(overhead)} µs |
| same, p99 | ${f(rttP('via', 99))} µs | ${f(rttP('direct', 99))} µs | +${f(rttP('via', 99) - rttP('direct', 99))} µs |
| same through socat (a byte-copying TCP proxy: the floor for any proxy process), p50 / p99 | ${f(rttP('floor', 50))} / ${f(rttP('floor', 99))} µs | | +${f(rttP('floor', 50) - rttP('direct', 50))} µs |
| same through browserd to a sandboxed browser (the default; another browser, same flags), p50 / p99 | ${f(rttP('sandboxed', 50))} / ${f(rttP('sandboxed', 99))} µs | | +${f(rttP('sandboxed', 50) - rttP('direct', 50))} µs |${relay.rtt.before ? `
| same through the earlier build \`${meta.beforeBin}\` (its own unsandboxed browser), p50 / p99 | ${f(rttP('before', 50))} / ${f(rttP('before', 99))} µs | | +${f(rttP('before', 50) - rttP('direct', 50))} µs |` : ''}
| 10 MB string result, p50 (10 calls) | ${f(pct(relay.big.via, 50))} ms (${f(thr(relay.big.via, relay.tenMb), 0)} MB/s) | ${f(pct(relay.big.direct, 50))} ms (${f(thr(relay.big.direct, relay.tenMb), 0)} MB/s) | ${f(bigRatio * 100, 0)}% |
| full-page PNG screenshot of random pixels (${f(relay.shotBytes / 1024 / 1024, 1)} MB base64), p50 (5 calls) | ${f(pct(relay.shot.via, 50))} ms | ${f(pct(relay.shot.direct, 50))} ms | ${f(shotRatio * 100, 0)}% |

"Through browserd" and "direct" are one unsandboxed browser (\`--sandbox off\`) reached both
ways, so their difference is the relay's own cost (every client frame is scanned strictly and
forwarded as sent unless a rule rewrites it, docs/security.md; section 2c compares it with the
earlier re-serialising filter). The sandboxed row is a second browser in its own namespaces,
reached the default way. The socat row is there to read the round-trip overhead against: any proxy that is a
separate process costs two extra socket hops per round trip, and on a 2-core machine shared
with Chromium and the client each hop can wait for a core. Where browserd's overhead is close
to socat's, what is left is the process hop, not the relay's code.
`;
}
