//! The proxy's metrics, registered in the daemon's registry: requests by result, bytes each way,
//! the time the proxy adds, and what went wrong upstream. No host, path or pid is a label.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// The time between a request's head arriving and its forwarding: 50 µs to 1 s.
const ADDED_BUCKETS: [f64; 11] = [5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 1e-1, 1.0];

#[derive(Clone)]
pub struct EgressMetrics {
    /// By result: `forwarded`, `refused`, `unidentified` (not a proxied task's process),
    /// `client_tls_error` (a client that does not trust the CA, or pins), `upstream_error`,
    /// `bad_request`.
    pub requests: IntCounterVec,
    /// By direction: `sent` (request bodies forwarded), `received` (response bodies relayed).
    pub bytes: IntCounterVec,
    /// Added before forwarding: reading and scanning the request, the engine's judgement.
    pub added: Histogram,
    /// By kind: `resolve`, `connect`, `tls`, `http`.
    pub upstream_errors: IntCounterVec,
    /// Request bodies judged on their first part only (past the bound, or paused), by reason.
    pub body_cut: IntCounterVec,
}

impl EgressMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new("credwatch_egress_requests_total", "Requests through the egress proxy, by result"),
            &["result"],
        )?;
        let bytes =
            IntCounterVec::new(Opts::new("credwatch_egress_bytes_total", "Body bytes through the egress proxy"), &["direction"])?;
        let added = Histogram::with_opts(
            HistogramOpts::new("credwatch_egress_added_seconds", "Time the egress proxy adds before forwarding a request")
                .buckets(ADDED_BUCKETS.to_vec()),
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("credwatch_egress_upstream_errors_total", "Failures reaching the real servers, by kind"),
            &["kind"],
        )?;
        let body_cut = IntCounterVec::new(
            Opts::new("credwatch_egress_body_cut_total", "Request bodies judged on their first part only, by reason"),
            &["reason"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(added.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(body_cut.clone()))?;
        Ok(Self { requests, bytes, added, upstream_errors, body_cut })
    }
}
