// 2c. The relay's filter, before and after: a command forwarded as sent against the earlier
// build's parsed and re-serialised one (--only-relay-filter, with BROWSERD_BEFORE_BIN).
import { BEFORE_BIN, now, pct, log } from '../lib/common.mjs';
import { startBrowserd } from '../lib/processes.mjs';
import { sameBrowserBothWays, relayedSession } from '../lib/cdp.mjs';

export const name = 'relay-filter';
export const title = "2c. the relay's filter, before and after";

/**
 * The relay forwarding a client's command as sent (scanned, not rebuilt) against the earlier
 * build that parsed every command into a tree and re-serialised it (BROWSERD_BEFORE_BIN):
 * both unsandboxed, each with one session, measured in alternating rounds, beside the same
 * browser reached directly.
 */
async function benchRelayFilter(ctx) {
  const RTT_CALLS = ctx.rtt;
  if (!BEFORE_BIN) throw new Error('set BROWSERD_BEFORE_BIN to a build of the commit before the change');
  const afterServer = await startBrowserd({ warmPool: 0, sandbox: 'off' });
  const beforeServer = await startBrowserd({ warmPool: 0, sandbox: 'off', bin: BEFORE_BIN });
  const { via, direct, floor, socat, id } = await sameBrowserBothWays(afterServer);
  floor.close(); socat.kill();
  const old = await relayedSession(beforeServer);
  const clients = { after: via, before: old.client, direct };
  const sessions = {};
  for (const [k, c] of Object.entries(clients)) sessions[k] = await c.firstPage();
  const rounds = 10;
  const rtt = { after: [], before: [], direct: [] };
  for (let r = 0; r < rounds; r++) {
    for (const k of Object.keys(clients)) {
      for (let i = 0; i < RTT_CALLS / rounds; i++) {
        const s = now();
        await clients[k].call('Runtime.evaluate', { expression: '1+1' }, sessions[k]);
        rtt[k].push((now() - s) * 1000);
      }
    }
  }
  log('relay filter: round trips done');
  // Client → browser: one 10 MB string, and 200,000 numbers (many small JSON values).
  const TEN_MB = 10 * 1024 * 1024;
  const bigExpression = `'${'y'.repeat(TEN_MB)}'.length`;
  const numbers = Array.from({ length: 200_000 }, (_, i) => i * 1.5);
  const window = {};
  for (const k of Object.keys(clients)) {
    window[k] = (await clients[k].call('Runtime.evaluate', { expression: 'window' }, sessions[k])).result.result.objectId;
  }
  const big = { after: [], before: [], direct: [] };
  const many = { after: [], before: [], direct: [] };
  let manyBytes = 0;
  for (let r = 0; r < 10; r++) {
    for (const k of Object.keys(clients)) {
      let s = now();
      const res = await clients[k].call('Runtime.evaluate', { expression: bigExpression, returnByValue: true }, sessions[k]);
      big[k].push(now() - s);
      if (res.result.result.value !== TEN_MB) throw new Error(`short 10 MB command through ${k}`);
      const params = { objectId: window[k], functionDeclaration: 'function(a){return a.length}', arguments: [{ value: numbers }], returnByValue: true };
      manyBytes = JSON.stringify(params).length;
      s = now();
      const counted = await clients[k].call('Runtime.callFunctionOn', params, sessions[k]);
      many[k].push(now() - s);
      if (counted.result.result.value !== numbers.length) throw new Error(`numbers lost through ${k}`);
    }
  }
  const rss = { after: afterServer.rssKiB(), before: beforeServer.rssKiB() };
  via.close(); direct.close(); old.client.close();
  await afterServer.api('POST', `/v1/sessions/${id}`, { status: 'REQUEST_RELEASE' });
  await afterServer.stop();
  await beforeServer.stop();
  return { rtt, big, many, manyBytes, tenMb: TEN_MB, rss };
}

export const run = benchRelayFilter;

/** `meta.rtt`: the round trips per client; `meta.beforeBin`: the earlier build's name. */
export function render(r, meta) {
  const f = (x, d = 1) => x.toFixed(d);
  const row = (name, xs, unit, scale = 1) => `| ${name} | ${f(pct(xs.after, 50) * scale)} ${unit} | ${f(pct(xs.before, 50) * scale)} ${unit} | ${f(pct(xs.direct, 50) * scale)} ${unit} | ${f(pct(xs.after, 50) / pct(xs.before, 50), 2)}× |`;
  return `## 2c. The relay's filter: a command forwarded as sent, against parsed and re-serialised

\`node bench/run.mjs --only-relay-filter\` with \`BROWSERD_BEFORE_BIN\` a release build of the
commit before the change (${meta.beforeBin}). Two servers side by side, browsers
unsandboxed, one session each; "direct" is the after-build's browser on its own websocket.
Rounds alternate between the three. Before, every client command became a \`serde_json::Value\`
tree and was written out again (numbers could move, keys were sorted); now a command no rule
is about is scanned strictly without building it and its bytes go on as they came.

| measure (p50) | after: as sent | before: re-serialised | direct | after / before |
|---|---|---|---|---|
${row(`\`Runtime.evaluate("1+1")\` round trip (${meta.rtt} calls each)`, r.rtt, 'µs')}
${row('10 MB expression, client → browser (10 calls)', r.big, 'ms')}
${row(`\`callFunctionOn\` with 200,000 numbers (${f(r.manyBytes / 1024 / 1024, 1)} MB of JSON, 10 calls)`, r.many, 'ms')}

browserd's RSS after the run: ${f(r.rss.after / 1024)} MiB after, ${f(r.rss.before / 1024)} MiB before.
`;
}
