//! The proxy's side facing the real servers: names resolved by the proxy itself, TLS verified
//! against the host's trust store (plus configured roots), HTTP/2 when the client spoke it and
//! the server offers it, HTTP/1.1 otherwise. One client connection keeps its own upstream
//! connections, by host, so that keep-alive and multiplexing carry through.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
    Request, Response,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::intercept::{Relay, Target};

/// A connect or handshake that takes longer than this fails the request (502).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve {host}")]
    Resolve { host: String, source: std::io::Error },
    #[error("cannot connect to {address}")]
    Connect { address: SocketAddr, source: std::io::Error },
    #[error("TLS with {host} failed")]
    Tls { host: String, source: std::io::Error },
    #[error("HTTP with the server failed")]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Resolve { .. } => "resolve",
            Self::Connect { .. } => "connect",
            Self::Tls { .. } => "tls",
            Self::Http(_) => "http",
        }
    }
}

/// The configured roots file could not be read as PEM certificates.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the upstream roots {path}")]
pub struct RootsError {
    path: std::path::PathBuf,
    source: std::io::Error,
}

/// Roots to verify servers with: the host's, and the configured file's.
pub fn client_config(extra: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, RootsError> {
    let mut roots = rustls::RootCertStore::empty();
    // Certificates the store cannot parse are skipped: one bad root must not stop the proxy.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra {
        let pem = std::fs::read(path).map_err(|source| RootsError { path: path.to_owned(), source })?;
        let certificates = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
            .collect::<Result<Vec<rustls::pki_types::CertificateDer<'static>>, _>>()
            .map_err(|error| RootsError {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()),
            })?;
        roots.add_parsable_certificates(certificates);
    }
    let config = rustls::ClientConfig::builder_with_provider(super::crypto())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The address the proxy connects to for `target`: a configured name, an address as written, or
/// the system's resolver.
pub async fn resolve(hosts: &std::collections::BTreeMap<String, std::net::IpAddr>, target: &Target) -> Result<SocketAddr, UpstreamError> {
    if let Some(ip) = hosts.get(&target.host) {
        return Ok(SocketAddr::new(*ip, target.port));
    }
    if let Ok(ip) = target.host.parse() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    let resolve = |source| UpstreamError::Resolve { host: target.host.clone(), source };
    let mut found = tokio::net::lookup_host((target.host.as_str(), target.port)).await.map_err(resolve)?;
    found.next().ok_or_else(|| resolve(std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))
}

enum Sender {
    Http1(Arc<tokio::sync::Mutex<http1::SendRequest<Relay>>>),
    Http2(http2::SendRequest<Relay>),
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        match self {
            Self::Http1(sender) => Self::Http1(Arc::clone(sender)),
            Self::Http2(sender) => Self::Http2(sender.clone()),
        }
    }
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Self::Http1(sender) => sender.try_lock().is_ok_and(|sender| sender.is_closed()),
            Self::Http2(sender) => sender.is_closed(),
        }
    }
}

/// One client connection's upstream connections, by host and port.
#[derive(Default)]
pub struct Upstreams {
    open: Mutex<HashMap<(String, u16), Sender>>,
}

