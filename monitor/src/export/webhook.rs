//! The two JSON webhooks, one request per item: the generic alert webhook, which receives each
//! finding's audit record (the schema of the audit log), and the revocation webhook, which asks
//! for a secret to be revoked and whose outcome goes to the audit log as an `action` record.

use std::{sync::Arc, time::SystemTime};

use serde::Serialize;

use super::{
    queue::Outbox,
    sink::{Outcome, Payload},
    Revocation,
};
use crate::daemon::schema::{self, Body, Stamper};

/// The generic webhook: a finding's audit record per POST.
pub struct FindingWebhook;

impl Payload for FindingWebhook {
    /// The record, already serialized for the audit log.
    type Item = String;
    const NAME: &'static str = "webhook";
    const MAX_BATCH: usize = 1;

    fn body(&self, batch: &[String]) -> Vec<u8> {
        batch.concat().into_bytes()
    }
}

/// The revocation webhook.
pub struct RevokeWebhook {
    stamper: Arc<Stamper>,
    audit: Option<Outbox<String>>,
}

impl RevokeWebhook {
    pub fn new(stamper: Arc<Stamper>, audit: Option<Outbox<String>>) -> Self {
        Self { stamper, audit }
    }
}

/// What the revocation endpoint receives. Never a secret's value.
#[derive(Serialize)]
struct RevocationRequest<'a> {
    version: u32,
    host: &'a str,
    task: Option<&'a str>,
    secret_id: Option<u32>,
    secret_name: &'a str,
    fingerprint_prefix: Option<&'a str>,
    rule: &'a str,
    at_unix: u64,
}

impl Payload for RevokeWebhook {
    type Item = Arc<Revocation>;
    const NAME: &'static str = "revoke";
    const MAX_BATCH: usize = 1;

    fn body(&self, batch: &[Arc<Revocation>]) -> Vec<u8> {
        let Revocation { task, secret_id, secret_name, fingerprint_prefix, rule, at_unix } = &*batch[0];
        let request = RevocationRequest {
            version: schema::VERSION,
            host: self.stamper.host(),
            task: task.as_deref(),
            secret_id: *secret_id,
            secret_name,
            fingerprint_prefix: fingerprint_prefix.as_deref(),
            rule,
            at_unix: *at_unix,
        };
        serde_json::to_vec(&request).expect("revocations always serialize")
    }

    fn settled(&self, batch: &[Arc<Revocation>], outcome: &Outcome) {
        let Some(audit) = &self.audit else { return };
        for revocation in batch {
            let body = match outcome {
                Outcome::Delivered { attempts } => Body::revocation(revocation, true, *attempts, None),
                Outcome::Failed { attempts, error } => Body::revocation(revocation, false, *attempts, Some(error)),
            };
            audit.push(self.stamper.line(SystemTime::now(), &body));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::daemon::metrics::Metrics;

    #[test]
    fn a_revocation_names_the_secret_and_its_outcome_is_audited() {
        let metrics = Metrics::default();
        let (audit, mut lines) = Outbox::new(4, metrics.sink_dropped.with_label_values(&["audit"]));
        let sink = RevokeWebhook::new(Arc::new(Stamper::new("node-1".into())), Some(audit));
        let revocation = Arc::new(Revocation {
            task: Some("agent-b".into()),
            secret_id: Some(3),
            secret_name: "/root/.vault-token".into(),
            fingerprint_prefix: Some("0badc0de".into()),
            rule: "cross_task_reuse",
            at_unix: 1_700_000_000,
        });
        let body: Value = serde_json::from_slice(&sink.body(&[Arc::clone(&revocation)])).unwrap();
        assert_eq!(
            body,
            json!({
                "version": schema::VERSION, "host": "node-1", "task": "agent-b", "secret_id": 3, "secret_name": "/root/.vault-token",
                "fingerprint_prefix": "0badc0de", "rule": "cross_task_reuse", "at_unix": 1_700_000_000u64
            })
        );
        sink.settled(&[revocation], &Outcome::Delivered { attempts: 2 });
        let line: Value = serde_json::from_str(&lines.try_recv().unwrap()).unwrap();
        assert_eq!(
            (line["type"].clone(), line["result"].clone(), line["attempts"].clone()),
            (json!("action"), json!("delivered"), json!(2))
        );
    }
}
