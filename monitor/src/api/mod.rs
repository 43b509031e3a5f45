//! The task API: HTTP/1 with JSON bodies over a Unix socket that only allowlisted uids and gids
//! may use. Orchestrators (and `credwatch task`) register and end tasks and tokens through it,
//! and read findings; every request is handed to the daemon's control loop as a
//! [`ControlMessage`](crate::daemon::control::ControlMessage).
//!
//! | route | body | success |
//! |---|---|---|
//! | `POST /v1/tasks` | `TaskRequest` | 201 |
//! | `GET /v1/tasks` | | 200 |
//! | `DELETE /v1/tasks/{id}` | | 200 |
//! | `POST /v1/tokens` | `TokenRequest` | 201 |
//! | `GET /v1/findings[?follow=1]` | | 200, JSON lines |
//! | `GET /v1/status` | | 200 |
//!
//! Errors are `{"error": "...", "field": "..."}` with 400 (malformed JSON or a bad field), 403
//! (not allowlisted, or refused by the daemon), 404, 405, 409, 413 (body over 1 MiB), 422 (a
//! value the daemon rejects), 500, or 503 (the daemon is stopping).

pub mod client;
mod error;
mod findings;
pub(crate) mod json;
pub mod refusal;
mod peer;
pub(crate) mod routes;
mod server;

use std::path::PathBuf;

use serde::Deserialize;

pub use self::{
    error::ApiError,
    server::{serve, ApiServer},
};

/// Where the daemon listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/credwatch/api.sock";

/// The `[api]` section of the daemon's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The socket's path; its directory is created (mode 0755) if missing.
    pub socket: PathBuf,
    /// Peers with one of these uids may use the API.
    pub allow_uids: Vec<u32>,
    /// Peers with one of these as primary or supplementary gid may use the API.
    pub allow_gids: Vec<u32>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { socket: PathBuf::from(DEFAULT_SOCKET), allow_uids: vec![0], allow_gids: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_to_root_only_and_refuses_unknown_keys() {
        let config: ApiConfig = toml::from_str("").unwrap();
        assert_eq!(config, ApiConfig::default());
        assert_eq!(config.allow_uids, [0]);

        let config: ApiConfig = toml::from_str("allow_gids = [990]").unwrap();
        assert_eq!((config.allow_uids, config.allow_gids), (vec![0], vec![990]));

        let error = toml::from_str::<ApiConfig>("allow_users = [1000]").unwrap_err();
        assert!(error.to_string().contains("allow_users"), "{error}");
    }
}
