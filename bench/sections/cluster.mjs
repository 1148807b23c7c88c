// 4. Several nodes on one PostgreSQL (BROWSERD_BENCH_DATABASE, which scripts/bench sets): the
// extra hop, the shared store's share of a create, sustained creates through one node versus
// three (--only-cluster; the full run too when the database is set).
import { DATABASE, now, sleep, pct, log, f } from '../lib/common.mjs';
import { startBrowserd } from '../lib/processes.mjs';
import { Cdp, sameBrowserBothWays } from '../lib/cdp.mjs';

export const name = 'cluster';
export const title = '4. several nodes on one PostgreSQL';

function startNode(name, { warmPool = 2, maxSessions = 6, sandbox = 'auto' } = {}) {
  return startBrowserd({
    warmPool, maxSessions, sandbox, extra: ['--node-name', name],
    env: { BROWSERD_DATABASE: DATABASE, BROWSERD_CONTEXT_KEY: '0123456789abcdef'.repeat(4) },
  });
}

/** `url` with its host:port swapped for `node`'s. */
const through = (url, node) => url.replace(/^ws:\/\/[^/]+/, node.base.replace('http://', 'ws://'));

/** Warm creates then releases, alternating between servers; ms per create. */
async function createLatency(servers, n) {
  const out = servers.map(() => []);
  for (let i = 0; i < n; i++) {
    for (const [k, server] of servers.entries()) {
      await server.waitWarm(1);
      const s = now();
      const { status, body } = await server.api('POST', '/v1/sessions', {});
      out[k].push(now() - s);
      if (status !== 201) throw new Error(`create ${status}: ${JSON.stringify(body)}`);
      await server.api('POST', `/v1/sessions/${body.id}`, { status: 'REQUEST_RELEASE' });
    }
  }
  return out;
}

/** Workers create and release sessions through `doors` in turn for `seconds`: creates/s. */
async function sustained(doors, workers, seconds) {
  const until = now() + seconds * 1000;
  let done = 0, refused = 0, turn = 0;
  const latencies = [];
  await Promise.all(Array.from({ length: workers }, async () => {
    while (now() < until) {
      const door = doors[turn++ % doors.length];
      const s = now();
      const { status, body } = await door.api('POST', '/v1/sessions', {});
      if (status !== 201) { refused++; await sleep(50); continue; }
      latencies.push(now() - s);
      done++;
      await door.api('POST', `/v1/sessions/${body.id}`, { status: 'REQUEST_RELEASE' });
    }
  }));
  return { perSecond: done / seconds, refused, p50: pct(latencies, 50) };
}

async function benchCluster(ctx) {
  const { iterations: ITERATIONS, rtt: RTT_CALLS, clusterSeconds: CLUSTER_SECONDS } = ctx;
  // The relay with a hop: one unsandboxed browser on node a, reached directly, through a,
  // and through node b.
  const a = await startNode('bench-a', { warmPool: 0, sandbox: 'off', maxSessions: 20 });
  const b = await startNode('bench-b', { warmPool: 0, sandbox: 'off' });
  const { via, direct, floor, socat, id } = await sameBrowserBothWays(a);
  const { body } = await a.api('GET', `/v1/sessions/${id}`);
  const hop = await Cdp.connect(through(body.connectUrl, b));
  const clients = { direct, owner: via, hop, floor };
  const sessions = {};
  for (const [k, c] of Object.entries(clients)) sessions[k] = await c.firstPage();
  const rtt = Object.fromEntries(Object.keys(clients).map((k) => [k, []]));
  for (let r = 0; r < 10; r++) {
    for (const k of Object.keys(clients)) {
      for (let i = 0; i < RTT_CALLS / 10; i++) {
        const s = now();
        await clients[k].call('Runtime.evaluate', { expression: '1+1' }, sessions[k]);
        rtt[k].push((now() - s) * 1000);
      }
    }
  }
  for (const c of Object.values(clients)) c.close();
  socat.kill();
  await a.api('POST', `/v1/sessions/${id}`, { status: 'REQUEST_RELEASE' });
  await a.stop(); await b.stop();
  log('cluster: round trips done');

  // Warm create latency, embedded SQLite versus the shared PostgreSQL, interleaved.
  const lite = await startBrowserd({ warmPool: 2 });
  const pg = await startNode('bench-pg');
  const [liteCreates, pgCreates] = await createLatency([lite, pg], ITERATIONS);
  await lite.stop(); await pg.stop();
  log('cluster: create latency done');

  // Sustained creates: one node, then three, the same workers and time.
  const one = [await startNode('bench-1')];
  const single = await sustained(one, 6, CLUSTER_SECONDS);
  await one[0].stop();
  const three = [await startNode('bench-x'), await startNode('bench-y'), await startNode('bench-z')];
  const triple = await sustained(three, 6, CLUSTER_SECONDS);
  for (const n of three) await n.stop();
  log('cluster: sustained creates done');
  return { rtt, liteCreates, pgCreates, single, triple };
}

