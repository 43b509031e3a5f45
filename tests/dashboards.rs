//! `dashboards/` against the daemon: the alert rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`), every query of the Grafana dashboard is valid PromQL, and
//! every metric the rules or the dashboard name is one the daemon exports (and the dashboard
//! shows every one it exports). `promtool` comes with Debian's `prometheus` (`cargo xtask setup`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use monitor::daemon::metrics::Metrics;
use serde_json::Value;

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// Runs `promtool ARGS` in `dir` and fails with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("cannot run promtool ({error}); run `cargo xtask setup`"));
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every `credwatch_*` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("credwatch_")
        .map(|(start, _)| {
            let rest = &text[start..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            rest[..end].to_owned()
        })
        .collect()
}

/// Names in `text` that the daemon does not export.
fn unknown_metrics(text: &str) -> BTreeSet<String> {
    let exported: BTreeSet<String> = Metrics::default().names().into_iter().collect();
    metric_names(text).into_iter().filter(|name| !exported.contains(name)).collect()
}

/// The dashboard's queries: each panel target's `expr` and each templating query.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(dashboards().join("credwatch.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", panel["title"]));
        assert!(!targets.is_empty(), "panel {} has no queries", panel["title"]);
        for target in targets {
            queries.push(
                target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a target of {} has no expr", panel["title"]))
                    .to_owned(),
            );
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(definition) = variable["definition"].as_str() {
            queries.push(definition.to_owned());
        }
    }
    queries
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    promtool(&dashboards(), &["check", "rules", "alerts.rules.yml"]);
    promtool(&dashboards(), &["test", "rules", "alerts.test.yml"]);
    let tests = std::fs::read_to_string(dashboards().join("alerts.test.yml")).unwrap();
    for alert in ["CredwatchCredentialReuse", "CredwatchEventsLost"] {
        assert!(tests.contains(&format!("alertname: {alert}")), "{alert} has no unit test");
    }
}

#[test]
fn the_alert_rules_name_only_exported_metrics() {
    let rules = std::fs::read_to_string(dashboards().join("alerts.rules.yml")).unwrap();
    assert!(!metric_names(&rules).is_empty());
    assert_eq!(unknown_metrics(&rules), BTreeSet::new(), "metrics in alerts.rules.yml that the daemon does not export");
}

#[test]
fn every_dashboard_query_is_valid_promql_on_exported_metrics() {
    let queries = dashboard_queries();
    let all = queries.join("\n");
    assert_eq!(unknown_metrics(&all), BTreeSet::new(), "metrics on the dashboard that the daemon does not export");
    let shown = metric_names(&all);
    let missing: Vec<_> = Metrics::default().names().into_iter().filter(|name| !shown.contains(name)).collect();
    assert!(missing.is_empty(), "exported but not on the dashboard: {missing:?}");

    // promtool parses each query as a recording rule, with Grafana's variables filled in.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, query) in queries.iter().filter(|query| !query.starts_with("label_values(")).enumerate() {
        let promql = query
            .replace("$__rate_interval", "1m")
            .replace("$__range", "6h")
            .replace("$job", "credwatch")
            .replace("$instance", ".*");
        assert!(!promql.contains('$'), "an unknown variable in {query}");
        rules += &format!(
            "      - record: dashboard_query_{index}\n        expr: {}\n",
            serde_json::to_string(&promql).unwrap()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("queries.yml"), rules).unwrap();
    promtool(dir.path(), &["check", "rules", "queries.yml"]);
}

#[test]
fn the_metric_check_catches_a_misspelled_metric() {
    let unknown = unknown_metrics("sum(rate(credwatch_finding_total[5m])) + credwatch_event_latency_seconds_bucket");
    assert_eq!(unknown, BTreeSet::from(["credwatch_finding_total".to_owned()]));
}
