//! Findings as Alertmanager alerts: `POST /api/v2/alerts` with a JSON array of alerts, labelled
//! `alertname`, `rule`, `severity`, `host` and `task` (absent for a process in no task), and
//! annotated with the finding's record (`crate::daemon::schema`), flattened. No `endsAt`: Alertmanager resolves each alert after
//! its `resolve_timeout`.

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;
use serde_json::Value;

use super::sink::Payload;

use crate::{
    daemon::{
        respond::Report,
        schema::{self, Body},
        wallclock,
    },
    engine::Finding,
};

/// The `alertname` of every finding; the `rule` label tells them apart.
pub const ALERT_NAME: &str = "CredwatchFinding";
/// The API route under the configured base URL.
pub const ROUTE: &str = "/api/v2/alerts";

pub struct Alertmanager {
    host: String,
}

impl Alertmanager {
    pub fn new(host: String) -> Self {
        Self { host }
    }
}

/// One alert of the API's `postableAlerts`.
#[derive(Serialize)]
struct PostableAlert<'a> {
    labels: BTreeMap<&'static str, &'a str>,
    annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
}

impl Payload for Alertmanager {
    type Item = Arc<Report>;
    const NAME: &'static str = "alertmanager";
    const MAX_BATCH: usize = 64;

    fn body(&self, batch: &[Arc<Report>]) -> Vec<u8> {
        let alerts: Vec<_> = batch.iter().map(|report| alert(report, &self.host)).collect();
        serde_json::to_vec(&alerts).expect("alerts always serialize")
    }
}

fn alert<'a>(report: &'a Report, host: &'a str) -> PostableAlert<'a> {
    let Finding { rule, severity, task, detail, .. } = &report.finding;
    let mut labels = BTreeMap::from([
        ("alertname", ALERT_NAME),
        ("rule", rule.name()),
        ("severity", severity.name()),
        ("host", host),
    ]);
    if let Some(task) = task {
        labels.insert("task", &task.0);
    }
    let mut annotations = BTreeMap::from([
        ("summary".to_owned(), format!("credwatch: {rule} ({severity}) on {host}")),
        ("description".to_owned(), detail.clone()),
        ("version".to_owned(), schema::VERSION.to_string()),
    ]);
    let (time, body) = Body::finding(report);
    let record = serde_json::to_value(&body).expect("finding records always serialize");
    flatten("", &record, &mut annotations);
    PostableAlert { labels, annotations, starts_at: wallclock::rfc3339(time) }
}

/// The finding's record as annotations: each value under its path with `_` between the names
/// (`process.pid` is `process_pid`), lists as JSON text, nulls left out; the fields that are
/// labels (and the record's `type`) are not repeated.
fn flatten(path: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    const AS_LABELS: [&str; 4] = ["type", "rule", "severity", "task"];
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                if path.is_empty() && AS_LABELS.contains(&name.as_str()) {
                    continue;
                }
                let nested = if path.is_empty() { name.clone() } else { format!("{path}_{name}") };
                flatten(&nested, field, out);
            }
        }
        Value::Null => {}
        Value::String(text) => {
            out.insert(path.to_owned(), text.clone());
        }
        other => {
            out.insert(path.to_owned(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::daemon::schema::tests::report;

    #[test]
    fn a_finding_becomes_a_labelled_alert() {
        let sink = Alertmanager::new("node-1".into());
        let mut untasked = report();
        untasked.finding.task = None;
        let body: Value = serde_json::from_slice(&sink.body(&[Arc::new(report()), Arc::new(untasked)])).unwrap();
        let alerts = body.as_array().unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(
            alerts[0]["labels"],
            json!({ "alertname": "CredwatchFinding", "rule": "cross_task_reuse", "severity": "critical", "host": "node-1", "task": "agent-b" })
        );
        let annotations = &alerts[0]["annotations"];
        assert_eq!(annotations["secret_name"], "/home/agent/.aws/credentials");
        assert_eq!(annotations["secret_fingerprint_prefix"], "0badc0de");
        assert_eq!(annotations["secret_id"], "3");
        assert_eq!(annotations["owner_task"], "agent-a");
        assert_eq!(annotations["process_pid"], "4242");
        assert_eq!(annotations["process_start_time"], "99");
        assert_eq!(annotations["version"], schema::VERSION.to_string());
        assert!(annotations["id"].as_str().unwrap().ends_with("-4242-cross_task_reuse"), "{annotations:#}");
        let ancestry: Value = serde_json::from_str(annotations["ancestry"].as_str().unwrap()).unwrap();
        assert_eq!(ancestry[0]["filename"], "/usr/bin/cat");
        let actions: Value = serde_json::from_str(annotations["actions"].as_str().unwrap()).unwrap();
        assert_eq!(actions, json!([{ "action": "kill_process", "result": "killed_in_kernel", "detail": null }]));
        for absent in ["rule", "severity", "task", "type", "destination", "target", "sprawl"] {
            assert!(annotations.get(absent).is_none(), "{absent}: a label or null, not an annotation: {annotations:#}");
        }
        assert!(alerts[0]["startsAt"].as_str().unwrap().ends_with('Z'));
        assert!(alerts[1]["labels"].get("task").is_none(), "no empty task label");
    }
}
