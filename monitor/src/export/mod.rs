//! What leaves the daemon for operations: metrics, the audit log, alert sinks and revocation
//! webhooks. The daemon only sends [`Record`]s down a bounded channel (`crate::daemon::outputs`)
//! and never waits.
//!
//! [`spawn`] starts the exporters on threads of their own: one runs a tokio runtime for the
//! `/metrics` endpoint, the routing of records and the HTTP sinks; another appends to the audit
//! log, so that its `fsync`s hold up nothing else. Each exporter has a bounded queue in
//! front of it that drops and counts instead of waiting.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::warn;

use crate::{
    daemon::{
        metrics::Metrics,
        outputs::{Record, Revocation},
        schema::Stamper,
    },
    engine::Severity,
};

mod alertmanager;
pub mod audit;
mod backoff;
mod dispatch;
pub mod http;
mod queue;
pub mod server;
mod sink;
mod webhook;

use self::{
    alertmanager::Alertmanager,
    audit::{AuditConfig, AuditError},
    dispatch::Routes,
    http::Endpoint,
    server::MetricsConfig,
    webhook::{FindingWebhook, RevokeWebhook},
};

/// The `sink` label of every exporter.
const SINKS: [&str; 4] = [
    audit::SINK,
    <Alertmanager as sink::Payload>::NAME,
    <FindingWebhook as sink::Payload>::NAME,
    <RevokeWebhook as sink::Payload>::NAME,
];

/// How long, at shutdown, the HTTP sinks may take to deliver what is still queued.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where exports go: the `host` key and the `[metrics]`, `[audit]`, `[alerts]` and `[revoke]`
/// sections of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// This machine's name in audit records, alerts and revocations.
    pub host: String,
    /// `None`: no `/metrics` endpoint.
    pub metrics: Option<MetricsConfig>,
    /// `None`: no audit log.
    pub audit: Option<AuditConfig>,
    pub alerts: AlertsConfig,
    /// `None`: the `revoke` action cannot be used.
    pub revoke: Option<RevokeConfig>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            host: hostname(),
            metrics: Some(MetricsConfig::default()),
            audit: Some(AuditConfig::default()),
            alerts: AlertsConfig::default(),
            revoke: None,
        }
    }
}

/// The `[alerts]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertsConfig {
    /// Alertmanager's base URL; alerts go to `<url>/api/v2/alerts`.
    pub alertmanager: Option<Endpoint>,
    /// Receives each alerted finding's audit record.
    pub webhook: Option<Endpoint>,
    /// Findings below this severity are audited but not alerted on.
    pub min_severity: Severity,
    /// Items each sink may hold while its endpoint is slow or down.
    pub queue: usize,
}

/// Items a sink holds by default.
pub const SINK_QUEUE: usize = 1024;

impl Default for AlertsConfig {
    fn default() -> Self {
        Self { alertmanager: None, webhook: None, min_severity: Severity::Medium, queue: SINK_QUEUE }
    }
}

/// The `[revoke]` section: where the `revoke` action POSTs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeConfig {
    pub url: Endpoint,
    pub queue: usize,
}

/// The kernel's host name; `localhost` if it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot listen for metrics scrapes on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot start the exporter thread")]
    Thread(#[source] io::Error),
}

