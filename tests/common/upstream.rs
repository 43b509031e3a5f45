//! A real HTTPS server on loopback for the egress tests: the upstream that a task's clients reach,
//! directly or through the daemon's proxy. It runs in a thread of its own with its own tokio
//! runtime (the tests are plain `#[test]` functions) and records what it was sent, decoded and as
//! raw plaintext, so that a test can tell that a token reached it or that no byte of one did.

pub mod clients;
mod routes;

use std::{
    io,
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    thread::JoinHandle,
};

use hyper::{server::conn, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use tokio_rustls::TlsAcceptor;

/// The names an upstream's certificate is valid for: loopback as such, and made-up hosts that a
/// test maps to loopback (Go never sends `localhost` or a loopback address through a proxy).
pub const NAMES: &[&str] = &["localhost", "127.0.0.1", "api.test", "other.test"];

/// A certificate authority of the test's own, trusted by the clients through their environment
/// (`clients::ca_env`), never through the system store.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem_path: PathBuf,
}

impl TestCa {
    /// A fresh CA, its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "credwatch test upstream CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem_path = dir.join("ca.pem");
        std::fs::write(&pem_path, issuer.pem()).unwrap();
        Self { issuer, pem_path }
    }

    pub fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key. The authority
    /// key identifier and the key usages are there because strict verifiers (Python 3.13's
    /// default X.509 checks) refuse a leaf without them.
    pub fn issue(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(names.iter().map(|&name| name.to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (vec![cert.der().clone()], PrivatePkcs8KeyDer::from(key.serialize_der()).into())
    }
}

/// The one protocol an upstream speaks, which is all its ALPN offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// A request as the upstream decoded it. No `Debug`: its headers hold the tokens under test.
#[derive(Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// `HTTP/1.1` or `HTTP/2`, as the clients' replies name them.
    pub protocol: &'static str,
    /// The `Host` header, or HTTP/2's `:authority`.
    pub authority: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    fn contains(&self, needle: &[u8]) -> bool {
        let texts = [self.method.as_str(), self.target.as_str(), self.authority.as_deref().unwrap_or("")];
        texts.iter().any(|text| contains(text.as_bytes(), needle))
            || self
                .headers
                .iter()
                .any(|(name, value)| contains(name.as_bytes(), needle) || contains(value.as_bytes(), needle))
            || contains(&self.body, needle)
    }
}

/// Everything an upstream received, shared between its connections and the test.
#[derive(Default)]
struct Record {
    requests: Mutex<Vec<RecordedRequest>>,
    /// Each connection's decrypted bytes in a buffer of its own, so that two connections' reads
    /// cannot interleave inside a token.
    connections: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    /// WebSocket payloads, unmasked: on the wire they are masked, so not in `connections` as sent.
    messages: Mutex<Vec<Vec<u8>>>,
}

impl Record {
    fn push_request(&self, request: RecordedRequest) {
        self.requests.lock().unwrap().push(request);
    }

    fn push_message(&self, payload: Vec<u8>) {
        self.messages.lock().unwrap().push(payload);
    }

    fn new_connection(&self) -> Arc<Mutex<Vec<u8>>> {
        let bytes = Arc::default();
        self.connections.lock().unwrap().push(Arc::clone(&bytes));
        bytes
    }
}

/// A TLS server on 127.0.0.1 (an ephemeral port) with the routes of `routes`; dropped, it stops.
pub struct Upstream {
    port: u16,
    ca_pem_path: PathBuf,
    record: Arc<Record>,
    /// Taken by `drop`: stops the accept loop, and the runtime's end drops every connection.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream for `NAMES` with a certificate from `ca`, speaking `proto` only.
    pub fn start(ca: &TestCa, proto: Proto) -> Self {
        let (chain, key) = ca.issue(NAMES);
        let acceptor = TlsAcceptor::from(Arc::new(tls_config(chain, key, proto)));
        // Bound here, not in the thread, so that the port is known (and listening) on return.
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let record = Arc::<Record>::default();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{port}"))
            .spawn({
                let record = Arc::clone(&record);
                move || serve(listener, acceptor, proto, record, stopped)
            })
            .unwrap();
        Self { port, ca_pem_path: ca.pem_path().to_owned(), record, stop: Some(stop), thread: Some(thread) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA the upstream's certificate chains to.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// Every request so far, in the order the upstream decoded them.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.record.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.record.requests.lock().unwrap().len()
    }

    /// Whether `needle` is in anything the upstream received: a connection's decrypted bytes,
    /// or what it decoded from them (HTTP/2 headers are HPACK-coded, WebSocket payloads masked,
    /// bodies may be chunked, so the raw bytes alone could miss a token that did arrive).
    pub fn received_bytes_contain(&self, needle: &[u8]) -> bool {
        assert!(!needle.is_empty(), "an empty needle is in everything");
        let in_connections =
            self.record.connections.lock().unwrap().iter().any(|bytes| contains(&bytes.lock().unwrap(), needle));
        in_connections
            || self.record.requests.lock().unwrap().iter().any(|request| request.contains(needle))
            || self.record.messages.lock().unwrap().iter().any(|payload| contains(payload, needle))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // The thread may have ended already (a panic in it): the send then fails, which is fine.
        let _ = self.stop.take().unwrap().send(());
        let panicked = self.thread.take().unwrap().join().is_err();
        assert!(!panicked || std::thread::panicking(), "the upstream's thread panicked");
    }
}

/// ring's provider, named: the process-wide default is ambiguous once a dependency enables
/// another. Deprecated by rustls for lacking post-quantum key exchange, which a loopback test
/// server does not need (the daemon's proxy makes the same choice).
#[expect(deprecated, reason = "ring has no post-quantum key exchange; a test server needs none")]
pub fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, proto: Proto) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![match proto {
        Proto::Http1 => b"http/1.1".to_vec(),
        Proto::Http2 => b"h2".to_vec(),
    }];
    config
}

/// The upstream's thread: accepts until told to stop, then drops the runtime and with it every
/// connection and stream still open.
fn serve(
    listener: StdListener,
    acceptor: TlsAcceptor,
    proto: Proto,
    record: Arc<Record>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).unwrap();
        tokio::select! {
            _ = stopped => {}
            () = accept_loop(listener, acceptor, proto, record) => {}
        }
    });
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, proto: Proto, record: Arc<Record>) {
    loop {
        // A failed accept (a connection reset before it was taken) concerns that connection only.
        let Ok((tcp, _)) = listener.accept().await else { continue };
        tokio::spawn(connection(tcp, acceptor.clone(), proto, Arc::clone(&record)));
    }
}

async fn connection(tcp: TcpStream, acceptor: TlsAcceptor, proto: Proto, record: Arc<Record>) {
    // Each server-sent event goes out in a write of its own: without this, it waits for the
    // previous one's ACK, delayed by up to 40 ms.
    let _ = tcp.set_nodelay(true);
    // A client that refuses the certificate ends its handshake: nothing was received.
    let Ok(tls) = acceptor.accept(tcp).await else { return };
    let io = TokioIo::new(Recording { inner: tls, bytes: record.new_connection() });
    let service = service_fn(move |request| routes::handle(request, Arc::clone(&record)));
    // A connection's end, clean or not, is the client's business: the record has what came.
    let _ = match proto {
        Proto::Http1 => conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await,
        Proto::Http2 => conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await,
    };
}

/// A stream that keeps a copy of every byte read from it.
struct Recording<S> {
    inner: S,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.bytes.lock().unwrap().extend_from_slice(&buf.filled()[before..]);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}
