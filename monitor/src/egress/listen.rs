//! The proxy's listeners and what arrives on them: a CONNECT (or a plain `http://` request) from
//! a client that honours the proxy variables, or a connection the kernel redirected here, TLS or
//! plain. Each connection is identified by the kernel before anything it sends is read.

use std::{net::SocketAddr, sync::Arc};

use hyper::{body::Incoming, server::conn::http1, service::service_fn, Method, Request};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tracing::{debug, info, warn};

use super::{
    ca::{Authority, CaError, CaPaths},
    forward,
    intercept::{self, Target},
    metrics::EgressMetrics,
    EgressConfig, Origin, Query, Shared,
};
use crate::fingerprint::FingerprintKey;

/// A TLS record's first byte (handshake): a redirected connection that starts TLS.
const TLS_HANDSHAKE: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}")]
    Listen { address: SocketAddr, source: std::io::Error },
    #[error("cannot set up the proxy's certificate authority")]
    Ca(#[from] CaError),
    #[error(transparent)]
    UpstreamCa(#[from] forward::RootsError),
    #[error("cannot register the proxy's metrics")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start the proxy's threads")]
    Runtime(#[source] std::io::Error),
}

/// Threads of the proxy's own runtime: TLS and scanning never take the daemon's loop's thread,
/// which must keep draining the kernel's events whatever a task sends.
const WORKERS: usize = 2;

/// Where the proxy listens and what tasks need to trust it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    /// IPv4 loopback, and the same port on IPv6 loopback when the host has it.
    pub address: SocketAddr,
    pub address6: Option<SocketAddr>,
    pub ca: CaPaths,
}

/// The proxy's runtime, stopped without waiting when the daemon drops it (from inside its own
/// runtime, where a blocking shutdown is not allowed).
pub struct Running(Option<tokio::runtime::Runtime>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets up the CA, binds the listeners and starts accepting on a runtime of the proxy's own.
pub fn start(
    config: EgressConfig,
    state_dir: &std::path::Path,
    key: Arc<FingerprintKey>,
    queries: mpsc::Sender<Query>,
    registry: &prometheus::Registry,
) -> Result<(Listening, Running), StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("credwatch-egress")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let entered = runtime.enter();
    let authority = Arc::new(Authority::load_or_create(state_dir)?);
    let upstream_tls = forward::client_config(config.upstream_ca.as_deref())?;
    let listener = bind(config.listen)?;
    let address = listener.local_addr().map_err(|source| StartError::Listen { address: config.listen, source })?;
    // Redirected IPv6 connects come here; a host without IPv6 loopback refuses them instead.
    let ipv6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()));
    let listener6 = bind(ipv6).inspect_err(|error| warn!(%error, "the egress proxy has no IPv6 listener")).ok();
    let listening = Listening { address, address6: listener6.as_ref().map(|_| ipv6), ca: authority.paths.clone() };
    let shared = Arc::new(Shared {
        config,
        authority,
        key,
        queries,
        upstream_tls,
        metrics: EgressMetrics::register(registry)?,
    });
    info!(%address, ca = %listening.ca.certificate.display(), "egress proxy listening");
    runtime.spawn(accept(listener, Arc::clone(&shared)));
    if let Some(listener6) = listener6 {
        runtime.spawn(accept(listener6, shared));
    }
    drop(entered);
    Ok((listening, Running(Some(runtime))))
}

/// Bound now, so that the address is known before the daemon says it is ready; served on the
/// current tokio runtime.
fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    let listen = |source| StartError::Listen { address, source };
    let listener = std::net::TcpListener::bind(address).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    TcpListener::from_std(listener).map_err(listen)
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, client, Arc::clone(&shared)));
            }
            // Out of descriptors, most likely: the connection waits in the backlog.
            Err(error) => {
                warn!(%error, "the egress proxy cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One client connection: identified first; a stranger's connection is closed unread.
async fn connection(stream: TcpStream, client: SocketAddr, shared: Arc<Shared>) {
    let Some(Some(origin)) = shared.ask(|reply| Query::Identify { client, reply }).await else {
        shared.metrics.requests.with_label_values(&["unidentified"]).inc();
        debug!(%client, "egress connection from no proxied task's process");
        return;
    };
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await.is_err() {
        return;
    }
    match (first[0] == TLS_HANDSHAKE, origin.original) {
        (true, Some(original)) => intercept::tls(stream, Target::address(original), origin, shared).await,
        // TLS to the proxy's own address: not something a client asks for.
        (true, None) => {}
        (false, _) => proxy_requests(stream, origin, shared).await,
    }
}

/// HTTP/1.1 to the proxy: CONNECT tunnels (intercepted), and plain requests, in absolute form
/// from clients that use the proxy for `http://` URLs, in origin form on a redirected connection.
async fn proxy_requests(stream: TcpStream, origin: Origin, shared: Arc<Shared>) {
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move {
            if request.method() == Method::CONNECT {
                return Ok::<_, std::convert::Infallible>(tunnel(request, origin, shared));
            }
            match Target::of_plain(&request, origin.original) {
                Some(target) => Ok(intercept::request(request, target, origin, &shared, None).await),
                None => Ok(intercept::bad_request(&shared, "no host to forward the request to")),
            }
        }
    });
    if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await {
        debug!(%error, "egress client connection ended");
    }
}

/// Answers a CONNECT with 200 and intercepts the TLS that follows, for the host it named.
fn tunnel(request: Request<Incoming>, origin: Origin, shared: Arc<Shared>) -> intercept::Reply {
    let Some(target) = Target::of_connect(request.uri()) else {
        return intercept::bad_request(&shared, "CONNECT names no host:port");
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => intercept::tls(TokioIo::new(upgraded), target, origin, shared).await,
            Err(error) => debug!(%error, "a CONNECT tunnel was not opened"),
        }
    });
    intercept::empty(hyper::StatusCode::OK)
}
