// 1c. The sandbox's cost: cold creates and releases with it on and off. Part of the full run
// (ctx.cold: the runner's shared cold server).
import { now, pct, f } from '../lib/common.mjs';
import { startBrowserd } from '../lib/processes.mjs';

export const name = 'sandbox';
export const title = '1c. the sandbox on and off';

/** Cold creates and releases with the sandbox on (the default) and off, interleaved. */
async function benchSandbox(ctx) {
  const ITERATIONS = ctx.iterations;
  const open = await startBrowserd({ warmPool: 0, sandbox: 'off' });
  const servers = { on: ctx.cold, off: open };
  const runs = { on: [], off: [] };
  const n = Math.max(5, Math.round(ITERATIONS / 2));
  for (let i = 0; i < n; i++) {
    for (const k of ['on', 'off']) {
      let s = now();
      const { body } = await servers[k].api('POST', '/v1/sessions', {});
      const create = now() - s;
      s = now();
      await servers[k].api('POST', `/v1/sessions/${body.id}`, { status: 'REQUEST_RELEASE' });
      runs[k].push({ create, release: now() - s });
    }
  }
  await open.stop();
  return { ...runs, n };
}

export const run = benchSandbox;

export function render(sandbox) {
  return `## 1c. The sandbox: cold sessions with it on (the default) and off (${sandbox.n} iterations each, ms, p50 / p95)

On: each browser under bwrap in its own mount, pid and network namespaces, as its own uid,
Chromium's own sandbox on (docs/security.md). Off (\`--sandbox off\`): the browser runs as
browserd's user with \`--no-sandbox\`. A warm create takes a browser that already started,
so the pool hides this cost (section 1).

| stage | sandbox on | sandbox off | on − off |
|---|---|---|---|
| create | ${f(pct(sandbox.on.map((x) => x.create), 50))} / ${f(pct(sandbox.on.map((x) => x.create), 95))} | ${f(pct(sandbox.off.map((x) => x.create), 50))} / ${f(pct(sandbox.off.map((x) => x.create), 95))} | ${f(pct(sandbox.on.map((x) => x.create), 50) - pct(sandbox.off.map((x) => x.create), 50))} |
| release | ${f(pct(sandbox.on.map((x) => x.release), 50))} / ${f(pct(sandbox.on.map((x) => x.release), 95))} | ${f(pct(sandbox.off.map((x) => x.release), 50))} / ${f(pct(sandbox.off.map((x) => x.release), 95))} | ${f(pct(sandbox.on.map((x) => x.release), 50) - pct(sandbox.off.map((x) => x.release), 50))} |
`;
}
