// 1b. Contexts: cold sessions with and without a persisted context (restoring and saving a
// profile). Part of the full run (ctx.site, ctx.cold: the runner's shared servers).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { now, pct, f } from '../lib/common.mjs';

export const name = 'contexts';
export const title = '1b. contexts: restoring and saving a profile';

/** One cold session, with or without a persisted context: create, sign in, release. */
async function contextRound(server, site, contextId) {
  const body = contextId ? { browserSettings: { context: { id: contextId, persist: true } } } : {};
  let start = now();
  const created = await server.api('POST', '/v1/sessions', { keepAlive: true, ...body });
  if (created.status !== 201) throw new Error(`create: ${created.status} ${JSON.stringify(created.body)}`);
  const create = now() - start;
  const browser = await chromium.connectOverCDP(created.body.connectUrl);
  const page = browser.contexts()[0].pages()[0];
  await page.goto(`${site.url}/page`);
  await page.evaluate(() => { document.cookie = `visit=${Date.now()}; max-age=3600`; localStorage.setItem('n', String(Date.now())); });
  start = now();
  await server.api('POST', `/v1/sessions/${created.body.id}`, { status: 'REQUEST_RELEASE' });
  const release = now() - start;
  await browser.close();
  return { create, release };
}

async function benchContexts(ctx) {
  const ITERATIONS = ctx.iterations;
  const server = ctx.cold;
  const { body: context } = await server.api('POST', '/v1/contexts', {});
  await contextRound(server, ctx.site, context.id); // fills the context (untimed)
  const results = { plain: [], context: [] };
  const n = Math.max(10, Math.floor(ITERATIONS / 2));
  for (let i = 0; i < n; i++) {
    for (const k of i % 2 ? ['plain', 'context'] : ['context', 'plain']) {
      results[k].push(await contextRound(server, ctx.site, k === 'context' ? context.id : null));
    }
  }
  const file = join(server.dataDir, 'contexts', `${context.id}.ctx`);
  results.bytes = existsSync(file) ? readFileSync(file).length : 0;
  results.n = n;
  return results;
}

export const run = benchContexts;

export function render(contexts) {
  return `## 1b. Contexts: restoring and saving a profile (${contexts.n} iterations each, ms, p50 / p95)

Cold sessions (no warm pool: a session with a context always starts its own browser), created
with keepAlive, a page loaded, a cookie and a localStorage item set, then released. "With
context" restores the saved profile (decrypt, unpack, set its cookies through CDP) at create,
and saves it at release (read cookies, \`Browser.close\` so Chromium flushes its profile, zip,
encrypt, write). Interleaved with the plain sessions. The sealed context was ${f(contexts.bytes / 1024, 0)} KiB.

| stage | plain | with context | cost of the context |
|---|---|---|---|
| create | ${f(pct(contexts.plain.map((x) => x.create), 50))} / ${f(pct(contexts.plain.map((x) => x.create), 95))} | ${f(pct(contexts.context.map((x) => x.create), 50))} / ${f(pct(contexts.context.map((x) => x.create), 95))} | +${f(pct(contexts.context.map((x) => x.create), 50) - pct(contexts.plain.map((x) => x.create), 50))} |
| release | ${f(pct(contexts.plain.map((x) => x.release), 50))} / ${f(pct(contexts.plain.map((x) => x.release), 95))} | ${f(pct(contexts.context.map((x) => x.release), 50))} / ${f(pct(contexts.context.map((x) => x.release), 95))} | +${f(pct(contexts.context.map((x) => x.release), 50) - pct(contexts.plain.map((x) => x.release), 50))} |
`;
}
