//! Sends each [`Record`] from the daemon to the exporters that want it: every record to the
//! audit log, findings at or above the alert threshold to Alertmanager and the generic webhook,
//! revocations to the revocation webhook. Every hand-over is a non-blocking push.

use std::sync::Arc;

use prometheus::IntCounter;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::queue::Outbox;
use crate::{
    daemon::{
        outputs::{Record, Revocation},
        respond::Report,
        schema::{Body, Stamper},
    },
    engine::Severity,
};

pub struct Routes {
    pub stamper: Arc<Stamper>,
    pub audit: Option<Outbox<String>>,
    pub alertmanager: Option<Outbox<Arc<Report>>>,
    pub webhook: Option<Outbox<String>>,
    pub revoke: Option<Outbox<Arc<Revocation>>>,
    /// Findings below this severity are audited but not alerted on.
    pub min_severity: Severity,
    /// Revocations with no revocation webhook configured.
    pub revoke_unconfigured: IntCounter,
}

impl Routes {
    fn route(&self, record: Record) {
        match record {
            Record::Finding(report) => {
                let alert = report.finding.severity >= self.min_severity;
                let webhook = self.webhook.as_ref().filter(|_| alert);
                if self.audit.is_some() || webhook.is_some() {
                    let (time, body) = Body::finding(&report);
                    let line = self.stamper.line(time, &body);
                    if let Some(webhook) = webhook {
                        webhook.push(line.clone());
                    }
                    if let Some(audit) = &self.audit {
                        audit.push(line);
                    }
                }
                if let Some(alertmanager) = self.alertmanager.as_ref().filter(|_| alert) {
                    alertmanager.push(report);
                }
            }
            Record::Task { change, at_unix, task } => {
                if let Some(audit) = &self.audit {
                    let (time, body) = Body::task(change, at_unix, &task);
                    audit.push(self.stamper.line(time, &body));
                }
            }
            Record::Revoke(revocation) => match &self.revoke {
                Some(revoke) => revoke.push(revocation),
                None => {
                    warn!(secret = %revocation.secret_name, "a revocation was asked for but no [revoke] url is configured");
                    self.revoke_unconfigured.inc();
                }
            },
        }
    }
}

/// Routes records until the daemon's end of the channel is gone, or until `stop` fires; then
/// routes what is still queued and returns.
pub async fn run(routes: Routes, mut records: mpsc::Receiver<Record>, mut stop: watch::Receiver<()>) {
    loop {
        tokio::select! {
            record = records.recv() => match record {
                Some(record) => routes.route(record),
                None => return,
            },
            _ = stop.changed() => break,
        }
    }
    while let Ok(record) = records.try_recv() {
        routes.route(record);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::{daemon::metrics::Metrics, daemon::schema::tests::report};

    #[tokio::test]
    async fn findings_below_the_threshold_are_audited_only() {
        let metrics = Metrics::default();
        let dropped = || metrics.sink_dropped.with_label_values(&["test"]);
        let (audit, mut audited) = Outbox::new(8, dropped());
        let (alertmanager, mut alerted) = Outbox::new(8, dropped());
        let (webhook, mut hooked) = Outbox::new(8, dropped());
        let routes = Routes {
            stamper: Arc::new(Stamper::new("node-1".into())),
            audit: Some(audit),
            alertmanager: Some(alertmanager),
            webhook: Some(webhook),
            revoke: None,
            min_severity: Severity::High,
            revoke_unconfigured: dropped(),
        };
        let mut info = report();
        info.finding.severity = Severity::Info;
        let (sender, records) = mpsc::channel(8);
        sender.send(Record::Finding(Arc::new(report()))).await.unwrap();
        sender.send(Record::Finding(Arc::new(info))).await.unwrap();
        drop(sender);
        let (_stop, stopped) = watch::channel(());
        run(routes, records, stopped).await;

        let first: Value = serde_json::from_str(&audited.try_recv().unwrap()).unwrap();
        let second: Value = serde_json::from_str(&audited.try_recv().unwrap()).unwrap();
        assert_eq!((first["severity"].as_str(), second["severity"].as_str()), (Some("critical"), Some("info")));
        let hooked_first: Value = serde_json::from_str(&hooked.try_recv().unwrap()).unwrap();
        assert_eq!(hooked_first, first, "the webhook gets the audit record");
        assert!(hooked.try_recv().is_err());
        assert_eq!(alerted.try_recv().unwrap().finding.severity, Severity::Critical);
        assert!(alerted.try_recv().is_err());
    }
}
