//! The egress tests' infrastructure on its own, without the daemon or a proxy: the test upstream
//! (tests/common/upstream) and the real clients that the proxy's tests run against it. Each
//! client reaches each upstream it can speak to, with a token in a header that the upstream
//! records; server-sent events arrive one by one; the WebSocket echoes; the gRPC call gets its
//! trailers; and the upstream tells a token it received from one it did not. Needs curl, node,
//! /usr/bin/python3 with grpcio and websockets, and go (`cargo xtask setup`).

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::Arc,
};

use common::upstream::{
    clients::{Client, ClientRequest, Http, Mode, Reply},
    Proto, RecordedRequest, TestCa, Upstream,
};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, ServerName};

/// A test's directory, CA and upstream, and a token of its own.
struct Setup {
    dir: tempfile::TempDir,
    upstream: Upstream,
    token: String,
}

impl Setup {
    fn new(proto: Proto) -> Self {
        let dir = tempfile::Builder::new().prefix("credwatch-upstream-").tempdir().unwrap();
        let upstream = Upstream::start(&TestCa::new(dir.path()), proto);
        Self { dir, upstream, token: common::planted_value() }
    }

    fn url(&self, target: &str) -> String {
        format!("https://127.0.0.1:{}{target}", self.upstream.port())
    }

    /// `request` with the token as a bearer credential.
    fn with_token(&self, request: ClientRequest) -> ClientRequest {
        request.header("Authorization", &format!("Bearer {}", self.token))
    }

    fn run(&self, client: Client, request: &ClientRequest) -> Reply {
        client.run(request, self.dir.path(), self.upstream.ca_pem_path(), &[]).unwrap()
    }

    /// The upstream got exactly one request, with the token in its Authorization header.
    fn assert_one_request_with_token(&self, method: &str, target: &str, protocol: &str) -> RecordedRequest {
        let requests = self.upstream.requests();
        assert_eq!(requests.len(), 1, "requests the upstream decoded");
        let request = requests.into_iter().next().unwrap();
        assert_eq!((request.method.as_str(), request.target.as_str(), request.protocol), (method, target, protocol));
        let authorization = request.header("authorization").unwrap_or("");
        assert!(
            authorization == format!("Bearer {}", self.token),
            "the Authorization header that arrived ({} bytes) is not the token's",
            authorization.len()
        );
        assert!(self.upstream.received_bytes_contain(self.token.as_bytes()), "the upstream has no trace of the token");
        let other = common::planted_value();
        assert!(!self.upstream.received_bytes_contain(other.as_bytes()), "the upstream 'received' a token never sent");
        request
    }
}

/// A POST with a JSON body through `client` to a `proto` upstream, answered over `protocol`.
fn posts_its_token(client: Client, proto: Proto, protocol: &str) {
    let setup = Setup::new(proto);
    let body = r#"{"model":"m","prompt":"hello"}"#;
    let request =
        setup.with_token(ClientRequest::new(Mode::Request, setup.url("/v1/complete?stream=false")).post(body));
    let reply = setup.run(client, &request);
    assert_eq!((reply.status.as_str(), reply.protocol.as_str(), reply.body.as_str()), ("200", protocol, "ok"));
    let recorded = setup.assert_one_request_with_token("POST", "/v1/complete?stream=false", protocol);
    assert_eq!(recorded.body, body.as_bytes());
}

#[test]
fn curl_http1_reaches_the_http1_upstream() {
    posts_its_token(Client::Curl(Http::V1_1), Proto::Http1, "HTTP/1.1");
}

#[test]
fn curl_http2_reaches_the_http2_upstream() {
    posts_its_token(Client::Curl(Http::V2), Proto::Http2, "HTTP/2");
}

#[test]
fn curl_http2_falls_back_to_http1_where_alpn_says_so() {
    posts_its_token(Client::Curl(Http::V2), Proto::Http1, "HTTP/1.1");
}

#[test]
fn node_reaches_the_http1_upstream() {
    posts_its_token(Client::Node, Proto::Http1, "HTTP/1.1");
}

#[test]
fn python_reaches_the_http1_upstream() {
    posts_its_token(Client::Python, Proto::Http1, "HTTP/1.1");
}

#[test]
fn go_reaches_the_http1_upstream() {
    posts_its_token(Client::Go, Proto::Http1, "HTTP/1.1");
}

#[test]
fn go_reaches_the_http2_upstream() {
    posts_its_token(Client::Go, Proto::Http2, "HTTP/2");
}

