// browserd benchmarks, measured side by side in one run on one machine:
//   1. lifecycle (create, connect, navigate, release) for browserd with its warm pool,
//      browserd cold, and Chromium launched directly (what a user would otherwise write),
//      with Playwright's connectOverCDP and with a raw CDP websocket client;
//   2. CDP round trips and large messages through browserd versus Chromium's own websocket;
//   3. scale: concurrent creates, browserd's own memory per idle session, and how many
//      sessions this machine holds before the first refusal.
//   4. several nodes on one PostgreSQL (with BROWSERD_BENCH_DATABASE): the extra hop, the
//      shared store's share of a create, sustained creates through one node versus three.
//   5. a month of sessions in the store: lists and usage with 1,000 and 100,000 rows, and
//      the retention sweep deleting them.
//   6. the egress path: page loads straight out, through browserd's egress and on to an
//      upstream proxy; warm and cold creates with proxies.
//   7. Selenium: a WebDriver session's lifecycle and command round trip through browserd
//      versus selenium-webdriver with its own chromedriver.
//   8. launching Chromium through Debian's wrapper script versus the binary (--only-launch).
//   9. beside a peer: browserless (bench/peers), browserd and direct Chromium: lifecycles,
//      bursts, memory per session, the relay, and issue 16's targets (--only-peers).
// Usage: node bench/run.mjs [--iterations 50] [--rtt 5000] [--out docs/benchmarks.md]
//        [--results bench/results.json] [--skip-capacity] [--cluster-seconds 20]
//        [--stagehand-iterations 15]
//        [--only-cluster | --only-store | --only-egress | --only-selenium | --only-launch
//         | --only-peers | --only-relay-filter (with BROWSERD_BEFORE_BIN) | --only-large-messages
//         | --only-stagehand]
//        (a section alone: its entry in --results replaced, the others kept; several such flags
//         run each in turn), or --render (measure nothing: render --out from --results), or --help.
//
// This file parses the flags and runs the sections (the full run in the order below). Each
// section is a module of bench/sections/, named as its key in --results and its markers in
// --out: `run(ctx)` measures and returns the raw results (ctx: the flags' values and, in the
// full run, the loopback site and the warm and cold servers that sections 1 to 2b share),
// `render(results, meta, all)` returns its markdown (meta: the run that measured it). What the
// sections share is in bench/lib/: common (paths, Chromium's flags, timing, percentiles),
// processes (the site, browserd, Chromium launched directly), cdp (a CDP client, the relay's
// fixtures), proc (/proc readers), document (results.json, the markdown), sections (the list).
// A run writes --results, then renders --out whole from it; a section with no entry there yet
// keeps the text it has in --out (the figures of runs from before results.json).
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { repo, BIN, BEFORE_BIN, CHROMIUM, DATABASE, now, log } from './lib/common.mjs';
import { startSite, startBrowserd } from './lib/processes.mjs';
import { storeResults, renderFile, renderSection } from './lib/document.mjs';
import {
  SECTIONS, ONLY, header, lifecycle, contexts, sandbox, relay, inspector, scale, cluster, store, egress,
  selenium, launch, peers, stagehand, relayFilter,
} from './lib/sections.mjs';

const FLAGS = {
  iterations: { type: 'string', default: '50', help: 'iterations of each measurement (some sections take half)' },
  rtt: { type: 'string', default: '5000', help: 'CDP round trips per client in the relay measurements' },
  out: { type: 'string', default: join(repo, 'docs', 'benchmarks.md'), help: 'the markdown rendered (and read for sections results.json lacks)' },
  results: { type: 'string', default: join(repo, 'bench', 'results.json'), help: 'the results, by section' },
  'skip-capacity': { type: 'boolean', default: false, help: 'full run: skip filling the machine with sessions (section 3)' },
  'cluster-seconds': { type: 'string', default: '20', help: 'section 4: seconds of sustained creates, one node and three' },
  'stagehand-iterations': { type: 'string', default: '15', help: 'section 2e: rounds of each kind of session' },
  ...Object.fromEntries(ONLY.map((s) => [`only-${s.name}`, { type: 'boolean', default: false, help: `${s.title} alone${s === relayFilter ? ' (with BROWSERD_BEFORE_BIN)' : s === cluster ? ' (with BROWSERD_BENCH_DATABASE)' : ''}` }])),
  render: { type: 'boolean', default: false, help: 'measure nothing: render --out from --results' },
  help: { type: 'boolean', short: 'h', default: false, help: 'this' },
};

