//! The egress proxy: a task's HTTP(S) requests go through the daemon, which terminates their TLS
//! with a certificate from its own CA, reads each request in plaintext (headers, query, body up
//! to a bound), has it judged by the engine before a byte leaves, and forwards it to the real
//! server over TLS it verifies itself, or answers 403. Clients reach it through the proxy
//! variables `task exec` sets, or, when they ignore them, through the kernel, whose socket hooks
//! redirect a proxied task's connects here and say which process made each connection.
//!
//! The proxy never decides: it asks the daemon's loop, which owns the engine and the kernel maps,
//! through [`Query`]. Streams pass as they come once their request is judged (server-sent
//! events, WebSocket upgrades, gRPC).

pub mod ca;
mod forward;
mod intercept;
mod listen;
pub mod metrics;
pub mod scan;

use std::{collections::BTreeMap, net::{IpAddr, SocketAddr}, path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

pub use self::listen::{start, Listening, Running, StartError};
use crate::{
    event::{ExecId, TlsWrite},
    fingerprint::FingerprintKey,
};

/// `[egress]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressConfig {
    pub enabled: bool,
    /// Where the proxy listens (loopback; port 0 picks one, which `task exec` learns from the
    /// daemon).
    pub listen: SocketAddr,
    /// Destination ports whose TCP connects of a proxied task's process the kernel sends to the
    /// proxy; another port is refused unless the task's allow list covers its address (a task
    /// without a list reaches any), and UDP but DNS always.
    pub ports: Vec<u16>,
    /// More roots to verify the real servers with, beside the host's trust store.
    pub upstream_ca: Option<PathBuf>,
    /// How much of a request body is read and scanned before the request is judged; the rest is
    /// forwarded unread (counted).
    pub body_limit: usize,
    /// How long the proxy waits for more of a body that has paused before judging what came:
    /// a streaming request (gRPC, an upload) is not held until its end.
    pub body_wait: Duration,
    /// Names the proxy resolves without DNS, as `/etc/hosts` would (`api.internal = 10.0.0.7`).
    pub hosts: BTreeMap<String, IpAddr>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ports: vec![80, 443],
            upstream_ca: None,
            body_limit: 1 << 20,
            body_wait: Duration::from_millis(100),
            hosts: BTreeMap::new(),
        }
    }
}

/// Who made a connection to the proxy, as the kernel recorded it at the connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub process: ExecId,
    /// The kernel handle of the process's task.
    pub task: u32,
    /// Where the process tried to connect, when the kernel redirected it here; `None` when it
    /// connected to the proxy itself (through the proxy variables).
    pub original: Option<SocketAddr>,
}

/// What the proxy asks the daemon's loop.
#[derive(Debug)]
pub enum Query {
    /// Which process connected from `client` (the peer address of an accepted connection).
    Identify { client: SocketAddr, reply: oneshot::Sender<Option<Origin>> },
    /// Judge a request of `origin`'s process: `request` as an event of the engine's model.
    Judge { origin: Origin, request: TlsWrite, reply: oneshot::Sender<Verdict> },
}

/// The loop's answer about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Refused: answered 403 by the proxy, never forwarded.
    Refuse {
        rule: &'static str,
        /// The finding's id (the first one's, for a repeat).
        finding: String,
    },
}

/// ring's provider, for both sides. rustls marks it deprecated for lacking post-quantum key
/// exchange, which only aws-lc-rs offers; its C build (cmake, a longer compile) is left out until
/// the servers agents reach require it. X25519 and the classical suites remain.
#[allow(deprecated)]
fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What every connection handler shares.
struct Shared {
    config: EgressConfig,
    authority: Arc<ca::Authority>,
    key: Arc<FingerprintKey>,
    queries: mpsc::Sender<Query>,
    upstream_tls: Arc<rustls::ClientConfig>,
    metrics: metrics::EgressMetrics,
}

impl Shared {
    /// Asks the loop; `None` when it has stopped (the daemon is shutting down).
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Query) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.queries.send(make(reply)).await.ok()?;
        answer.await.ok()
    }
}
