//! The Prometheus metrics. The daemon updates them in place (atomic operations, never a wait);
//! the `/metrics` endpoint encodes the registry. No secret, path or pid is ever a label.

use prometheus::{
    core::Collector, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::{
    actions::plan::Action,
    engine::{Rule, Severity},
};

/// Kernel timestamp → decision, in seconds: 10 µs to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 1e-1, 1.0, 10.0];

pub struct Metrics {
    pub registry: Registry,
    /// Events received from the kernel, by kind.
    pub events: IntCounterVec,
    /// Events the kernel could not deliver (ring buffer full), by kind.
    pub events_lost: IntCounterVec,
    /// Ring buffer records that could not be decoded.
    pub decode_errors: IntCounter,
    /// What was cut of execs' captured command lines, environments and words, by part.
    pub exec_cut: IntCounterVec,
    /// HTTP/1.x requests seen in TLS writes, by what the scan could read of them.
    pub tls_requests: IntCounterVec,
    pub findings: IntCounterVec,
    pub actions: IntCounterVec,
    pub tasks: IntGaugeVec,
    pub secrets_watched: IntGauge,
    pub processes_tracked: IntGauge,
    pub event_latency: Histogram,
    /// 1 for each attached hook, labelled with the tier.
    pub sensor_info: IntGaugeVec,
    /// Things the sensors cannot see on this kernel (1 each), by capability.
    pub sensor_gaps: IntGaugeVec,
    /// Secret files or directories that could not be watched, by reason.
    pub secret_files_unwatched: IntGaugeVec,
    /// Export records dropped because the exporters fell behind.
    pub export_dropped: IntCounter,
    /// Records an exporter gave up on (queue full, retries exhausted, write failed), by sink.
    pub sink_dropped: IntCounterVec,
    /// Records an exporter delivered (written to the audit log, accepted by an endpoint), by sink.
    pub sink_sent: IntCounterVec,
    /// Failed writes to a kernel map (it was full), by map.
    pub map_write_failures: IntCounterVec,
    /// Entries each kernel map holds, by map.
    pub map_entries: IntGaugeVec,
    /// 1 for each fail-closed judgement the kernel has switched to (`membership`, `holdings`).
    pub fail_closed: IntGaugeVec,
    /// Secrets' baselines, by state (`learning`, `learned`).
    pub baselines: IntGaugeVec,
    /// Task API connections and requests refused, by reason.
    pub api_refused: IntCounterVec,
}

/// Registers a metric built from constant names and labels, which cannot be invalid.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let event_latency = registered(
            r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "credwatch_event_latency_seconds",
                    "Time from the kernel hook to the daemon's decision about the event",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            ),
        );
        Self {
            events: counter_vec(r, "credwatch_events_total", "Events received from the kernel", &["kind"]),
            events_lost: counter_vec(
                r,
                "credwatch_events_lost_total",
                "Events the kernel could not deliver because the ring buffer was full",
                &["kind"],
            ),
            decode_errors: counter(r, "credwatch_decode_errors_total", "Ring buffer records that could not be decoded"),
            exec_cut: counter_vec(
                r,
                "credwatch_exec_cut_total",
                "Execs whose captured command line (argv) or environment (env) was cut at its capacity, or whose words \
                 past the most fingerprinted (tokens) were left out",
                &["part"],
            ),
            tls_requests: counter_vec(
                r,
                "credwatch_tls_requests_total",
                "HTTP/1.x requests seen in TLS writes: scanned whole, scanned up to a cut (the head did not end inside \
                 the capture), unreadable (not parsed) or read_failed (the kernel could not copy it); the last two \
                 are not scanned",
                &["result"],
            ),
            findings: counter_vec(
                r,
                "credwatch_findings_total",
                "Findings by rule and severity",
                &["rule", "severity"],
            ),
            actions: counter_vec(
                r,
                "credwatch_actions_total",
                "Actions taken on findings, by result",
                &["action", "result"],
            ),
            tasks: gauge_vec(r, "credwatch_tasks", "Tasks known, by state", &["state"]),
            secrets_watched: gauge(r, "credwatch_secrets_watched", "Secret file inodes watched in the kernel"),
            processes_tracked: gauge(r, "credwatch_processes_tracked", "Processes in the engine's process table"),
            event_latency,
            sensor_info: gauge_vec(
                r,
                "credwatch_sensor_info",
                "Attached kernel hooks (1 each), with the tier",
                &["tier", "hook"],
            ),
            sensor_gaps: gauge_vec(
                r,
                "credwatch_sensor_gaps",
                "What the sensors cannot see on this kernel (1 each)",
                &["capability"],
            ),
            secret_files_unwatched: gauge_vec(
                r,
                "credwatch_secret_files_unwatched",
                "Secret paths or directories that could not be watched, by reason",
                &["reason"],
            ),
            export_dropped: counter(
                r,
                "credwatch_export_dropped_total",
                "Findings and lifecycle records dropped because the exporters fell behind",
            ),
            sink_dropped: counter_vec(
                r,
                "credwatch_sink_dropped_total",
                "Records an exporter gave up on (queue full, retries exhausted or write failed), by sink",
                &["sink"],
            ),
            sink_sent: counter_vec(
                r,
                "credwatch_sink_sent_total",
                "Records an exporter delivered (audit lines written, alerts and webhook calls accepted), by sink",
                &["sink"],
            ),
            map_write_failures: counter_vec(
                r,
                "credwatch_map_write_failures_total",
                "Writes to a kernel map that failed because it was full, by map",
                &["map"],
            ),
            map_entries: gauge_vec(r, "credwatch_map_entries", "Entries each kernel map holds, by map", &["map"]),
            fail_closed: gauge_vec(
                r,
                "credwatch_fail_closed",
                "Judgements the kernel made conservative after a failed write (1 each)",
                &["judgement"],
            ),
            baselines: gauge_vec(r, "credwatch_baselines", "Secrets' learned baselines, by state", &["state"]),
            api_refused: counter_vec(
                r,
                "credwatch_api_refused_total",
                "Task API connections and requests refused, by reason",
                &["reason"],
            ),
            registry,
        }
        .with_zeros()
    }
}

