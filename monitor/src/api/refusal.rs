//! Why the task API refused a connection or a request: the `reason` label of
//! `credwatch_api_refused_total`, a fixed set.

use hyper::StatusCode;

/// Past the connections served at once.
pub const CONNECTIONS: &str = "connections";
/// Request headers not complete within the header timeout (a slow client).
pub const HEADER_TIMEOUT: &str = "header_timeout";
/// Not HTTP/1 that hyper could parse.
pub const BAD_HTTP: &str = "bad_http";
/// The connection failed otherwise (reset, a write to a client gone).
pub const CONNECTION_ERROR: &str = "connection_error";

/// Every reason, for series that exist at 0 from the start.
pub const ALL: [&str; 12] = [
    CONNECTIONS, HEADER_TIMEOUT, BAD_HTTP, CONNECTION_ERROR, "malformed", "forbidden", "not_found", "method",
    "conflict", "too_large", "invalid", "unavailable",
];

/// The reason of a request refused with `status`.
pub fn of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "malformed",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        _ => "unavailable",
    }
}
