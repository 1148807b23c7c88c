//! The files of `deploy/observability/` as Prometheus and Grafana load them: the alerting
//! rules pass `promtool check rules`, their unit tests pass `promtool test rules` with every
//! alert both fired and held back, every dashboard query is PromQL promtool accepts, and
//! every metric and label the rules, their tests and the dashboard name is one browserd
//! exports (a misspelled name would make an alert that never fires or a panel that stays
//! empty, and neither promtool nor Grafana would say so).

use browserd::metrics::{Ended, Kind, Metrics, Operation, Outcome, StatusProject};
use regex_lite::Regex;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RULES: &str = "browserd-rules.yml";
const RULE_TESTS: &str = "browserd-rules.test.yml";
const DASHBOARD: &str = "grafana-dashboard.json";

/// Labels Prometheus adds to every series it scrapes (the scrape job and target).
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn observability(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/observability")
        .join(file)
}

fn read(file: &str) -> String {
    let path = observability(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn promtool(args: &[&str], file: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)")
}

fn assert_success(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The names of the alerts of the rules file, in order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The `expr:` values of a rules file: the rest of the line, or the block indented under
/// `expr: |`.
fn rule_exprs(rules: &str) -> Vec<String> {
    fn indent(line: &str) -> usize {
        line.len() - line.trim_start().len()
    }
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let mut block = String::new();
            while let Some(next) =
                lines.next_if(|l| l.trim().is_empty() || indent(l) > indent(line))
            {
                block.push_str(next.trim());
                block.push('\n');
            }
            exprs.push(block);
        } else {
            exprs.push(rest.trim_matches(['\'', '"']).to_owned());
        }
    }
    exprs
}

/// Every sample name browserd's registry exposes, with the label names its samples carry:
/// `Metrics::encode()`, the text `GET /metrics` serves. A family with labels has no line at
/// all until its first series (prometheus-client skips empty families), which on a fresh
/// server is most of them, so each is given one first, through the label types the server
/// itself uses.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let m = &Metrics::new();
    m.sessions_live
        .get_or_create(&StatusProject {
            status: "RUNNING".to_owned(),
            project: "a-project".to_owned(),
        })
        .set(1);
    m.creates
        .get_or_create(&Outcome {
            outcome: "server_full",
        })
        .inc();
    m.create_seconds
        .get_or_create(&Kind { kind: "cold" })
        .observe(1.5);
    m.endings
        .get_or_create(&Ended {
            status: "ERROR",
            reason: browserd::metrics::reason_class("the browser crashed"),
        })
        .inc();
    m.store_seconds
        .get_or_create(&Operation {
            op: "insert_session",
        })
        .observe(0.01);
    m.egress_refused("private");
    let label = Regex::new(r#"([A-Za-z_][A-Za-z0-9_]*)=""#).unwrap();
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in m.encode().lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = names.entry(line[..end].to_owned()).or_default();
        if let Some(set) = line[end..].strip_prefix('{') {
            let set = &set[..set.find('}').unwrap_or(set.len())];
            labels.extend(label.captures_iter(set).map(|c| c[1].to_owned()));
        }
        labels.extend(TARGET_LABELS.map(str::to_owned));
    }
    names
}

/// Blanks the contents of double-quoted strings (label values, regexes), so that what
/// they hold is not read as names or matchers.
fn without_strings(text: &str) -> String {
    Regex::new(r#""(?:[^"\\]|\\.)*""#)
        .unwrap()
        .replace_all(text, "\"\"")
        .into_owned()
}

/// What `text` names that browserd does not export: every identifier that starts with
/// `browserd_` must be a sample name of the exposition (a histogram's `_bucket`, `_sum` or
/// `_count`, a counter's `_total`); every label matched in a selector of one must be a label
/// of its samples (or a target label).
fn unknown_in_text(text: &str, exported: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let identifier = Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").unwrap();
    let selector = Regex::new(r"(browserd_[A-Za-z0-9_:]*)\s*\{([^}]*)\}").unwrap();
    let matcher = Regex::new(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)").unwrap();
    let mut unknown: Vec<String> = identifier
        .find_iter(text)
        .map(|m| m.as_str())
        .filter(|name| name.starts_with("browserd_") && !exported.contains_key(*name))
        .map(|name| format!("metric {name}"))
        .collect();
    let text = without_strings(text);
    for c in selector.captures_iter(&text) {
        let Some(labels) = exported.get(&c[1]) else {
            continue;
        };
        for m in matcher.captures_iter(&c[2]) {
            if !labels.contains(&m[1]) {
                unknown.push(format!("label {} of {}", &m[1], &c[1]));
            }
        }
    }
    unknown
}

/// What a PromQL expression names that browserd does not export: [`unknown_in_text`], and
/// the labels of its `by`, `without`, `on`, `ignoring` and `group_*` clauses, which must be
/// labels of some browserd sample (or target labels).
fn unknown_in_promql(expr: &str, exported: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut unknown = unknown_in_text(expr, exported);
    let any_label: BTreeSet<&str> = exported.values().flatten().map(String::as_str).collect();
    let clause =
        Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)").unwrap();
    for c in clause.captures_iter(&without_strings(expr)) {
        for label in c[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
            if !any_label.contains(label) {
                unknown.push(format!("label {label}"));
            }
        }
    }
    unknown
}