/// The running exporters. Dropping the handle stops them: records already sent are routed, the
/// HTTP sinks get [`SHUTDOWN_GRACE`] to deliver what is queued, and the audit log is synced.
pub struct Exporters {
    stop: watch::Sender<()>,
    exporter: Option<std::thread::JoinHandle<()>>,
    audit: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Exporters {
    fn drop(&mut self) {
        self.stop.send_replace(());
        // The exporter thread holds senders to the audit log: it ends first.
        for (name, thread) in [("exporter", self.exporter.take()), ("audit log", self.audit.take())] {
            if thread.is_some_and(|thread| thread.join().is_err()) {
                warn!("the {name} thread panicked");
            }
        }
    }
}

/// Binds the metrics endpoint, opens the audit log and starts the exporters, which take records
/// from `records` until the returned handle is dropped.
pub fn spawn(
    config: &ExportConfig,
    records: mpsc::Receiver<Record>,
    metrics: Arc<Metrics>,
) -> Result<Exporters, ExportError> {
    // The alert rules watch these for an increase: they exist at 0 from the start.
    for sink in SINKS {
        metrics.sink_dropped.with_label_values(&[sink]);
    }
    let listener = config
        .metrics
        .as_ref()
        .map(|metrics| server::bind(metrics).map_err(|source| ExportError::Bind { address: metrics.listen, source }))
        .transpose()?;
    let (audit, audit_thread) = match &config.audit {
        Some(audit) => {
            let (outbox, thread) = audit::start(audit, &metrics)?;
            (Some(outbox), Some(thread))
        }
        None => (None, None),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ExportError::Thread)?;
    let (stop, stopped) = watch::channel(());
    let config = config.clone();
    let exporter = std::thread::Builder::new()
        .name("credwatch-export".into())
        .spawn(move || runtime.block_on(run(config, records, metrics, listener, audit, stopped)))
        .map_err(ExportError::Thread)?;
    Ok(Exporters { stop, exporter: Some(exporter), audit: audit_thread })
}

async fn run(
    config: ExportConfig,
    records: mpsc::Receiver<Record>,
    metrics: Arc<Metrics>,
    listener: Option<std::net::TcpListener>,
    audit: Option<queue::Outbox<String>>,
    mut stop: watch::Receiver<()>,
) {
    let ExportConfig { host, metrics: _, audit: _, alerts, revoke } = config;
    let AlertsConfig { alertmanager, webhook, min_severity, queue } = alerts;
    let server = listener.map(|listener| tokio::spawn(server::serve(listener, Arc::clone(&metrics), stop.clone())));
    let stamper = Arc::new(Stamper::new(host.clone()));
    let mut workers = Vec::new();
    let routes = Routes {
        alertmanager: alertmanager.map(|url| {
            let sink =
                sink::start(Alertmanager::new(host), url.join(alertmanager::ROUTE), queue, &metrics, stop.clone());
            keep_worker(&mut workers, sink)
        }),
        webhook: webhook
            .map(|url| keep_worker(&mut workers, sink::start(FindingWebhook, url, queue, &metrics, stop.clone()))),
        revoke: revoke.map(|RevokeConfig { url, queue }| {
            let payload = RevokeWebhook::new(Arc::clone(&stamper), audit.clone());
            keep_worker(&mut workers, sink::start(payload, url, queue, &metrics, stop.clone()))
        }),
        revoke_unconfigured: metrics.sink_dropped.with_label_values(&[<RevokeWebhook as sink::Payload>::NAME]),
        stamper,
        audit,
        min_severity,
    };
    dispatch::run(routes, records, stop.clone()).await;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    for worker in workers {
        if tokio::time::timeout_at(deadline, worker).await.is_err() {
            warn!("an alert sink had not delivered everything when the daemon stopped");
        }
    }
    // The records channel may close before the daemon stops; scrapes go on until it does.
    let _ = stop.changed().await;
    if let Some(server) = server {
        let _ = server.await;
    }
}

fn keep_worker<T>(
    workers: &mut Vec<JoinHandle<()>>,
    (outbox, worker): (queue::Outbox<T>, JoinHandle<()>),
) -> queue::Outbox<T> {
    workers.push(worker);
    outbox
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sinks_drop_counter_exists_at_zero_once_the_exporters_run() {
        let metrics = Arc::new(Metrics::default());
        let config = ExportConfig { metrics: None, audit: None, ..ExportConfig::default() };
        let (_sender, records) = crate::daemon::outputs::channel();
        let exporters = spawn(&config, records, Arc::clone(&metrics)).unwrap();
        let text = metrics.encode();
        for sink in SINKS {
            assert!(text.contains(&format!("credwatch_sink_dropped_total{{sink=\"{sink}\"}} 0")), "{sink}:\n{text}");
        }
        drop(exporters);
    }
}
