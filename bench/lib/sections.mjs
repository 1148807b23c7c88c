// Every section of docs/benchmarks.md, in the document's order, and those that run alone.
import * as header from '../sections/header.mjs';
import * as lifecycle from '../sections/lifecycle.mjs';
import * as contexts from '../sections/contexts.mjs';
import * as sandbox from '../sections/sandbox.mjs';
import * as relay from '../sections/relay.mjs';
import * as inspector from '../sections/inspector.mjs';
import * as scale from '../sections/scale.mjs';
import * as cluster from '../sections/cluster.mjs';
import * as store from '../sections/store.mjs';
import * as egress from '../sections/egress.mjs';
import * as selenium from '../sections/selenium.mjs';
import * as launch from '../sections/launch.mjs';
import * as peers from '../sections/peers.mjs';
import * as relayFilter from '../sections/relay-filter.mjs';
import * as largeMessages from '../sections/large-messages.mjs';
import * as stagehand from '../sections/stagehand.mjs';

export {
  header, lifecycle, contexts, sandbox, relay, inspector, scale, cluster, store, egress, selenium,
  launch, peers, relayFilter, largeMessages, stagehand,
};

/**
 * In the order of docs/benchmarks.md (2c, 2d and 2e came after 9, run alone, and stay there).
 * A section's `name` is its key in results.json and its markers' name.
 */
export const SECTIONS = [header, lifecycle, contexts, sandbox, relay, inspector, scale, cluster, store,
  egress, selenium, launch, peers, relayFilter, largeMessages, stagehand];

/** The sections that run alone, each with its --only-NAME flag. */
export const ONLY = [cluster, store, egress, selenium, launch, peers, relayFilter, largeMessages, stagehand];