impl Upstreams {
    /// Sends `request` to `address` for `target`, on this connection's open upstream connection
    /// to it or a new one (HTTP/2 offered when `h2`). An upgrade gets a connection of its own,
    /// which the upgrade then consumes.
    pub async fn send(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        target: &Target,
        address: SocketAddr,
        h2: bool,
        request: Request<Relay>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let upgrade = request.headers().contains_key(hyper::header::UPGRADE);
        let key = (target.host.clone(), target.port);
        let reusable = if upgrade { None } else { self.open.lock().expect("upstreams lock").get(&key).filter(|sender| !sender.is_closed()).cloned() };
        let sender = match reusable {
            Some(sender) => sender,
            None => {
                let sender = connect(tls, target, address, h2 && !upgrade, upgrade).await?;
                if !upgrade {
                    self.open.lock().expect("upstreams lock").insert(key, sender.clone());
                }
                sender
            }
        };
        let request = for_version(request, target, matches!(sender, Sender::Http2(_)));
        Ok(match sender {
            Sender::Http1(sender) => {
                let mut sender = sender.lock().await;
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(mut sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        })
    }
}

/// A new connection to the server: TCP, TLS when the target is HTTPS (ALPN `h2` offered when
/// `h2`), and the HTTP handshake of the protocol agreed.
async fn connect(tls: &Arc<rustls::ClientConfig>, target: &Target, address: SocketAddr, h2: bool, upgrades: bool) -> Result<Sender, UpstreamError> {
    let connect_error = |source| UpstreamError::Connect { address, source };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_error)?;
    let _ = tcp.set_nodelay(true);
    if !target.tls {
        return handshake(TokioIo::new(tcp), false, upgrades).await;
    }
    let tls_error = |source| UpstreamError::Tls { host: target.host.clone(), source };
    let mut config = (**tls).clone();
    config.alpn_protocols = if h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    let name = ServerName::try_from(target.host.clone())
        .map_err(|error| tls_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, error.to_string())))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .map_err(|_| tls_error(std::io::ErrorKind::TimedOut.into()))?
        .map_err(tls_error)?;
    let agreed_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    handshake(TokioIo::new(stream), agreed_h2, upgrades).await
}

async fn handshake<T>(io: TokioIo<T>, h2: bool, upgrades: bool) -> Result<Sender, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        return Ok(Sender::Http2(sender));
    }
    let (sender, connection) = http1::handshake(io).await?;
    if upgrades {
        tokio::spawn(connection.with_upgrades());
    } else {
        tokio::spawn(connection);
    }
    Ok(Sender::Http1(Arc::new(tokio::sync::Mutex::new(sender))))
}

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "proxy-connection", "keep-alive", "proxy-authorization", "proxy-authenticate", "transfer-encoding", "te"];

/// The request as the upstream protocol wants it: an absolute URI for HTTP/2, the origin form and
/// a `Host` for HTTP/1.1; hop-by-hop headers dropped (an upgrade keeps its `Connection` and
/// `Upgrade`; HTTP/2 keeps `te: trailers`, which gRPC needs).
fn for_version(request: Request<Relay>, target: &Target, h2: bool) -> Request<Relay> {
    let (mut parts, body) = request.into_parts();
    let upgrade = parts.headers.contains_key(hyper::header::UPGRADE);
    let trailers = parts.headers.get(hyper::header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in HOP_BY_HOP {
        if !(upgrade && name == "connection") {
            parts.headers.remove(name);
        }
    }
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str()).to_owned();
    let authority = target.authority();
    if h2 {
        parts.version = hyper::Version::HTTP_2;
        parts.headers.remove(hyper::header::HOST);
        parts.headers.remove(hyper::header::UPGRADE);
        if trailers {
            parts.headers.insert(hyper::header::TE, hyper::header::HeaderValue::from_static("trailers"));
        }
        let scheme = if target.tls { "https" } else { "http" };
        parts.uri = format!("{scheme}://{authority}{path}").parse().unwrap_or(parts.uri);
    } else {
        parts.version = hyper::Version::HTTP_11;
        // The host judged and verified, whatever `Host` the client wrote: on a shared front end
        // another `Host` would reach another backend.
        if let Ok(host) = authority.parse() {
            parts.headers.insert(hyper::header::HOST, host);
        }
        parts.uri = path.parse().unwrap_or(parts.uri);
    }
    Request::from_parts(parts, body)
}

/// The response as the client's protocol wants it: hop-by-hop headers dropped (a 101 keeps its
/// `Connection` and `Upgrade`).
pub fn strip_response(response: &mut Response<Incoming>) {
    if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    for name in HOP_BY_HOP {
        response.headers_mut().remove(name);
    }
    response.headers_mut().remove(hyper::header::UPGRADE);
    // An invitation to HTTP/3 over UDP, which a proxied task may not send.
    response.headers_mut().remove(hyper::header::ALT_SVC);
}