#[test]
fn the_http2_upstream_refuses_a_client_without_h2() {
    let setup = Setup::new(Proto::Http2);
    let request = setup.with_token(ClientRequest::new(Mode::Request, setup.url("/")));
    let failed = Client::Curl(Http::V1_1).run(&request, setup.dir.path(), setup.upstream.ca_pem_path(), &[]);
    assert!(failed.is_err(), "curl --http1.1 got a reply from an upstream whose ALPN offers h2 only");
    assert_eq!(setup.upstream.request_count(), 0);
    assert!(!setup.upstream.received_bytes_contain(setup.token.as_bytes()), "the token arrived without a handshake");
}

/// An event stream of 5 events 150 ms apart: buffered anywhere, the first would arrive 600 ms
/// late. Each must arrive within 50 ms of its send.
fn streams_events(client: Client, proto: Proto, protocol: &str) {
    let setup = Setup::new(proto);
    let target = "/sse?n=5&gap_ms=150";
    let reply = setup.run(client, &setup.with_token(ClientRequest::new(Mode::Sse, setup.url(target))));
    assert_eq!((reply.status.as_str(), reply.protocol.as_str()), ("200", protocol));
    let events = reply.events();
    assert_eq!(events.iter().map(|event| event.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4], "{events:?}");
    assert!(events.iter().all(|event| (0..50_000).contains(&event.delay_micros)), "arrived late: {events:?}");
    setup.assert_one_request_with_token("GET", target, protocol);
}

#[test]
fn node_gets_server_sent_events_one_by_one() {
    streams_events(Client::Node, Proto::Http1, "HTTP/1.1");
}

#[test]
fn python_gets_server_sent_events_one_by_one() {
    streams_events(Client::Python, Proto::Http1, "HTTP/1.1");
}

#[test]
fn go_gets_server_sent_events_one_by_one_over_http2() {
    streams_events(Client::Go, Proto::Http2, "HTTP/2");
}

#[test]
fn python_websocket_gets_its_message_echoed() {
    let setup = Setup::new(Proto::Http1);
    let message = format!("hello {}", common::planted_value());
    let url = setup.url("/ws").replacen("https:", "wss:", 1);
    let request = ClientRequest { body: message.clone(), ..setup.with_token(ClientRequest::new(Mode::Ws, url)) };
    let reply = setup.run(Client::Python, &request);
    assert_eq!((reply.status.as_str(), reply.protocol.as_str()), ("101", "HTTP/1.1"));
    assert!(
        reply.body == message,
        "the echo ({} bytes) is not the message ({} bytes)",
        reply.body.len(),
        message.len()
    );
    setup.assert_one_request_with_token("GET", "/ws", "HTTP/1.1");
    // Masked on the wire: found in what the upstream unmasked.
    assert!(
        setup.upstream.received_bytes_contain(message.as_bytes()),
        "the message is not in what the upstream received"
    );
}

#[test]
fn python_grpc_call_gets_its_message_and_status() {
    let setup = Setup::new(Proto::Http2);
    let request = ClientRequest::new(Mode::Grpc, setup.url("/grpc.Echo/Say")).post("hello");
    let reply = setup.run(Client::Python, &setup.with_token(request));
    assert_eq!((reply.status.as_str(), reply.protocol.as_str(), reply.body.as_str()), ("OK", "HTTP/2", "hello"));
    let recorded = setup.assert_one_request_with_token("POST", "/grpc.Echo/Say", "HTTP/2");
    assert_eq!(recorded.header("content-type"), Some("application/grpc"));
    assert_eq!(recorded.body, b"\0\0\0\0\x05hello", "one uncompressed message, length-prefixed");
}

/// Bytes that are no HTTP at all reach no request, yet the upstream still has them: the record
/// is of the plaintext itself, not only of what the server could decode.
#[test]
fn bytes_that_are_not_http_are_recorded_too() {
    let setup = Setup::new(Proto::Http1);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(setup.upstream.ca_pem_path()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(common::upstream::crypto())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", setup.upstream.port())).unwrap();
    tcp.set_read_timeout(Some(common::patience(10))).unwrap();
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    stream.write_all(format!("NOT HTTP {}\r\n\r\n", setup.token).as_bytes()).unwrap();
    // The server answers 400 and closes: by then it has read everything.
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&answer));
    assert_eq!(setup.upstream.request_count(), 0);
    assert!(
        setup.upstream.received_bytes_contain(setup.token.as_bytes()),
        "the token is not in the recorded plaintext"
    );
}
