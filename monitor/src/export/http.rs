//! One HTTP/1 POST to an alert or webhook endpoint, over plain TCP with a fresh connection each
//! time: sinks send a few requests a minute, so a connection pool would buy nothing.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{body::Bytes, client::conn::http1, header, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Connecting, sending and reading the reply's head and body must fit in this.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a reply body kept to explain a refusal.
const MAX_REPLY: usize = 4096;

/// Where a sink POSTs: an `http://` URL, checked when the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// `host` or `host:port`, for the `Host` header.
    authority: String,
    path: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/path]`; `https` needs a TLS proxy (none is built in).
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|error| format!("{url:?} is not a URL: {error}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!("{url:?}: https is not supported; use http, e.g. through a local TLS proxy"));
            }
            _ => return Err(format!("{url:?} must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            // Not echoed: the part before `@` is a password.
            return Err("credentials in the URL (user:password@) are not supported".to_owned());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let path = match uri.path_and_query() {
            Some(path) => path.as_str().to_owned(),
            None => "/".to_owned(),
        };
        Ok(Self { host, port: authority.port_u16().unwrap_or(80), authority: authority.as_str().to_owned(), path })
    }

    /// The same server with `suffix` appended to the path, e.g. an API route under a base URL.
    pub fn join(&self, suffix: &str) -> Self {
        let base = self.path.trim_end_matches('/');
        Self { path: format!("{base}{suffix}"), ..self.clone() }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("connecting to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking HTTP to {endpoint}")]
    Http {
        endpoint: String,
        #[source]
        source: hyper::Error,
    },
    #[error("no reply from {endpoint} within {TIMEOUT:?}")]
    Timeout { endpoint: String },
    #[error("building the request for {endpoint}")]
    Request {
        endpoint: String,
        #[source]
        source: hyper::http::Error,
    },
}

/// A reply: its status and the start of its body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
}

/// POSTs `body` as JSON and returns the reply, whatever its status.
pub async fn post_json(endpoint: &Endpoint, body: Bytes) -> Result<Reply, PostError> {
    tokio::time::timeout(TIMEOUT, exchange(endpoint, body))
        .await
        .unwrap_or_else(|_| Err(PostError::Timeout { endpoint: endpoint.to_string() }))
}

async fn exchange(endpoint: &Endpoint, body: Bytes) -> Result<Reply, PostError> {
    let name = || endpoint.to_string();
    let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| PostError::Connect { endpoint: name(), source })?;
    let http_error = |source| PostError::Http { endpoint: name(), source };
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(http_error)?;
    // Drives the connection until the reply is read; it ends when `sender` is dropped.
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::POST)
        .uri(endpoint.path.as_str())
        .header(header::HOST, endpoint.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, concat!("credwatch/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))
        .map_err(|source| PostError::Request { endpoint: name(), source })?;
    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status();
    // The body only explains a refusal; one too long or cut off is not an error in itself.
    let body = match Limited::new(response.into_body(), MAX_REPLY).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    Ok(Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_joined() {
        let endpoint = Endpoint::parse("http://127.0.0.1:9093").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port, endpoint.path.as_str()), ("127.0.0.1", 9093, "/"));
        assert_eq!(endpoint.join("/api/v2/alerts").to_string(), "http://127.0.0.1:9093/api/v2/alerts");
        let endpoint = Endpoint::parse("http://am.monitoring.svc/alertmanager/").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("am.monitoring.svc", 80));
        assert_eq!(endpoint.join("/api/v2/alerts").to_string(), "http://am.monitoring.svc/alertmanager/api/v2/alerts");
        let endpoint = Endpoint::parse("http://[::1]:8080/revoke?lease=1").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("::1", 8080));
        assert_eq!(endpoint.to_string(), "http://[::1]:8080/revoke?lease=1");
    }

    #[test]
    fn what_cannot_be_sent_to_is_refused() {
        for (url, expected) in [
            ("https://vault:8200/", "https is not supported"),
            ("vault:8200", "must start with http://"),
            ("http://user:pw@vault/", "credentials in the URL"),
            ("not a url", "is not a URL"),
        ] {
            let error = Endpoint::parse(url).unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains("pw"), "a password is never echoed: {error}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_fails_fast_with_the_step_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
        let started = std::time::Instant::now();
        let error = post_json(&endpoint, Bytes::from_static(b"{}")).await.unwrap_err();
        assert!(matches!(error, PostError::Connect { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
