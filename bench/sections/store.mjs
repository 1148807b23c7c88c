// 5. A month of sessions in the store: lists and usage with 1,000 and 100,000 rows (filled by
// the fill_sessions example), and the retention sweep deleting them (--only-store; the full
// run too).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { repo, KEY, now, pct } from '../lib/common.mjs';
import { startBrowserd } from '../lib/processes.mjs';

export const name = 'store';
export const title = '5. a month of sessions in the store';

const FILL = join(repo, 'target', 'release', 'examples', 'fill_sessions');

/** The store's reads with 1,000 and then 100,000 ended sessions in it, through the API. */
async function benchStore() {
  if (!existsSync(FILL)) throw new Error(`build the filler first: ${FILL} is missing`);
  const server = await startBrowserd({ warmPool: 0 });
  const project = (await server.project()).id;
  // Not execFileSync: the event loop must run meanwhile, or the HTTP client would reuse a
  // keep-alive connection the server closed while idle.
  const fill = async (...a) => {
    const proc = spawn(FILL, [server.dataDir, ...a], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (d) => { out += d; });
    const [code] = await once(proc, 'exit');
    if (code !== 0) throw new Error(`fill_sessions ${a.join(' ')} exited ${code}`);
    return JSON.parse(out.trim());
  };
  const oldest = encodeURIComponent("user_metadata['run']:'r0'");
  const reads = [
    ['`GET /v1/sessions` (the newest 1,000: the default limit)', '/v1/sessions'],
    ['`GET /v1/sessions?limit=50`', '/v1/sessions?limit=50'],
    ['`GET /v1/sessions?status=ERROR&limit=50`', '/v1/sessions?status=ERROR&limit=50'],
    ['`GET /v1/sessions?q=…&limit=1` (matches only the oldest: reads every row)', `/v1/sessions?limit=1&q=${oldest}`],
    ['`GET /v1/projects/{id}/usage`', `/v1/projects/${project}/usage`],
  ];
  const timeRead = async (path) => {
    const t = now();
    const res = await fetch(server.base + path, { headers: { 'x-bb-api-key': KEY } });
    const bytes = (await res.arrayBuffer()).byteLength;
    if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
    return { ms: now() - t, bytes };
  };
  const measure = async () => {
    const out = [];
    for (const [, path] of reads) {
      for (let i = 0; i < 3; i++) await timeRead(path);
      const runs = [];
      for (let i = 0; i < 30; i++) runs.push(await timeRead(path));
      out.push({ p50: pct(runs.map((r) => r.ms), 50), p95: pct(runs.map((r) => r.ms), 95), bytes: runs[0].bytes });
    }
    return out;
  };
  // Each fill is followed by what the server's sweep does every 10 minutes: ended sessions
  // are added to the usage totals.
  await fill('add', '1000');
  await fill('bill');
  const small = await measure();
  const added = await fill('add', '99000', '1000');
  const billed = await fill('bill');
  const large = await measure();
  const usage = (await server.api('GET', `/v1/projects/${project}/usage`)).body;
  const purge = await fill('purge');
  const after = (await server.api('GET', `/v1/projects/${project}/usage`)).body;
  await server.stop();
  return { reads, small, large, added, billed, purge, usage, after };
}

export const run = benchStore;

export function render(s) {
  const f = (x, d = 1) => x.toFixed(d);
  const rows = s.reads.map(([name], i) => `| ${name} | ${f(s.small[i].p50)} / ${f(s.small[i].p95)} | ${f(s.large[i].p50)} / ${f(s.large[i].p95)} | ${f(s.large[i].p50 / s.small[i].p50, 2)}× | ${Math.round(s.large[i].bytes / 1024)} KiB |`).join('\n');
  return `## 5. A month of sessions: 1,000 versus 100,000 ended sessions in the store (ms, p50 / p95)

One browserd (embedded SQLite), one project; \`crates/browserd/examples/fill_sessions.rs\` adds ended
sessions spread over the last 28 days, then the same reads run 30 times each (after 3 untimed),
over HTTP on loopback, with 1,000 and then 100,000 rows.

| read | 1,000 rows | 100,000 rows | ratio | answer at 100,000 |
|---|---|---|---|---|
${rows}

Adding the 99,000 rows one create-statement at a time took ${f(s.added.seconds)} s; the sweep's billing
step (adding ended sessions to their project's usage total, batches of 1,000, each one
transaction) took ${f(s.billed.seconds, 2)} s for them. Usage before the deletes: ${s.usage.browserMinutes} browser
minutes. The retention sweep's deletes (batches of 1,000) removed all ${s.purge.purged} rows in
${f(s.purge.seconds, 2)} s; usage after: ${s.after.browserMinutes} browser minutes.
`;
}
