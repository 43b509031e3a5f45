//! A client's requests, in plaintext: TLS terminated with a certificate for the host it asked
//! for, HTTP/1.1 or HTTP/2 as it negotiated; each request read (headers, query, body up to the
//! bound), scanned, judged by the daemon's loop, then refused (403) or forwarded with its body
//! and its response streamed as they come.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http_body_util::{combinators::BoxBody, BodyExt as _, Empty, Full};
use hyper::{
    body::{Body, Bytes, Frame, Incoming, SizeHint},
    header::{HeaderMap, HeaderValue},
    server::conn::{http1, http2},
    service::service_fn,
    Request, Response, StatusCode, Uri,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::debug;

use super::{
    ca::{Authority, ForHost},
    forward::{self, Upstreams},
    scan, Origin, Query, Shared, Verdict,
};
use crate::event::{RequestVia, TlsWrite};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a body of declared length within the bound may take to arrive in full.
const WHOLE_BODY_WAIT: Duration = Duration::from_secs(30);
/// What the proxy answers a client with.
pub type Reply = Response<BoxBody<Bytes, BoxError>>;

/// Where a client's requests go: the host it asked for (a name, or an address as text), the
/// port, and whether it spoke TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Target {
    /// A redirected connection's original destination (the name comes from SNI when there is one).
    pub fn address(original: SocketAddr) -> Self {
        Self { host: original.ip().to_canonical().to_string(), port: original.port(), tls: true }
    }

    /// A CONNECT's `host:port`.
    pub fn of_connect(uri: &Uri) -> Option<Self> {
        let authority = uri.authority()?;
        Some(Self { host: unbracketed(authority.host()), port: authority.port_u16()?, tls: true })
    }

    /// A plain request: its absolute URI's host (a client of an `http://` proxy), else its `Host`
    /// on a redirected connection, at the original port.
    pub fn of_plain(request: &Request<Incoming>, original: Option<SocketAddr>) -> Option<Self> {
        if let Some(authority) = request.uri().authority() {
            // A client that hands an `https://` URL to an `http://` proxy still means TLS.
            let tls = request.uri().scheme() == Some(&hyper::http::uri::Scheme::HTTPS);
            let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
            return Some(Self { host: unbracketed(authority.host()), port, tls });
        }
        let original = original?;
        let host = request.headers().get(hyper::header::HOST).and_then(|host| host.to_str().ok());
        let host = host.and_then(|host| host.parse::<hyper::http::uri::Authority>().ok()).map(|authority| unbracketed(authority.host()));
        Some(Self { host: host.unwrap_or_else(|| original.ip().to_canonical().to_string()), port: original.port(), tls: false })
    }

    /// `host:port`, IPv6 addresses in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn unbracketed(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

/// Terminates a client's TLS and serves its requests for `target` (renamed by its SNI).
pub async fn tls<T>(io: T, mut target: Target, origin: Origin, shared: Arc<Shared>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&shared.authority, target.host.clone()));
    let stream = match acceptor.accept(io).await {
        Ok(stream) => stream,
        Err(error) => {
            // A client that pins its certificates, or does not trust the CA, ends here.
            debug!(%error, "a client's TLS with the egress proxy failed");
            shared.metrics.requests.with_label_values(&["client_tls_error"]).inc();
            return;
        }
    };
    let (_, session) = stream.get_ref();
    // A redirected connection knew only an address; the name the client asked for decides.
    if let (Some(name), true) = (session.server_name(), origin.original.is_some()) {
        target.host = name.to_ascii_lowercase();
    }
    let h2 = session.alpn_protocol() == Some(b"h2");
    let upstreams = Arc::new(Upstreams::default());
    let service = service_fn(move |request: Request<Incoming>| {
        let (shared, target, upstreams) = (Arc::clone(&shared), target.clone(), Arc::clone(&upstreams));
        async move { Ok::<_, std::convert::Infallible>(self::request(request, target, origin, &shared, Some(&upstreams)).await) }
    });
    let io = TokioIo::new(stream);
    let served = if h2 {
        http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await
    } else {
        http1::Builder::new().serve_connection(io, service).with_upgrades().await
    };
    if let Err(error) = served {
        debug!(%error, "an intercepted connection ended");
    }
}

