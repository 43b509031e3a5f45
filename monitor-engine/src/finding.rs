//! What the engine reports: one finding per rule that fired, with everything a person needs to
//! judge it and nothing that reveals a secret's value.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::tasks::TaskId;
use crate::event::{ExecId, SecretId};

/// The rules, each in its own module under `rules/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    CrossTaskReuse,
    PostTaskReuse,
    UnexpectedDestination,
    EnvironHarvest,
    SecretPropagation,
    UntaskedAccess,
    /// A kernel map is full: what its writes were for is no longer fully seen or enforced.
    MonitorBlind,
    /// A use outside a secret's learned baseline: a new executable, owner or destination, or a
    /// burst.
    AnomalousUse,
    /// A planted fake credential was used.
    DecoyTouched,
}

impl Rule {
    pub const ALL: [Self; 9] = [
        Self::CrossTaskReuse,
        Self::PostTaskReuse,
        Self::UnexpectedDestination,
        Self::EnvironHarvest,
        Self::SecretPropagation,
        Self::UntaskedAccess,
        Self::MonitorBlind,
        Self::AnomalousUse,
        Self::DecoyTouched,
    ];

    /// The stable snake_case name used in findings, metrics and configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CrossTaskReuse => "cross_task_reuse",
            Self::PostTaskReuse => "post_task_reuse",
            Self::UnexpectedDestination => "unexpected_destination",
            Self::EnvironHarvest => "environ_harvest",
            Self::SecretPropagation => "secret_propagation",
            Self::UntaskedAccess => "untasked_access",
            Self::MonitorBlind => "monitor_blind",
            Self::AnomalousUse => "anomalous_use",
            Self::DecoyTouched => "decoy_touched",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Ordered from least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a process used the secret a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UseVia {
    /// It opened (or read, mapped, executed) the file.
    Open,
    /// Its environment held the value at exec.
    Env,
    /// Its command line held the value at exec.
    Argv,
    /// It sent the value in a header of an HTTP request over TLS.
    Tls,
    /// It sent the value in a request through the egress proxy (a header, the query or the body),
    /// judged before the request was forwarded.
    Egress,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    /// `CLOCK_BOOTTIME` nanoseconds of the input that fired the rule.
    pub at_ns: u64,
    /// The process that acted.
    pub process: ExecId,
    /// The acting process first, then its parents, as far as the engine knows them.
    pub ancestry: Vec<Ancestor>,
    /// The actor's task, whatever its state.
    pub task: Option<TaskId>,
    /// The kernel handle of the actor's task lifetime, for `kill_task`; not published.
    #[serde(skip)]
    pub task_handle: Option<u32>,
    /// The kernel could not record the actor's task (its membership map was full), and the
    /// engine knows it in no task or in one that owns the secret: where the kernel refused the
    /// use, nothing is killed for it, the actor being as likely the owner's own new process as
    /// another task's. Not published: the detail says it.
    #[serde(skip)]
    pub task_unrecorded: bool,
    /// The task the secret is bound to (for `environ_harvest`, the target's task).
    pub owner_task: Option<TaskId>,
    pub secret: SecretLabel,
    pub destination: Option<SocketAddr>,
    /// How the secret was used, for the rules about a use.
    pub via: Option<UseVia>,
    /// A TLS request's `Host` header as sent.
    pub server: Option<String>,
    /// The process whose environment or memory was reached (`environ_harvest`).
    pub target: Option<ExecId>,
    /// One sentence for a person.
    pub detail: String,
    /// How far the secret has spread (`untasked_access`).
    pub sprawl: Option<Sprawl>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub process: ExecId,
    /// The program of its latest exec; `None` for a process seen only after its exec.
    pub filename: Option<String>,
}

/// Names a secret without revealing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretLabel {
    /// The watched secret's id; `None` for a value known only by its fingerprint (an environment
    /// variable or a broker's token).
    pub id: Option<SecretId>,
    /// A path, an environment variable's name or a token's label.
    pub name: String,
    /// First 8 hex digits of the keyed fingerprint, when the engine knows it.
    pub fingerprint_prefix: Option<String>,
}

/// Distinct processes and tasks that have used a secret since the engine started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sprawl {
    pub processes: u64,
    pub tasks: u64,
}
