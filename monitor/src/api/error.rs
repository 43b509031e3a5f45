//! What can go wrong: starting the server ([`ApiError`]), and one request ([`Rejection`], which
//! becomes the `{"error": ..., "field": ...}` reply).

use std::{io, path::PathBuf};

use http_body_util::Full;
use hyper::{body::Bytes, header, Response, StatusCode};
use serde::Serialize;

use crate::daemon::control::ControlError;

/// Why the task API could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("creating the socket's directory {}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{} is in use: another credwatch daemon is listening on it", path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("checking whether anything listens on {}", path.display())]
    Probe { path: PathBuf, source: io::Error },
    #[error("removing the stale socket {}", path.display())]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("binding the task API socket {}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error("restricting the permissions of {}", path.display())]
    Permissions { path: PathBuf, source: io::Error },
}

/// A request refused: its HTTP status and the message the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
    /// The methods a path supports, for the `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl Rejection {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), field: None, allow: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn method_not_allowed(method: &hyper::Method, path: &str, allow: &'static str) -> Self {
        let message = format!("{method} is not supported on {path}; use {allow}");
        Self { allow: Some(allow), ..Self::new(StatusCode::METHOD_NOT_ALLOWED, message) }
    }

    /// The daemon's control loop is gone (stopping, or crashed).
    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is not accepting requests (stopping?)")
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let Self { status, message, field, allow } = self;
        let body = serde_json::to_vec(&ErrorBody { error: &message, field: field.as_deref() })
            .unwrap_or_else(|_| br#"{"error":"unencodable error"}"#.to_vec());
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        if let Some(allow) = allow {
            headers.insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<ControlError> for Rejection {
    fn from(error: ControlError) -> Self {
        let status = match &error {
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let field = match &error {
            ControlError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        Self { field, ..Self::new(status, error.to_string()) }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    async fn body_json(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn control_errors_map_to_statuses_and_name_the_field() {
        let invalid = Rejection::from(ControlError::Invalid { field: "allow[0]".into(), message: "bad".into() });
        assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
        let response = invalid.into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body_json(response).await, serde_json::json!({"error": "allow[0]: bad", "field": "allow[0]"}));

        for (error, status) in [
            (ControlError::Forbidden("in a task".into()), StatusCode::FORBIDDEN),
            (ControlError::NotFound("t".into()), StatusCode::NOT_FOUND),
            (ControlError::Conflict("t".into()), StatusCode::CONFLICT),
            (ControlError::Internal("x".into()), StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let rejection = Rejection::from(error);
            assert_eq!(rejection.status, status);
            assert_eq!(rejection.field, None);
        }
    }

    #[tokio::test]
    async fn method_not_allowed_names_the_allowed_methods() {
        let response = Rejection::method_not_allowed(&hyper::Method::PUT, "/v1/tasks", "GET, POST").into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, POST");
        let body = body_json(response).await;
        assert_eq!(body["error"], "PUT is not supported on /v1/tasks; use GET, POST");
        assert!(body.get("field").is_none());
    }
}