export const run = benchCluster;

/** `meta.rtt`, `meta.iterations`, `meta.clusterSeconds`: the run's round trips, creates and seconds. */
export function render(c, meta) {
  const { iterations: ITERATIONS, rtt: RTT_CALLS, clusterSeconds: CLUSTER_SECONDS } = meta;
  const r = (k, p) => pct(c.rtt[k], p);
  return `## 4. Several nodes on one PostgreSQL

Nodes on loopback sharing a PostgreSQL 15 that \`pg_virtualenv\` started for the run (same
machine). Round trips: one unsandboxed browser on node a reached on its own DevTools socket,
through node a (its owner), and through node b (which forwards the upgrade to a and then
copies bytes), ${RTT_CALLS} \`Runtime.evaluate("1+1")\` calls each in alternating rounds.

| path | p50 | p99 | p50 over direct |
|---|---|---|---|
| direct | ${f(r('direct', 50))} µs | ${f(r('direct', 99))} µs | |
| through the owner node | ${f(r('owner', 50))} µs | ${f(r('owner', 99))} µs | +${f(r('owner', 50) - r('direct', 50))} µs |
| through another node (one more hop) | ${f(r('hop', 50))} µs | ${f(r('hop', 99))} µs | +${f(r('hop', 50) - r('direct', 50))} µs |
| through socat (a byte-copying proxy process) | ${f(r('floor', 50))} µs | ${f(r('floor', 99))} µs | +${f(r('floor', 50) - r('direct', 50))} µs |

The extra hop costs ${f(r('hop', 50) - r('owner', 50))} µs at p50 over going to the owner:
one more process that copies bytes (compare the socat row, a byte-copying process of its
own). A client skips it when the create
answers with a \`connectUrl\` of the owner (\`--public-url\` per node, docs/cluster.md).

Warm creates (a warm browser ready, create then release, ${ITERATIONS} each, interleaved): the
store's share of a create.

| store | create p50 | p95 |
|---|---|---|
| SQLite (embedded) | ${f(pct(c.liteCreates, 50))} ms | ${f(pct(c.liteCreates, 95))} ms |
| PostgreSQL (shared) | ${f(pct(c.pgCreates, 50))} ms | ${f(pct(c.pgCreates, 95))} ms |

Sustained creates: 6 workers create and release sessions (no client connects) for
${CLUSTER_SECONDS} s, through one node, then spread over three nodes (each with a warm pool of
2 and room for 6):

| nodes | creates/s | create p50 | refused (429) |
|---|---|---|---|
| 1 | ${f(c.single.perSecond, 2)} | ${f(c.single.p50)} ms | ${c.single.refused} |
| 3 | ${f(c.triple.perSecond, 2)} | ${f(c.triple.p50)} ms | ${c.triple.refused} |

This machine has 2 cores: every create past the warm pool waits for a Chromium launch, and
three nodes' browsers share the same two cores, so three nodes on one machine cannot create
faster than one; the row shows what the cluster's own machinery (placement, forwarding,
leases, the shared store) costs on top. On separate machines each node brings its own cores.

What one PostgreSQL carries (counted from the code, docs/cluster.md): a create is 1 key
lookup + 1 transaction of 2 statements (the per-project advisory lock, the conditional
insert) + 1 update when a cold browser becomes ready; a create that a full node passes on adds
1 read of the nodes; a connect through a node that does not run the session is 2 reads
(session, node), through its owner none; each node renews its lease every lease/5 (2 s by
default: 0.5 updates/s) and sweeps as often (1 transaction of 3 statements). 100 nodes are
then ~50 lease updates and ~50 sweep transactions a second, and creates at a few hundred a
second are a few thousand simple statements a second: well inside one PostgreSQL on modest
hardware. What would need more first: one project's creates queue on its advisory lock (one
create per transaction of 4 short round trips to the database: on the order of a thousand
creates a second per project on a local network), and at ~1,000
nodes the sweeps of every node (redundant by design, \`SKIP LOCKED\` keeps them from
waiting) would be worth spacing out.
`;
}
