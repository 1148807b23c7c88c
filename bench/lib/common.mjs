// What every section shares: where things are, the browsers' flags, timing, percentiles, the log.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.BROWSERD_BIN ?? join(repo, 'target', 'release', 'browserd');
// An earlier build of browserd (optional): its relay is measured in the same run, a row of its own.
export const BEFORE_BIN = process.env.BROWSERD_BEFORE_BIN;
// A PostgreSQL for the cluster section (scripts/bench starts one with pg_virtualenv).
export const DATABASE = process.env.BROWSERD_BENCH_DATABASE;
export const CHROMIUM = ['chromium', 'chromium-browser', 'google-chrome']
  .map((n) => { try { return execFileSync('which', [n], { encoding: 'utf8' }).trim(); } catch { return null; } })
  .find(Boolean);
export const KEY = 'bench-key';
// Debian's `chromium` is a wrapper script that adds flags of its own; browserd runs the binary
// behind it (section 8), and so does the direct baseline, so both launch the very same program.
export const CHROMIUM_BINARY = existsSync('/usr/lib/chromium/chromium') ? '/usr/lib/chromium/chromium' : CHROMIUM;

// The same flags browserd gives Chromium (crates/browserd/src/browser/chromium.rs), so the
// direct baseline launches the very same browser.
export const FLAGS = ['--headless', '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0',
  '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-domain-reliability', '--disable-client-side-phishing-detection', '--disable-default-apps',
  '--disable-crash-reporter', '--disable-breakpad', '--metrics-recording-only',
  '--safebrowsing-disable-auto-update', '--password-store=basic', '--use-mock-keychain', '--mute-audio',
  '--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup',
  '--window-size=1280,720', ...(process.getuid() === 0 ? ['--no-sandbox'] : [])];

export const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
export const log = (...a) => console.error('[bench]', ...a);
/** A number for the tables: `d` decimals. */
export const f = (x, d = 1) => x.toFixed(d);
