//! browserd's Prometheus metrics: one set per server ([`Metrics`], made with its
//! configuration and held by whoever counts), encoded in the text exposition format for
//! `GET /metrics`. Not a process-wide static: two servers in one process (tests) count
//! apart.
//!
//! `prometheus-client` (the Prometheus project's own Rust client) rather than the `metrics`
//! facade: no global recorder to install, no exporter with its own HTTP server, and typed
//! metric handles. Counters and gauges are atomics: the relay's per-message counters are
//! handles made once ([`Metrics::cdp`]), so counting a message takes no lock and allocates
//! nothing. Figures that are a state rather than events (live sessions, the warm pool,
//! memory) are set by the server just before each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusProject {
    pub status: String,
    pub project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ended {
    pub status: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Rule {
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Build {
    pub version: &'static str,
    /// The commit it was built from (`BROWSERD_COMMIT`, see build.rs).
    pub commit: &'static str,
}

/// Counters of one relay direction, made once and cloned into each relay.
#[derive(Clone, Debug, Default)]
pub struct Flow {
    pub messages: Counter,
    pub bytes: Counter,
}

#[derive(Clone, Debug, Default)]
pub struct CdpFlows {
    /// Client to browser.
    pub commands: Flow,
    /// Browser to client.
    pub replies: Flow,
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    pub sessions_live: Family<StatusProject, Gauge>,
    pub creates: Family<Outcome, Counter>,
    pub create_seconds: Family<Kind, Histogram>,
    pub launch_seconds: Histogram,
    pub warm_pool_target: Gauge,
    pub warm_pool_ready: Gauge,
    pub clients_connected: Gauge,
    pub http_connections: Gauge,
    pub endings: Family<Ended, Counter>,
    pub idle_disconnects: Counter,
    pub relay_memory_budget: Gauge,
    pub relay_memory_held: Gauge,
    pub relay_memory_waiting: Gauge,
    pub relay_memory_refusals: Counter,
    pub memory_available_bytes: Gauge,
    pub memory_floor_bytes: Gauge,
    pub store_seconds: Family<Operation, Histogram>,
    pub egress_refusals: Family<Rule, Counter>,
    pub draining: Gauge,
    pub session_slots: Gauge,
    pub session_slots_free: Gauge,
    /// Handles into the `cdp_messages` and `cdp_bytes` families (which the registry holds).
    cdp: CdpFlows,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Buckets from 1 ms to about 33 s, doubling.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// For unit tests' budgets and fakes: a server's own comes with its configuration.
#[cfg(test)]
impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A server's metrics: made once, with its configuration (`Config::metrics`).
    #[cfg_attr(
        not(test),
        expect(
            clippy::new_without_default,
            reason = "no Default outside tests: a default would make counting into a registry no one reads easy"
        )
    )]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("browserd");
        let sessions_live = Family::<StatusProject, Gauge>::default();
        registry.register(
            "sessions_live",
            "Sessions on this node that have not ended, by status and project",
            sessions_live.clone(),
        );
        let creates = Family::<Outcome, Counter>::default();
        registry.register(
            "session_creates",
            "Session creates answered by this node, by outcome (created, project_full, rate_limited, server_full, unavailable, draining, client_error, error)",
            creates.clone(),
        );
        let create_seconds =
            Family::<Kind, Histogram>::new_with_constructor(seconds_buckets as fn() -> Histogram);
        registry.register(
            "session_create_seconds",
            "Time to create a session until its browser accepts CDP, warm (from the pool) or cold",
            create_seconds.clone(),
        );
        let launch_seconds = seconds_buckets();
        registry.register(
            "browser_launch_seconds",
            "Time to launch a browser until its DevTools endpoint answers",
            launch_seconds.clone(),
        );
        let warm_pool_target = Gauge::default();
        registry.register(
            "warm_pool_target",
            "Warm browsers this node keeps ready (--warm-pool)",
            warm_pool_target.clone(),
        );
        let warm_pool_ready = Gauge::default();
        registry.register(
            "warm_pool_ready",
            "Warm browsers ready now",
            warm_pool_ready.clone(),
        );
        let clients_connected = Gauge::default();
        registry.register(
            "clients_connected",
            "CDP websocket clients connected to this node's sessions",
            clients_connected.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "Client connections open on the API port, websockets included (each counts until it closes)",
            http_connections.clone(),
        );
        let endings = Family::<Ended, Counter>::default();
        registry.register(
            "session_endings",
            "Sessions ended on this node, by final status and reason class",
            endings.clone(),
        );
        // The series alerts watch exist from the start, at 0: `rate()` and `increase()`
        // need an earlier sample, so a series born at 1 would hide its first event
        // (deploy/observability/browserd-rules.yml).
        for outcome in [
            "created",
            "project_full",
            "rate_limited",
            "server_full",
            "unavailable",
            "client_error",
            "error",
            "draining",
        ] {
            let _ = creates.get_or_create(&Outcome { outcome });
        }
        for reason in ["crash", "node_lost", "launch_failed"] {
            let _ = endings.get_or_create(&Ended {
                status: "ERROR",
                reason,
            });
        }
        let idle_disconnects = Counter::default();
        registry.register(
            "client_idle_disconnects",
            "Clients disconnected for sending no CDP command within --client-idle-timeout",
            idle_disconnects.clone(),
        );
        let relay_memory_budget = Gauge::default();
        registry.register(
            "relay_memory_budget_bytes",
            "Memory that websocket messages of 1 MiB and more may hold, all connections together (--relay-memory)",
            relay_memory_budget.clone(),
        );
        let relay_memory_held = Gauge::default();
        registry.register(
            "relay_memory_held_bytes",
            "Memory held now by connections that relayed large messages (each keeps its share until it closes)",
            relay_memory_held.clone(),
        );
        let relay_memory_waiting = Gauge::default();
        registry.register(
            "relay_memory_waiting",
            "Connections whose large message waits for relay memory now",
            relay_memory_waiting.clone(),
        );
        let relay_memory_refusals = Counter::default();
        registry.register(
            "relay_memory_refusals",
            "Connections closed because a large message waited too long for relay memory",
            relay_memory_refusals.clone(),
        );
        let memory_available_bytes = Gauge::default();
        registry.register(
            "memory_available_bytes",
            "The machine's available memory (MemAvailable)",
            memory_available_bytes.clone(),
        );
        let memory_floor_bytes = Gauge::default();
        registry.register(
            "memory_floor_bytes",
            "Below this much available memory no browser is started (--min-free-memory-mib)",
            memory_floor_bytes.clone(),
        );
        let store_seconds = Family::<Operation, Histogram>::new_with_constructor(
            seconds_buckets as fn() -> Histogram,
        );
        registry.register(
            "store_operation_seconds",
            "Time of the store operations on a session's path (insert, mark_running, finish)",
            store_seconds.clone(),
        );
        let egress_refusals = Family::<Rule, Counter>::default();
        registry.register(
            "egress_refusals",
            "Connections of sandboxed browsers' pages refused at the egress, by rule (this_machine, own_port, private, link_local, cgnat, reserved, …, egress_deny, allowed_domains, block_ads, navigation_policy)",
            egress_refusals.clone(),
        );
        // Autoscaling signals: how full a node is (a utilisation target), and whether it
        // is leaving (a draining node's free slots count for nothing).
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 while this node drains (no new sessions; live ones go on), else 0",
            draining.clone(),
        );
        let session_slots = Gauge::default();
        registry.register(
            "session_slots",
            "Sessions this node may run at once (--max-sessions)",
            session_slots.clone(),
        );
        let session_slots_free = Gauge::default();
        registry.register(
            "session_slots_free",
            "Sessions this node could still take now (0 while draining); warm browsers count as free",
            session_slots_free.clone(),
        );
        let cdp_messages = Family::<Direction, Counter>::default();
        registry.register(
            "cdp_messages",
            "CDP messages relayed, by direction (client_to_browser, browser_to_client)",
            cdp_messages.clone(),
        );
        let cdp_bytes = Family::<Direction, Counter>::default();
        registry.register(
            "cdp_bytes",
            "Bytes of CDP messages relayed, by direction",
            cdp_bytes.clone(),
        );
        let build = Family::<Build, Gauge>::default();
        build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("BROWSERD_COMMIT"),
            })
            .set(1);
        registry.register("build_info", "browserd's version", build);
        let flow = |direction| Flow {
            messages: cdp_messages.get_or_create(&Direction { direction }).clone(),
            bytes: cdp_bytes.get_or_create(&Direction { direction }).clone(),
        };
        let cdp = CdpFlows {
            commands: flow("client_to_browser"),
            replies: flow("browser_to_client"),
        };
        Self {
            registry,
            sessions_live,
            creates,
            create_seconds,
            launch_seconds,
            warm_pool_target,
            warm_pool_ready,
            clients_connected,
            http_connections,
            endings,
            idle_disconnects,
            relay_memory_budget,
            relay_memory_held,
            relay_memory_waiting,
            relay_memory_refusals,
            memory_available_bytes,
            memory_floor_bytes,
            store_seconds,
            egress_refusals,
            draining,
            session_slots,
            session_slots_free,
            cdp,
        }
    }

    /// The relay's counters (cheap clones of the same atomics).
    pub fn cdp(&self) -> CdpFlows {
        self.cdp.clone()
    }

    /// Every metric in the Prometheus text format (0.0.4), which every Prometheus and
    /// `promtool check metrics` read.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        classic_text(&out)
    }

    /// Counts one connection refused at the egress by `rule`.
    pub fn egress_refused(&self, rule: &'static str) {
        self.egress_refusals.get_or_create(&Rule { rule }).inc();
    }

    /// Times `op` into [`Self::store_seconds`].
    pub async fn time_store<T>(&self, op: &'static str, f: impl Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = f.await;
        self.store_seconds
            .get_or_create(&Operation { op })
            .observe(started.elapsed().as_secs_f64());
        out
    }
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has samples `x_total`;
/// the classic text format names the family `x_total` in its HELP and TYPE lines too, and
/// has no `# EOF`.
fn classic_text(open_metrics: &str) -> String {
    let counters: Vec<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The class of a session's end reason, a bounded label value.
pub fn reason_class(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    [
        ("released", "release"),
        ("timed out", "timeout"),
        ("last client disconnected", "disconnect"),
        ("browser.close", "browser_close"),
        ("node", "node_lost"),
        ("shutting down", "shutdown"),
        ("restarted", "restart"),
        ("exited", "crash"),
        ("crash", "crash"),
        ("failed to start", "launch_failed"),
    ]
    .into_iter()
    .find(|(needle, _)| r.contains(needle))
    .map_or("other", |(_, class)| class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_in_the_classic_format() {
        let open = "# HELP x_created Things.\n# TYPE x_created counter\nx_created_total 3\n\
                    # HELP y A gauge.\n# TYPE y gauge\ny 1\n# EOF\n";
        assert_eq!(
            classic_text(open),
            "# HELP x_created_total Things.\n# TYPE x_created_total counter\nx_created_total 3\n\
             # HELP y A gauge.\n# TYPE y gauge\ny 1\n"
        );
    }

    #[test]
    fn end_reasons_fall_into_few_classes() {
        assert_eq!(
            reason_class("session released (REQUEST_RELEASE)"),
            "release"
        );
        assert_eq!(
            reason_class("session timed out: it reached its timeout of 60s"),
            "timeout"
        );
        assert_eq!(
            reason_class("session ended: its last client disconnected and keepAlive is off"),
            "disconnect"
        );
        assert_eq!(reason_class("something new"), "other");
    }
}
