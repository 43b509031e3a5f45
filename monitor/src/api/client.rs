//! A client for the task API, used by `credwatch task`, `findings` and `status`, and by tests.

use std::{
    io,
    path::{Path, PathBuf},
};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    body::{Bytes, Incoming},
    client::conn::http1,
    header, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

use crate::daemon::control::{BaselineReset, TaskRequest, TokenRequest};

/// Largest reply body read (the findings stream is read line by line instead).
const MAX_REPLY: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the task API at {}: {source}; {}", socket.display(), connect_hint(source))]
    Connect { socket: PathBuf, source: io::Error },
    #[error("talking to the task API at {}", socket.display())]
    Http { socket: PathBuf, source: hyper::Error },
    /// The server refused the request; `message` is its `error` text.
    #[error("{message} (HTTP {})", status.as_u16())]
    Server { status: StatusCode, message: String, field: Option<String> },
    #[error("reading the task API's reply")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the task API's reply is not the expected JSON")]
    Reply(#[source] serde_json::Error),
    #[error("encoding the request")]
    Encode(#[source] serde_json::Error),
    /// E.g. a task id with characters that cannot appear in a URL path.
    #[error("cannot build the request")]
    Request(#[source] hyper::http::Error),
}

fn connect_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::PermissionDenied => "the task API is for root (or the daemon's [api] allow_uids/allow_gids)",
        _ => "is `credwatch run` running?",
    }
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    field: Option<String>,
}

/// Talks to the daemon at one socket path; each call is one connection.
#[derive(Clone, Debug)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn start_task(&self, request: &TaskRequest) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::to_vec(request).map_err(ClientError::Encode)?;
        self.call(Method::POST, "/v1/tasks", Some(body)).await
    }

    pub async fn end_task(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Method::DELETE, &format!("/v1/tasks/{id}"), None).await
    }

    pub async fn list_tasks(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, "/v1/tasks", None).await
    }

    pub async fn register_token(&self, request: &TokenRequest) -> Result<serde_json::Value, ClientError> {
        let TokenRequest { task, label, value, decoy } = request;
        let body = serde_json::json!({ "task": task, "label": label, "value": value, "decoy": decoy });
        let body = serde_json::to_vec(&body).map_err(ClientError::Encode)?;
        self.call(Method::POST, "/v1/tokens", Some(body)).await
    }

    pub async fn status(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, "/v1/status", None).await
    }

    pub async fn baselines(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, "/v1/baselines", None).await
    }

    pub async fn reset_baselines(&self, request: &BaselineReset) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::to_vec(request).map_err(ClientError::Encode)?;
        self.call(Method::POST, "/v1/baselines/reset", Some(body)).await
    }

    /// The recent findings as JSON lines; with `follow`, then each new one until the daemon stops.
    pub async fn findings(&self, follow: bool) -> Result<FindingLines, ClientError> {
        let path = if follow { "/v1/findings?follow=1" } else { "/v1/findings" };
        let response = self.send(Method::GET, path, None).await?;
        Ok(FindingLines { body: response.into_body(), pending: Vec::new() })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<serde_json::Value, ClientError> {
        let response = self.send(method, path, body).await?;
        let bytes = read_all(response.into_body()).await?;
        serde_json::from_slice(&bytes).map_err(ClientError::Reply)
    }

    /// Sends one request; a non-2xx reply becomes [`ClientError::Server`].
    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect { socket: self.socket.clone(), source })?;
        let http_error = |source| ClientError::Http { socket: self.socket.clone(), source };
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(http_error)?;
        // Drives the connection until the reply (and its body) is dropped.
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path).header(header::HOST, "credwatch");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(ClientError::Request)?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = read_all(response.into_body()).await?;
        let (message, field) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error, field }) => (error, field),
            Err(_) => (String::from_utf8_lossy(&bytes).trim().to_owned(), None),
        };
        Err(ClientError::Server { status, message, field })
    }
}

async fn read_all(body: Incoming) -> Result<Bytes, ClientError> {
    Ok(Limited::new(body, MAX_REPLY).collect().await.map_err(ClientError::Read)?.to_bytes())
}

/// The findings stream, line by line.
pub struct FindingLines {
    body: Incoming,
    pending: Vec<u8>,
}

impl FindingLines {
    /// The next line without its newline, or `None` when the stream ends.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..end]).into_owned()));
            }
            match self.body.frame().await {
                Some(frame) => {
                    let frame = frame.map_err(|error| ClientError::Read(error.into()))?;
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                None if self.pending.is_empty() => return Ok(None),
                None => return Ok(Some(String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned())),
            }
        }
    }
}