/// Every string of a JSON document.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(fields) => fields.values().for_each(|f| strings(f, out)),
        _ => {}
    }
}

/// The panels of a dashboard, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The PromQL of every panel's targets, with the panel's title.
fn panel_exprs(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect()
}

/// The queries of the dashboard's query variables (`label_values(…)`).
fn variable_queries(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .filter_map(|v| {
            let q = &v["query"];
            q.as_str()
                .or_else(|| q["query"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// The rules file is what Prometheus loads: promtool parses every expression and annotation
/// template of every alert and finds no duplicate.
#[test]
fn the_rules_pass_promtool_check() {
    let alerts = alert_names(&read(RULES));
    assert!(
        alerts.len() >= 9,
        "the alerts of docs/operations.md: {alerts:?}"
    );
    // The autoscaling signals are recording rules beside the alerts.
    let records = read(RULES)
        .lines()
        .filter(|l| l.trim_start().starts_with("- record:"))
        .count();
    assert!(records >= 4, "the autoscaling recording rules");
    let out = assert_success(
        &promtool(&["check", "rules"], &observability(RULES)),
        "promtool check rules",
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts.len() + records)),
        "{out}"
    );
}

/// Each alert fires on the series that must fire it and stays silent on near misses
/// (promtool compares the alerts at each time, labels and annotations, exactly), and the
/// unit tests cover every alert of the rules file both ways.
#[test]
fn the_rules_pass_their_unit_tests() {
    let tests = read(RULE_TESTS);
    // Which alerts are expected to fire, and to be silent, at some time.
    let (mut fired, mut silent) = (BTreeSet::new(), BTreeSet::new());
    let mut alert = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            alert = Some(name.trim().to_owned());
        } else if let (Some(expected), Some(name)) = (line.strip_prefix("exp_alerts:"), &alert) {
            if expected.trim() == "[]" {
                silent.insert(name.clone());
            } else {
                fired.insert(name.clone());
            }
        }
    }
    for name in alert_names(&read(RULES)) {
        assert!(fired.contains(&name), "no test expects {name} to fire");
        assert!(
            silent.contains(&name),
            "no test expects {name} to be silent"
        );
    }
    assert_success(
        &promtool(&["test", "rules"], &observability(RULE_TESTS)),
        "promtool test rules",
    );
}

/// Every metric the rules, their unit tests and the dashboard name is one browserd exports,
/// under its exposition name, and every label they match or group by is one its samples
/// carry: checked against browserd's own registry, not a list kept by hand.
#[test]
fn the_rules_and_dashboard_name_only_metrics_browserd_exports() {
    let exported = exported();
    assert!(
        exported.keys().all(|name| name.starts_with("browserd_")),
        "every metric has the prefix the check looks for: {exported:?}"
    );
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    let identifier = Regex::new(r"browserd_[A-Za-z0-9_:]*").unwrap();

    let rules = read(RULES);
    let exprs = rule_exprs(&rules);
    let records = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- record:"))
        .count();
    assert_eq!(
        exprs.len(),
        alert_names(&rules).len() + records,
        "one expression per alert and recording rule: {exprs:?}"
    );
    for expr in &exprs {
        unknown.extend(
            unknown_in_promql(expr, &exported)
                .into_iter()
                .map(|u| format!("{RULES}: {u} in {expr}")),
        );
    }
    let tests = read(RULE_TESTS);
    for (file, text) in [(RULES, &rules), (RULE_TESTS, &tests)] {
        used.extend(identifier.find_iter(text).map(|m| m.as_str().to_owned()));
        unknown.extend(
            unknown_in_text(text, &exported)
                .into_iter()
                .map(|u| format!("{file}: {u}")),
        );
    }

    let dashboard = dashboard();
    let panel_exprs = panel_exprs(&dashboard);
    let queries = variable_queries(&dashboard);
    assert!(!panel_exprs.is_empty() && !queries.is_empty());
    for (title, expr) in &panel_exprs {
        unknown.extend(
            unknown_in_promql(expr, &exported)
                .into_iter()
                .map(|u| format!("{DASHBOARD}, panel {title:?}: {u} in {expr}")),
        );
    }
    for query in &queries {
        unknown.extend(
            unknown_in_promql(query, &exported)
                .into_iter()
                .map(|u| format!("{DASHBOARD}, variable: {u} in {query}")),
        );
    }
    let mut texts = Vec::new();
    strings(&dashboard, &mut texts);
    for text in &texts {
        used.extend(identifier.find_iter(text).map(|m| m.as_str().to_owned()));
        unknown.extend(
            unknown_in_text(text, &exported)
                .into_iter()
                .map(|u| format!("{DASHBOARD}: {u}")),
        );
    }

    assert!(unknown.is_empty(), "not exported by browserd: {unknown:#?}");
    // The check read the files: they name most of what browserd exports.
    assert!(used.len() >= 15, "{used:?}");
}

/// The check above can fail: a misspelled metric, a histogram's family name where a
/// sample name is needed, a label the metric does not have, and a misspelled grouping label
/// are each reported, and a correct expression is not.
#[test]
fn the_name_check_catches_what_browserd_does_not_export() {
    let exported = exported();
    for (expr, want) in [
        (
            r#"rate(browserd_session_create_total{outcome="error"}[5m]) > 0"#,
            "metric browserd_session_create_total",
        ),
        (
            "histogram_quantile(0.95, rate(browserd_session_create_seconds[5m]))",
            "metric browserd_session_create_seconds",
        ),
        (
            r#"rate(browserd_session_endings_total{outcome="crash"}[15m])"#,
            "label outcome of browserd_session_endings_total",
        ),
        (
            "sum by (instnace) (browserd_warm_pool_ready)",
            "label instnace",
        ),
    ] {
        let unknown = unknown_in_promql(expr, &exported);
        assert_eq!(unknown, [want], "{expr}");
    }
    let good = r#"histogram_quantile(0.95, sum by (job, instance, op, le) (rate(browserd_store_operation_seconds_bucket{op=~"insert_session|mark_running"}[5m]))) > 0.1"#;
    assert_eq!(unknown_in_promql(good, &exported), Vec::<String>::new());
}

/// The dashboard is one Grafana imports or provisions: every panel but the rows queries
/// Prometheus through the `DS_PROMETHEUS` data source (an import input, and a variable when
/// provisioned), panel ids are unique, and every query, with Grafana's variables filled in,
/// is PromQL promtool accepts.
#[test]
fn every_dashboard_query_is_promql_promtool_accepts() {
    let dashboard = dashboard();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert!(
        variable_queries(&dashboard).len() == 2
            && dashboard["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "the data source, job and instance variables"
    );
    let mut ids = BTreeSet::new();
    for p in panels(&dashboard) {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(
            !targets.is_empty(),
            "panel {} queries something",
            p["title"]
        );
        for source in
            std::iter::once(&p["datasource"]).chain(targets.iter().map(|t| &t["datasource"]))
        {
            assert_eq!(source["uid"], "${DS_PROMETHEUS}", "panel {}", p["title"]);
        }
    }

    // Each query as a recording rule: promtool parses it as Prometheus would.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let exprs = panel_exprs(&dashboard);
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let filled = [
            ("$__rate_interval", "5m"),
            ("$__range", "1h"),
            ("$job", ".*"),
            ("$instance", ".*"),
        ]
        .into_iter()
        .fold(expr.clone(), |e, (variable, value)| {
            e.replace(variable, value)
        });
        assert!(!filled.contains('$'), "a variable left in {expr}");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            Value::String(filled)
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = assert_success(
        &promtool(&["check", "rules"], &file),
        "the dashboard's queries",
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{out}"
    );
}
