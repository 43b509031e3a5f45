//! Requests to the running daemon from its API, and their replies.
//!
//! The API server (`crate::api`) authenticates the peer, then sends a [`ControlMessage`] to the
//! daemon's loop and waits for the reply; the daemon is the only writer of tasks and kernel maps.

use std::{collections::BTreeMap, net::SocketAddr, str::FromStr as _, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// Who is asking, from the Unix socket's peer credentials (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A task to register: what an orchestrator or `credwatch task exec` sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// Unique among active tasks: `[A-Za-z0-9._:-]`, 1 to 128 characters.
    pub id: String,
    /// The task's first process; its descendants (from now on) are members.
    #[serde(default)]
    pub root_pid: Option<u32>,
    /// A cgroup v2 directory whose processes are the task (`kill_task` uses `cgroup.kill`).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Secret files granted to the task, as paths (resolved to inodes by the daemon).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Environment variables granted to the task, by name; the daemon fingerprints their values
    /// in the root process's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Destinations the task's secret holders may reach: `CIDR`, `IP`, `CIDR:PORT`, `IP:PORT`,
    /// `HOST:PORT` (resolved once at registration), `[IPv6]:PORT`, or a name only the egress
    /// proxy and the TLS sensor match (`HOST`, `*.DOMAIN`, with or without a port). Absent: unrestricted;
    /// present and empty: nowhere.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Time to live, e.g. "15m", "90s", "2h".
    #[serde(default, with = "duration_text")]
    pub ttl: Option<Duration>,
    /// Who the task is for (an agent or user name); defaults to the caller's uid.
    #[serde(default)]
    pub owner: Option<String>,
    /// Whether the task's HTTP(S) requests go through the egress proxy (`task exec`'s default)
    /// or straight out (the API's default).
    #[serde(default, skip_serializing_if = "EgressMode::is_direct")]
    pub egress: EgressMode,
}

/// Where a task's HTTP(S) requests go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EgressMode {
    /// Straight to the servers; the TLS uprobes still see what they can.
    #[default]
    Direct,
    /// Through the daemon's egress proxy, judged before it leaves.
    Proxy,
}

impl EgressMode {
    fn is_direct(&self) -> bool {
        *self == Self::Direct
    }
}

impl TaskRequest {
    /// A task rooted at process `root_pid`, granted nothing yet, unrestricted, with no TTL.
    pub fn new(id: &str, root_pid: u32) -> Self {
        Self {
            id: id.to_owned(),
            root_pid: Some(root_pid),
            cgroup: None,
            secrets: Vec::new(),
            env: Vec::new(),
            allow: None,
            ttl: None,
            owner: None,
            egress: EgressMode::Direct,
        }
    }
}

/// A broker-issued token the daemon should recognise. The value is fingerprinted at once and
/// never stored, logged or echoed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub task: String,
    /// A human label for findings, e.g. "vault lease 1234".
    pub label: String,
    /// Required but for a decoy, which the daemon makes up when it is absent.
    #[serde(default)]
    pub value: Option<String>,
    /// A decoy planted in the task: the task may carry it; any other process using it is
    /// `decoy_touched`.
    #[serde(default)]
    pub decoy: bool,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { task, label, value: _, decoy } = self;
        f.debug_struct("TokenRequest").field("task", task).field("label", label).field("decoy", decoy).finish_non_exhaustive()
    }
}

/// The `HOST:PORT` entries of a task's `allow` list, resolved by the caller before the request
/// reaches the daemon's loop: DNS may take seconds, and the loop drains the kernel's events.
#[derive(Debug, Default)]
pub struct ResolvedHosts(BTreeMap<String, Result<Vec<SocketAddr>, String>>);

impl ResolvedHosts {
    /// Resolves every entry of `allow` that is not an address or a network.
    pub async fn resolve(allow: Option<&[String]>) -> Self {
        let mut resolved = BTreeMap::new();
        for text in allow.unwrap_or_default() {
            // A wildcard names no address; the proxy matches it by name.
            if crate::engine::Destination::from_str(text).is_ok() || text.starts_with("*.") {
                continue;
            }
            let Some((host, port)) = text.rsplit_once(':') else { continue };
            let Ok(port) = port.parse::<u16>() else { continue };
            let addresses = tokio::net::lookup_host((host, port)).await;
            let addresses = addresses.map(Iterator::collect).map_err(|error| format!("cannot resolve {host:?}: {error}"));
            resolved.insert(text.clone(), addresses);
        }
        Self(resolved)
    }

    /// What `HOST:PORT` entry `text` resolved to; `None` when it was not resolved.
    pub fn get(&self, text: &str) -> Option<&Result<Vec<SocketAddr>, String>> {
        self.0.get(text)
    }
}

#[derive(Debug)]
pub enum ControlRequest {
    StartTask { request: TaskRequest, caller: Caller, hosts: ResolvedHosts },
    EndTask { id: String, caller: Caller },
    ListTasks,
    RegisterToken { request: TokenRequest, caller: Caller },
    Status,
    /// Every secret's learned baseline.
    Baselines,
    /// Forget one secret's baseline, or all of them.
    ResetBaselines { request: BaselineReset, caller: Caller },
}

/// Which baseline to forget: `secret` as `baseline show` names it, or every one when absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineReset {
    #[serde(default)]
    pub secret: Option<String>,
}

/// Why the daemon refused a request; the API maps these to HTTP statuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// 403: the caller may not do this (in a task, or not allowlisted).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404.
    #[error("no such task: {0}")]
    NotFound(String),
    /// 409: e.g. a task id already active.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 400/422: a field has a bad value; `field` names it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// 500.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ControlReply = Result<serde_json::Value, ControlError>;

pub struct ControlMessage {
    pub request: ControlRequest,
    pub reply: oneshot::Sender<ControlReply>,
}

/// Durations as people write them: "90s", "15m", "2h", "1d", or a plain number of seconds.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 =
            number.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 2h or 1d"))?;
        let seconds = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(format!("{text:?} has unknown unit {unit:?}; use s, m, h or d")),
        };
        if number == 0 {
            return Err(format!("{text:?} is zero"));
        }
        number.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
    }

    pub fn format(duration: Duration) -> String {
        format!("{}s", duration.as_secs())
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_str(&format(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_units_and_rejects_nonsense() {
            assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
            assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
            assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
            assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
            assert!(parse("15x").unwrap_err().contains("unknown unit"));
            assert!(parse("0m").unwrap_err().contains("zero"));
            assert!(parse("m").unwrap_err().contains("not a duration"));
        }
    }
}
