//! `GET /metrics`: the Prometheus text exposition of [`Metrics`], over HTTP/1 on TCP. Loopback
//! only unless the config says otherwise (`crate::config` checks that).

use std::{convert::Infallible, io, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{body::Bytes, header, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, info, warn};

use crate::daemon::metrics::Metrics;

/// A scraper that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The content type of the text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `[metrics]` section, when the endpoint is enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 9477)) }
    }
}

/// Binds the listening socket now, so that a taken port fails the daemon's start.
pub fn bind(config: &MetricsConfig) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(config.listen)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves scrapes until `stop` fires. Must run inside a tokio runtime.
pub async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>, mut stop: watch::Receiver<()>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            warn!(%error, "cannot serve metrics");
            return;
        }
    };
    if let Ok(address) = listener.local_addr() {
        info!(%address, "metrics listening");
    }
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, Arc::clone(&metrics), stop.clone()));
            }
            Err(error) => {
                warn!(%error, "accepting a metrics connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<()>,
) {
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let metrics = Arc::clone(&metrics);
        async move { Ok::<_, Infallible>(respond(&request, &metrics)) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = served => {
            if let Err(error) = result {
                debug!(%peer, %error, "metrics connection ended with an error");
            }
        }
        _ = stop.changed() => {}
    }
}

fn respond<B>(request: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (StatusCode::OK, TEXT_FORMAT, metrics.encode()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "credwatch serves /metrics only\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_text_format() {
        let metrics = Arc::new(Metrics::default());
        metrics.findings.with_label_values(&["cross_task_reuse", "critical"]).inc();
        let listener = bind(&MetricsConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)) }).unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(());
        let server = tokio::spawn(serve(listener, Arc::clone(&metrics), stopped));

        let reply = get(address, "/metrics").await;
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("content-type: text/plain; version=0.0.4"), "{reply}");
        assert!(reply.contains("credwatch_findings_total{rule=\"cross_task_reuse\",severity=\"critical\"} 1\n"));
        assert!(get(address, "/").await.starts_with("HTTP/1.1 404"));

        stop.send_replace(());
        server.await.unwrap();
        assert!(tokio::net::TcpStream::connect(address).await.is_err(), "the port is closed after stop");
    }
}