function usage() {
  const rows = Object.entries(FLAGS).map(([flag, o]) => {
    const left = `--${flag}${o.short ? `, -${o.short}` : ''}${o.type === 'string' ? ' VALUE' : ''}`;
    const fallback = o.type === 'string' ? ` (default ${o.default.startsWith(`${repo}/`) ? o.default.slice(repo.length + 1) : o.default})` : '';
    return `  ${left.padEnd(30)} ${o.help}${fallback}`;
  });
  return `Usage: node bench/run.mjs [flags]
(scripts/bench builds browserd and installs what the bench needs first; its arguments come here.)

Without --only-X or --render, the full run: every section but relay-filter and large-messages,
cluster only with BROWSERD_BENCH_DATABASE. Each run stores what it measured in --results (a
section run alone replaces only its own entry) and renders --out whole from that file.
Environment: BROWSERD_BIN (default target/release/browserd), BROWSERD_BEFORE_BIN (an earlier
build, measured beside in section 2 and 2c), BROWSERD_BENCH_DATABASE (section 4).

${rows.join('\n')}
`;
}

/** The run's settings: the flags, numbers checked. */
function settings() {
  const wrong = (message) => Object.assign(new Error(message), { usage: true });
  let values;
  try {
    ({ values } = parseArgs({
      options: Object.fromEntries(Object.entries(FLAGS).map(([k, { help, ...o }]) => [k, o])),
      strict: true, allowPositionals: false,
    }));
  } catch (e) {
    throw wrong(e.message);
  }
  const number = (flag) => {
    const n = Number(values[flag]);
    if (!(Number.isFinite(n) && n > 0)) throw wrong(`--${flag} ${values[flag]}: a positive number, please`);
    return n;
  };
  return {
    help: values.help,
    render: values.render,
    only: ONLY.filter((s) => values[`only-${s.name}`]),
    out: resolve(values.out),
    results: resolve(values.results),
    ctx: {
      iterations: number('iterations'),
      rtt: number('rtt'),
      clusterSeconds: number('cluster-seconds'),
      stagehandIterations: number('stagehand-iterations'),
      skipCapacity: values['skip-capacity'],
    },
  };
}

/** What the section's render needs to know of the run that measured it, beside its results. */
function runMeta(ctx) {
  return {
    date: new Date().toISOString().slice(0, 10),
    iterations: ctx.iterations,
    rtt: ctx.rtt,
    clusterSeconds: ctx.clusterSeconds,
    stagehandIterations: ctx.stagehandIterations,
    beforeBin: BEFORE_BIN ? BEFORE_BIN.split('/').pop() : null,
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memory: totalmem() },
    node: process.version,
  };
}

/** The full run: every section in the order (and with the shared servers) it always had. */
async function runAll(ctx) {
  const out = {};
  ctx.started = now();
  const site = await startSite();
  Object.assign(ctx, { site, warm: await startBrowserd({ warmPool: 2 }), cold: await startBrowserd({ warmPool: 0 }) });
  await ctx.warm.waitWarm(2);
  for (const section of [lifecycle, contexts, sandbox, relay, inspector]) {
    log(section.name);
    out[section.name] = await section.run(ctx);
  }
  await ctx.warm.stop();
  await ctx.cold.stop();
  out.scale = await scale.run(ctx); // it logs its three parts
  if (DATABASE) {
    log('cluster');
    out.cluster = await cluster.run(ctx);
  } else {
    log('cluster: skipped, no BROWSERD_BENCH_DATABASE (the document keeps the section it has)');
  }
  for (const section of [egress, selenium, launch, store, peers, stagehand]) {
    log(section.name);
    out[section.name] = await section.run(ctx);
  }
  site.close();
  out.header = await header.run(ctx);
  return out;
}

async function main() {
  const run = settings();
  if (run.help) return process.stdout.write(usage());
  if (run.render) {
    if (run.only.length) throw Object.assign(new Error('--render measures nothing: leave out the --only flags'), { usage: true });
    renderFile(SECTIONS, run.results, run.out);
    return log(`rendered ${run.out} from ${run.results}`);
  }
  if (!existsSync(BIN)) throw new Error(`build browserd first: ${BIN} is missing`);
  if (run.only.some((s) => s !== store) || !run.only.length) {
    if (!CHROMIUM) throw new Error('no Chromium on PATH');
  }
  if (run.only.includes(cluster) && !DATABASE) {
    throw new Error('BROWSERD_BENCH_DATABASE is not set (scripts/bench sets it)');
  }
  const measured = {};
  if (run.only.length) {
    for (const section of run.only) measured[section.name] = await section.run(run.ctx);
  } else {
    Object.assign(measured, await runAll(run.ctx));
  }
  storeResults(SECTIONS, run.results, measured, runMeta(run.ctx));
  log(`wrote ${run.results}`);
  // Rendered from the file just written, as --render would.
  let rendered;
  try {
    rendered = renderFile(SECTIONS, run.results, run.out);
  } catch (e) {
    log(`the results are in ${run.results}; once the document renders, \`node bench/run.mjs --render\` writes it`);
    throw e;
  }
  const { results, md } = rendered;
  if (run.only.length) {
    for (const section of run.only) console.log(renderSection(section, results));
  } else {
    console.log(md);
  }
}

main().catch((e) => {
  if (e.usage) {
    console.error(`${e.message}\n(node bench/run.mjs --help lists the flags)`);
    process.exit(2);
  }
  console.error(e);
  process.exit(1);
});