/// The server side of intercepted TLS: the certificate for the name the client asks for.
fn server_config(authority: &Arc<Authority>, fallback: String) -> Arc<rustls::ServerConfig> {
    let resolver = ForHost { authority: Arc::clone(authority), fallback };
    let mut config = rustls::ServerConfig::builder_with_provider(super::crypto())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One request: read, scanned, judged, then refused or forwarded. `upstreams`: the client
/// connection's (a plain request opens its own).
pub async fn request(
    request: Request<Incoming>,
    target: Target,
    origin: Origin,
    shared: &Arc<Shared>,
    upstreams: Option<&Arc<Upstreams>>,
) -> Reply {
    let started = Instant::now();
    let client_h2 = request.version() == hyper::Version::HTTP_2;
    let (parts, body) = request.into_parts();
    let upgrade = parts.headers.contains_key(hyper::header::UPGRADE);
    let declared = parts.headers.get(hyper::header::CONTENT_LENGTH).and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
    // A body whose length is declared within the bound is read whole, however it pauses.
    let wait = match declared {
        Some(length) if length <= shared.config.body_limit => WHOLE_BODY_WAIT,
        _ => shared.config.body_wait,
    };
    let read = match read_prefix(body, shared.config.body_limit, wait).await {
        Ok(read) => read,
        Err(error) => {
            debug!(%error, "a request body could not be read");
            return bad_request(shared, "the request body could not be read");
        }
    };
    if let Some(reason) = read.cut {
        shared.metrics.body_cut.with_label_values(&[reason]).inc();
    }
    let found = scan::scan(&parts.headers, &parts.uri, &read.prefix, read.trailers.as_ref(), &shared.key);
    let address = match forward::resolve(&shared.config.hosts, &target).await {
        Ok(address) => address,
        Err(error) => return upstream_failed(shared, &error),
    };
    let event = TlsWrite {
        server: Some(target.authority()),
        credentials: found.credentials,
        via: RequestVia::Egress,
        address: Some(address),
        caller_task: origin.task,
        captured: None,
    };
    match shared.ask(|reply| Query::Judge { origin, request: event, reply }).await {
        Some(Verdict::Forward) => {}
        Some(Verdict::Refuse { rule, finding }) => {
            shared.metrics.requests.with_label_values(&["refused"]).inc();
            let body = serde_json::json!({ "refused_by": "credwatch", "rule": rule, "finding": finding });
            return json(StatusCode::FORBIDDEN, &body);
        }
        // The daemon is stopping: nothing is forwarded unjudged.
        None => return json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "refused_by": "credwatch", "reason": "stopping" })),
    }
    shared.metrics.added.observe(started.elapsed().as_secs_f64());
    let sent = shared.metrics.bytes.with_label_values(&["sent"]);
    let relay = Relay { first: Some(read.prefix).filter(|prefix| !prefix.is_empty()), rest: read.rest, trailers: read.trailers, counter: sent };
    let mut forwarded = Request::from_parts(parts, relay);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut forwarded));
    let own;
    let upstreams = match upstreams {
        Some(upstreams) => upstreams,
        None => {
            own = Arc::new(Upstreams::default());
            &own
        }
    };
    let mut response = match upstreams.send(&shared.upstream_tls, &target, address, client_h2, forwarded).await {
        Ok(response) => response,
        Err(error) => return upstream_failed(shared, &error),
    };
    shared.metrics.requests.with_label_values(&["forwarded"]).inc();
    forward::strip_response(&mut response);
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) = (response.status(), client_upgrade) {
        splice_upgrade(client_upgrade, hyper::upgrade::on(&mut response));
    }
    let received = shared.metrics.bytes.with_label_values(&["received"]);
    response.map(|body| Relay { first: None, rest: Some(body), trailers: None, counter: received }.map_err(BoxError::from).boxed())
}

/// Once both sides have switched protocols (a WebSocket), their bytes pass as they come.
fn splice_upgrade(client: hyper::upgrade::OnUpgrade, server: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(client), Ok(server)) = (client.await, server.await) else { return };
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(server)).await;
    });
}

/// What was read of a request body before judging it.
struct Prefix {
    prefix: Bytes,
    /// The unread rest, when the body had not ended.
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
    /// Why the body was judged on its first part only: `limit` or `paused`.
    cut: Option<&'static str>,
}

/// Reads the body until it ends, reaches `limit` bytes, or pauses for `wait` after its start.
async fn read_prefix(mut body: Incoming, limit: usize, wait: Duration) -> Result<Prefix, hyper::Error> {
    let mut prefix = Vec::new();
    let mut trailers = None;
    loop {
        if body.is_end_stream() {
            return Ok(Prefix { prefix: prefix.into(), rest: None, trailers, cut: None });
        }
        if prefix.len() >= limit {
            return Ok(Prefix { prefix: prefix.into(), rest: Some(body), trailers, cut: Some("limit") });
        }
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Ok(Some(frame)) => frame?,
            Ok(None) => return Ok(Prefix { prefix: prefix.into(), rest: None, trailers, cut: None }),
            Err(_) => return Ok(Prefix { prefix: prefix.into(), rest: Some(body), trailers, cut: Some("paused") }),
        };
        match frame.into_data() {
            Ok(data) => prefix.extend_from_slice(&data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
}

/// A body relayed through the proxy: what was read already, then the rest as it comes, then any
/// trailers read already; its data bytes counted.
pub struct Relay {
    first: Option<Bytes>,
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
    counter: prometheus::IntCounter,
}

impl Body for Relay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(first) = self.first.take() {
            self.counter.inc_by(first.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some(rest) = self.rest.as_mut() {
            match Pin::new(rest).poll_frame(context) {
                Poll::Ready(None) => self.rest = None,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        self.counter.inc_by(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                other => return other,
            }
        }
        Poll::Ready(self.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.trailers.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.first, &self.rest) {
            (first, None) => SizeHint::with_exact(first.as_ref().map_or(0, |first| first.len() as u64)),
            (_, Some(_)) => SizeHint::default(),
        }
    }
}

pub fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Empty::new().map_err(BoxError::from).boxed());
    *reply.status_mut() = status;
    reply
}

fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_string())).map_err(BoxError::from).boxed());
    *reply.status_mut() = status;
    reply.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

pub fn bad_request(shared: &Shared, reason: &str) -> Reply {
    shared.metrics.requests.with_label_values(&["bad_request"]).inc();
    json(StatusCode::BAD_REQUEST, &serde_json::json!({ "refused_by": "credwatch", "reason": reason }))
}

fn upstream_failed(shared: &Shared, error: &forward::UpstreamError) -> Reply {
    shared.metrics.requests.with_label_values(&["upstream_error"]).inc();
    shared.metrics.upstream_errors.with_label_values(&[error.kind()]).inc();
    debug!(error = %crate::error_chain::ErrorChain(error), "egress upstream failed");
    json(StatusCode::BAD_GATEWAY, &serde_json::json!({ "refused_by": "credwatch", "reason": error.to_string() }))
}