impl Metrics {
    /// Creates at 0 the series that alert rules watch for an increase: `increase()` sees
    /// nothing in a series whose first sample is already 1.
    fn with_zeros(self) -> Self {
        for kind in monitor_common::event::EventKind::ALL {
            self.events.with_label_values(&[kind.name()]);
            self.events_lost.with_label_values(&[kind.name()]);
        }
        for rule in Rule::ALL {
            for severity in [Severity::Info, Severity::Medium, Severity::High, Severity::Critical] {
                self.findings.with_label_values(&[rule.name(), severity.name()]);
            }
        }
        for action in [Action::KillProcess, Action::KillTask, Action::Deny] {
            self.actions.with_label_values(&[action.name(), "failed"]);
        }
        for part in ["argv", "env", "tokens"] {
            self.exec_cut.with_label_values(&[part]);
        }
        for result in ["scanned", "cut", "unreadable", "read_failed"] {
            self.tls_requests.with_label_values(&[result]);
        }
        for map in monitor_common::maps::written::NAMES {
            self.map_write_failures.with_label_values(&[map]);
        }
        self
    }

    /// The name of every metric family exposed, histograms as their `_bucket`, `_sum` and
    /// `_count` series; for checking dashboards and alert rules against what is exported.
    pub fn names(&self) -> Vec<String> {
        let Self {
            registry: _,
            events,
            events_lost,
            decode_errors,
            exec_cut,
            tls_requests,
            findings,
            actions,
            tasks,
            secrets_watched,
            processes_tracked,
            event_latency,
            sensor_info,
            sensor_gaps,
            secret_files_unwatched,
            export_dropped,
            sink_dropped,
            sink_sent,
            map_write_failures,
            map_entries,
            fail_closed,
            baselines,
            api_refused,
        } = self;
        let plain: [&dyn Collector; 21] = [
            events,
            events_lost,
            decode_errors,
            exec_cut,
            tls_requests,
            findings,
            actions,
            tasks,
            secrets_watched,
            processes_tracked,
            sensor_info,
            sensor_gaps,
            secret_files_unwatched,
            export_dropped,
            sink_dropped,
            sink_sent,
            map_write_failures,
            map_entries,
            fail_closed,
            baselines,
            api_refused,
        ];
        let histograms: [&dyn Collector; 1] = [event_latency];
        let mut names: Vec<String> =
            plain.iter().flat_map(|collector| collector.desc()).map(|desc| desc.fq_name.clone()).collect();
        for desc in histograms.iter().flat_map(|collector| collector.desc()) {
            names.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{}{suffix}", desc.fq_name)));
        }
        names
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather()).expect("text encoding cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_its_name() {
        let metrics = Metrics::default();
        metrics.events.with_label_values(&["exec"]).inc();
        metrics.events_lost.with_label_values(&["exec"]).inc_by(0);
        metrics.findings.with_label_values(&["cross_task_reuse", "critical"]).inc();
        metrics.actions.with_label_values(&["kill_process", "signalled"]).inc();
        metrics.tasks.with_label_values(&["active"]).set(1);
        metrics.sensor_info.with_label_values(&["tracepoint", "raw_tracepoint/sys_exit"]).set(1);
        metrics.sensor_gaps.with_label_values(&["io_uring_open"]).set(1);
        metrics.secret_files_unwatched.with_label_values(&["permission_denied"]).set(0);
        metrics.sink_dropped.with_label_values(&["alertmanager"]).inc_by(0);
        metrics.event_latency.observe(0.001);
        let text = metrics.encode();
        for name in [
            "credwatch_events_total{kind=\"exec\"} 1",
            "credwatch_events_lost_total{kind=\"exec\"} 0",
            "credwatch_findings_total{rule=\"cross_task_reuse\",severity=\"critical\"} 1",
            "credwatch_actions_total{action=\"kill_process\",result=\"signalled\"} 1",
            "credwatch_tasks{state=\"active\"} 1",
            "credwatch_secrets_watched 0",
            "credwatch_processes_tracked 0",
            "credwatch_event_latency_seconds_bucket{le=\"0.001\"} 1",
            "credwatch_sensor_info{hook=\"raw_tracepoint/sys_exit\",tier=\"tracepoint\"} 1",
            "credwatch_decode_errors_total 0",
            "credwatch_exec_cut_total{part=\"env\"} 0",
            "credwatch_export_dropped_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn the_series_alerts_watch_start_at_zero_and_names_lists_every_family() {
        let metrics = Metrics::default();
        let text = metrics.encode();
        for series in [
            "credwatch_findings_total{rule=\"cross_task_reuse\",severity=\"critical\"} 0",
            "credwatch_findings_total{rule=\"untasked_access\",severity=\"info\"} 0",
            "credwatch_events_lost_total{kind=\"secret_open\"} 0",
            "credwatch_actions_total{action=\"kill_task\",result=\"failed\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        // Vectors without a child are not exposed: give each one.
        metrics.tasks.with_label_values(&["active"]).set(0);
        metrics.sensor_info.with_label_values(&["tracepoint", "exec"]).set(1);
        metrics.sensor_gaps.with_label_values(&["io_uring_open"]).set(1);
        metrics.secret_files_unwatched.with_label_values(&["watch_limit"]).set(0);
        metrics.sink_sent.with_label_values(&["audit"]).inc();
        metrics.sink_dropped.with_label_values(&["audit"]).inc();
        metrics.map_entries.with_label_values(&["TASK_OF"]).set(64);
        metrics.fail_closed.with_label_values(&["membership"]).set(1);
        metrics.baselines.with_label_values(&["learned"]).set(1);
        metrics.api_refused.with_label_values(&["connections"]).inc();
        let text = metrics.encode();
        let exposed: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect();
        let names = metrics.names();
        assert_eq!(exposed, names.iter().map(String::as_str).collect());
    }
}
