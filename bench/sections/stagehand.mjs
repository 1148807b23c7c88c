// 2e. Stagehand 4 sessions beside plain ones, with the warm pool and without (--only-stagehand;
// the full run too).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repo, KEY, pct } from '../lib/common.mjs';
import { startBrowserd } from '../lib/processes.mjs';

export const name = 'stagehand';
export const title = '2e. Stagehand 4 beside plain sessions';

const AGENTS = join(repo, 'bench', 'agents');

/**
 * Stagehand 4 sessions beside plain ones (bench/agents/round.mjs, on the Node 22 that
 * package installs), on a server with the warm pool (which keeps a browser warm with the
 * extension a create last named) and on one without (every Stagehand session starts its
 * own browser: what every server did before extension-warm browsers).
 */
async function benchStagehand(ctx) {
  const node = join(AGENTS, 'node_modules', '.bin', 'node');
  if (!existsSync(node)) throw new Error('Stagehand is not installed: run `(cd bench/agents && npm ci)` (scripts/bench does)');
  const n = ctx.stagehandIterations;
  const out = {};
  for (const [name, warmPool] of [['warm', 2], ['cold', 0]]) {
    const server = await startBrowserd({ warmPool, maxSessions: 6 });
    await server.waitWarm(2);
    const text = execFileSync(node, [join(AGENTS, 'round.mjs'), server.base, KEY, String(n)], {
      cwd: AGENTS, encoding: 'utf8', maxBuffer: 1 << 24,
      env: { ...process.env, DO_NOT_TRACK: '1', BROWSERBASE_TELEMETRY_DISABLED: '1' },
    });
    out[name] = JSON.parse(text.trim().split('\n').pop());
    await server.stop();
  }
  return { n, ...out };
}

export const run = benchStagehand;

export function render(r) {
  const f = (xs, p) => pct(xs, p).toFixed(0);
  const row = (label, xs) => `| ${label} | ${f(xs, 50)} / ${f(xs, 95)} |`;
  const ratio = (a, b) => (pct(a, 50) / pct(b, 50)).toFixed(1);
  return `## 2e. Stagehand 4 sessions beside plain ones (${r.n} interleaved rounds each, ms p50 / p95)

\`node bench/run.mjs --only-stagehand\` (bench/agents: \`@browserbasehq/stagehand\` 4.4.0 on Node
22). Stagehand: \`browserbase.launch\` (its extension uploaded, the session created with it,
connected, the extension's service worker attached and its own connection opened from inside
the browser) and \`Stagehand.create\`, until its first page is in hand. Plain:
\`POST /v1/sessions\` and Playwright's \`connectOverCDP\`, until its first page is in hand.
Sandboxed browsers; 1.5 s between rounds so the pool refills.

| | p50 / p95 |
|---|---|
${row('plain session, warm pool', r.warm.plain)}
${row('Stagehand 4, warm pool (a browser kept warm with its extension)', r.warm.stagehand)}
${row('… of which \`browserbase.launch\`', r.warm.launch)}
${row('Stagehand 4, no warm pool (its own browser started per session)', r.cold.stagehand)}
${row('plain session, no warm pool', r.cold.plain)}

Stagehand 4 with the extension kept warm: ${ratio(r.warm.stagehand, r.warm.plain)}× a plain
warm session, ${ratio(r.cold.stagehand, r.warm.stagehand)}× faster than starting its own browser.
What is left above a plain session is Stagehand's own setup inside the browser (its service
worker attached, a hidden target, its extension's own CDP connection; the session's CDP log
shows each step), not browserd's create.
`;
}
