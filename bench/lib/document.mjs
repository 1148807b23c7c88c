// bench/results.json and docs/benchmarks.md.
//
// results.json holds one entry per section, keyed by the section's name:
//   { "<name>": { "meta": { date, iterations, rtt, clusterSeconds, stagehandIterations,
//                           beforeBin, machine: { cpus, cpu, memory }, node },
//                 "results": <what the section's run returned> }, ... }
// `meta` is the run that measured that section (a section run alone with --only-X has its own).
//
// docs/benchmarks.md is rendered from it: each section between its markers,
//   <!-- name -->
//   (the section's render(results, meta, all))
//   <!-- /name -->
// in the order of the sections list, one blank line between sections. A section that
// results.json has no entry for keeps the text it has in the document (between and with its
// markers) verbatim: the figures of runs from before results.json existed.
import { readFileSync, writeFileSync, existsSync, renameSync } from 'node:fs';

const MARKER = /^<!-- (\/?)([a-z0-9-]+) -->$/;

/** results.json as an object ({} when there is none yet). */
export function readResults(path) {
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : {};
}

/**
 * Numbers with at most 6 decimals: timings are differences of a nanosecond clock in ms (so 6
 * decimals is every digit measured) or µs; what the tables show has at most 2.
 */
const trim = (key, value) => (typeof value === 'number' && !Number.isInteger(value) ? Number(value.toFixed(6)) : value);

/**
 * results.json's text: indented, but an array or object of plain values (a run's timings, one
 * iteration's stages) on one line.
 */
export function formatResults(results) {
  const oneLine = (open, close) => (_, inner) => `${open}${inner.split(/,\n\s*/).join(', ')}${close}`;
  return `${JSON.stringify(results, trim, 2)
    .replace(/\{\n\s*([^[\]{}]*?)\n\s*\}/g, oneLine('{ ', ' }'))
    .replace(/\[\n\s*([^[\]{}]*?)\n\s*\]/g, oneLine('[', ']'))}\n`;
}

/** Writes results.json whole (a temporary file renamed over it, so a failed write loses nothing). */
export function writeResults(path, results) {
  writeFileSync(`${path}.tmp`, formatResults(results));
  renameSync(`${path}.tmp`, path);
}

/**
 * The sections of a rendered document: name → its text, markers and final newline included.
 * Throws on anything that a render would not keep: text outside the markers (other than the
 * blank line between sections), a marker left open, a name twice, a name no section has.
 */
export function parseDocument(text, names, where = 'the document') {
  const sections = new Map();
  const lines = text.split(/(?<=\n)/);
  let open = null; let start = 0; let at = 0; let lineNo = 0; let gap = '';
  const fail = (why) => { throw new Error(`${where}, line ${lineNo}: ${why}`); };
  for (const line of lines) {
    lineNo++;
    const m = MARKER.exec(line.replace(/\n$/, ''));
    if (open === null) {
      if (m && !m[1]) {
        if (gap !== (sections.size ? '\n' : '')) {
          fail(`${JSON.stringify(gap.slice(0, 200))} is outside the section markers (only one blank line may separate sections)`);
        }
        if (!names.includes(m[2])) fail(`no section is called "${m[2]}" (sections: ${names.join(', ')})`);
        if (sections.has(m[2])) fail(`section "${m[2]}" appears twice`);
        open = m[2]; start = at; gap = '';
      } else {
        gap += line;
      }
    } else if (m) {
      if (m[1] !== '/' || m[2] !== open) fail(`${line.trim()} inside section "${open}"`);
      sections.set(open, text.slice(start, at + line.length));
      open = null;
    }
    at += line.length;
  }
  if (open !== null) fail(`section "${open}" has no <!-- /${open} -->`);
  if (gap !== '' && !(sections.size === 0 && gap.trim() === '')) {
    fail(`${JSON.stringify(gap.slice(0, 200))} is outside the section markers`);
  }
  return sections;
}

/** One section's text, rendered from its entry in results.json. */
export function renderSection(section, results) {
  const entry = results[section.name];
  const body = section.render(entry.results, entry.meta, results);
  if (!body.endsWith('\n')) throw new Error(`section ${section.name} rendered without a final newline`);
  return `<!-- ${section.name} -->\n${body}<!-- /${section.name} -->\n`;
}

/**
 * The whole document: `sections` (in order) from `results`, or as `existing` (the document
 * as it is, or null) has them where `results` has no entry.
 */
export function renderDocument(sections, results, existing, where) {
  const names = sections.map((s) => s.name);
  for (const name of Object.keys(results)) {
    if (!names.includes(name)) throw new Error(`results.json has "${name}", which no section renders`);
  }
  const old = existing === null ? new Map() : parseDocument(existing, names, where);
  const chunks = [];
  for (const section of sections) {
    if (results[section.name]) chunks.push(renderSection(section, results));
    else if (old.has(section.name)) chunks.push(old.get(section.name));
  }
  return chunks.join('\n');
}

/**
 * Puts what a run measured (`measured`: results by section name) into the results file at
 * `path`, each with the run's `meta`, keeping the other sections' entries; in the order of
 * `sections`, whatever order they were measured in.
 */
export function storeResults(sections, path, measured, meta) {
  const all = readResults(path);
  for (const [name, results] of Object.entries(measured)) all[name] = { meta, results };
  const names = sections.map((s) => s.name);
  const order = (name) => (names.includes(name) ? names.indexOf(name) : names.length);
  writeResults(path, Object.fromEntries(Object.entries(all).sort(([a], [b]) => order(a) - order(b))));
}

/** Renders the document at `out` from the results file at `path` (and from `out` as it is). */
export function renderFile(sections, path, out) {
  const results = readResults(path);
  const existing = existsSync(out) ? readFileSync(out, 'utf8') : null;
  const md = renderDocument(sections, results, existing, out);
  writeFileSync(out, md);
  return { results, md };
}
