//! Findings as Alertmanager alerts: `POST /api/v2/alerts` with a JSON array of alerts, labelled
//! `alertname`, `rule`, `severity`, `host` and `task` (absent for a process in no task), and
//! annotated with what a responder needs. No `endsAt`: Alertmanager resolves each alert after
//! its `resolve_timeout`.

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

use super::{sink::Payload, wallclock};
use crate::{daemon::respond::Report, engine::Finding};

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
    annotations: BTreeMap<&'static str, String>,
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
    let Report { finding, actions } = report;
    let Finding { rule, severity, at_ns, process, ancestry, task, owner_task, secret, destination, detail, .. } = finding;
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
        ("summary", format!("credwatch: {rule} ({severity}) on {host}")),
        ("description", detail.clone()),
        ("secret", secret.name.clone()),
        ("process", format!("pid {} (start time {})", process.tgid, process.start_time)),
    ]);
    let optional = [
        ("fingerprint_prefix", secret.fingerprint_prefix.clone()),
        ("owner_task", owner_task.as_ref().map(|task| task.0.clone())),
        ("destination", destination.map(|destination| destination.to_string())),
        // What an analyst asks first: which program, started by which.
        ("executable", ancestry.first().and_then(|ancestor| ancestor.filename.clone())),
        ("parent_executable", ancestry.get(1).and_then(|ancestor| ancestor.filename.clone())),
    ];
    annotations.extend(optional.into_iter().filter_map(|(key, value)| Some((key, value?))));
    if !actions.is_empty() {
        let taken: Vec<_> = actions.iter().map(|taken| format!("{}: {}", taken.action.name(), taken.result)).collect();
        annotations.insert("actions", taken.join(", "));
    }
    PostableAlert { labels, annotations, starts_at: wallclock::rfc3339(wallclock::from_boottime(*at_ns)) }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::export::schema::tests::report;

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
        assert_eq!(alerts[0]["annotations"]["secret"], "/home/agent/.aws/credentials");
        assert_eq!(alerts[0]["annotations"]["fingerprint_prefix"], "0badc0de");
        assert_eq!(alerts[0]["annotations"]["owner_task"], "agent-a");
        assert_eq!(alerts[0]["annotations"]["executable"], "/usr/bin/cat");
        assert_eq!(alerts[0]["annotations"]["actions"], "kill_process: killed_in_kernel");
        assert!(alerts[0]["startsAt"].as_str().unwrap().ends_with('Z'));
        assert!(alerts[1]["labels"].get("task").is_none(), "no empty task label");
    }
}
