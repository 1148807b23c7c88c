// Checks the bench's layout without measuring anything (no browserd, no browser):
//   - every module in bench/sections/ exports `name` (its file's name), `title`, `run` and
//     `render`, and bench/lib/sections.mjs lists each once;
//   - docs/benchmarks.md is what `node bench/run.mjs --render` makes of bench/results.json
//     (and of itself, for the sections results.json has no entry for yet).
// Usage: node bench/check.mjs   (exits 1 on a failure; needs `(cd bench && npm ci)`)
import { readdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { SECTIONS, ONLY } from './lib/sections.mjs';
import { readResults, renderDocument } from './lib/document.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };

const files = readdirSync(join(here, 'sections')).filter((f) => f.endsWith('.mjs')).sort();
for (const file of files) {
  const mod = await import(pathToFileURL(join(here, 'sections', file)));
  const where = `bench/sections/${file}`;
  check(mod.name === file.replace(/\.mjs$/, ''), `${where}: name is ${JSON.stringify(mod.name)}`);
  check(typeof mod.title === 'string' && mod.title.length > 0, `${where}: no title`);
  check(typeof mod.run === 'function', `${where}: no run function`);
  check(typeof mod.render === 'function', `${where}: no render function`);
  check(SECTIONS.filter((s) => s === mod).length === 1, `${where}: not once in bench/lib/sections.mjs SECTIONS`);
}
check(SECTIONS.length === files.length, `SECTIONS has ${SECTIONS.length} sections, bench/sections/ ${files.length} modules`);
check(ONLY.every((s) => SECTIONS.includes(s)), 'ONLY has a section that SECTIONS lacks');

const doc = join(here, '..', 'docs', 'benchmarks.md');
const text = readFileSync(doc, 'utf8');
let rendered = null;
try {
  rendered = renderDocument(SECTIONS, readResults(join(here, 'results.json')), text, doc);
} catch (e) {
  check(false, `rendering docs/benchmarks.md: ${e.message}`);
}
if (rendered !== null) {
  check(rendered === text, 'docs/benchmarks.md is not what bench/results.json renders: `node bench/run.mjs --render`, then look at the diff');
}

for (const f of failures) console.error(`bench/check: ${f}`);
console.log(`bench/check: ${files.length} sections, document ${rendered === text ? 'up to date' : 'NOT up to date'}; ${failures.length ? `${failures.length} failed` : 'all passed'}`);
process.exit(failures.length ? 1 : 0);
