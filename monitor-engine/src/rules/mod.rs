//! The rules, one module each: a rule is a function from the engine's state and what just
//! happened to at most one finding draft. The engine updates its state first (bindings, held
//! secrets, sprawl), then asks the rules.

pub(super) mod anomalous_use;
mod cross_task_reuse;
pub(super) mod decoy_touched;
mod environ_harvest;
pub(super) mod monitor_blind;
mod post_task_reuse;
mod secret_propagation;
mod unexpected_destination;
mod untasked_access;

use std::net::SocketAddr;

use super::{
    finding::{Rule, Severity, UseVia},
    secrets::SecretKey,
    tasks::{Membership, TaskId, TaskRef, TaskState},
    State,
};
use crate::event::{ExecId, HarvestKind};

/// A process used a secret: opened it, or started with it in its environment.
pub(super) struct SecretUse<'a> {
    pub(super) membership: Membership,
    pub(super) key: SecretKey,
    pub(super) via: Via<'a>,
}

pub(super) enum Via<'a> {
    /// `path` as the process named it.
    Open { path: &'a str },
    /// The variable's name.
    Env { name: &'a str },
    /// A word of its command line.
    Argv,
    /// A part of an HTTP request (`header`: a header's name in lower case, `query` or `body`) to
    /// `server`, written to a TLS library or sent through the egress proxy (`egress`).
    Tls { header: &'a str, server: Option<&'a str>, egress: bool },
}

impl Via<'_> {
    /// How the finding names it.
    pub(super) fn kind(&self) -> UseVia {
        match self {
            Self::Open { .. } => UseVia::Open,
            Self::Env { .. } => UseVia::Env,
            Self::Argv => UseVia::Argv,
            Self::Tls { egress: false, .. } => UseVia::Tls,
            Self::Tls { egress: true, .. } => UseVia::Egress,
        }
    }

    /// The request's `Host`, for a use in a TLS request.
    pub(super) fn server(&self) -> Option<&str> {
        match self {
            Self::Tls { server, .. } => *server,
            Self::Open { .. } | Self::Env { .. } | Self::Argv => None,
        }
    }
}

/// What a finding is about, besides its rule and process: a rule fires once per process and
/// subject, so a loop of a thousand opens yields one finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Subject {
    Secret(SecretKey),
    Target(ExecId),
    Destination(SocketAddr),
    /// A TLS request's `Host`, by a hash of its lower-case text.
    Server(u64),
}

/// A finding as a rule sees it; the engine adds time, ancestry and labels.
#[derive(Debug)]
pub(super) struct Draft {
    pub(super) rule: Rule,
    pub(super) severity: Severity,
    pub(super) secret: SecretKey,
    pub(super) owner_task: Option<TaskRef>,
    pub(super) subject: Subject,
    pub(super) destination: Option<SocketAddr>,
    /// How the secret was used, for the rules about a use.
    pub(super) via: Option<UseVia>,
    /// A TLS request's `Host`.
    pub(super) server: Option<String>,
    pub(super) target: Option<ExecId>,
    pub(super) detail: String,
    /// Attach the secret's sprawl counts.
    pub(super) sprawl: bool,
}

impl Draft {
    fn about_use(
        rule: Rule,
        severity: Severity,
        observed: &SecretUse<'_>,
        owner: Option<TaskRef>,
        detail: String,
    ) -> Self {
        Self {
            rule,
            severity,
            secret: observed.key,
            owner_task: owner,
            subject: Subject::Secret(observed.key),
            destination: None,
            via: Some(observed.via.kind()),
            server: observed.via.server().map(str::to_owned),
            target: None,
            detail,
            sprawl: false,
        }
    }
}

type UseRule = fn(&State, &SecretUse<'_>) -> Option<Draft>;

/// The rules about one use of a secret, in precedence order. The first that matches claims the
/// use, so a use gives at most one finding: a secret in the environment of another task's
/// process is cross-task reuse, never also propagation.
const SECRET_USE: [UseRule; 4] =
    [post_task_reuse::check, cross_task_reuse::check, secret_propagation::check, untasked_access::check];

pub(super) fn secret_use(state: &State, observed: &SecretUse<'_>) -> Option<Draft> {
    SECRET_USE.iter().find_map(|rule| rule(state, observed))
}

/// A process connected or sent a datagram.
pub(super) fn connect(state: &State, process: ExecId, destination: SocketAddr) -> Option<Draft> {
    unexpected_destination::check(state, process, destination)
}

pub(crate) use unexpected_destination::RequestSeen;

/// A process sent `secret` in a request (or, through the egress proxy, sent a request holding it).
pub(super) fn request(state: &State, process: ExecId, secret: SecretKey, request: &RequestSeen<'_>) -> Option<Draft> {
    unexpected_destination::check_request(state, process, secret, request)
}

/// `process` reached the environment or memory of `target`.
pub(super) fn harvest(state: &State, process: ExecId, target: ExecId, kind: HarvestKind) -> Option<Draft> {
    environ_harvest::check(state, process, target, kind)
}

/// Who acted, for a detail sentence: "a process in no task", "a process of task b".
fn actor(state: &State, membership: Membership) -> String {
    match membership {
        Membership::Untasked => "a process in no task".to_owned(),
        Membership::Unknown => "a process whose task the kernel could not record".to_owned(),
        Membership::Active(task) | Membership::Finished(task) => format!("a process of task {}", task_id(state, task)),
    }
}

/// What the process did with the secret, for a detail sentence.
fn action(state: &State, observed: &SecretUse<'_>) -> String {
    let secret = secret_name(state, observed.key);
    match observed.via {
        Via::Open { path: _ } => format!("opened {secret}"),
        Via::Env { name } if name == secret => format!("started with {name} in its environment"),
        Via::Env { name } => format!("started with {name} in its environment, holding the value of {secret}"),
        Via::Argv => format!("started with the value of {secret} on its command line"),
        Via::Tls { header, server, egress } => {
            let part = match header {
                "query" | "body" => format!("the {header}"),
                header => format!("the {header} header"),
            };
            let request = if egress { "a request through the egress proxy" } else { "a TLS request" };
            let to = server.map(|server| format!(" to {server}")).unwrap_or_default();
            format!("sent the value of {secret} in {part} of {request}{to}")
        }
    }
}

fn secret_name(state: &State, key: SecretKey) -> &str {
    state.secrets.get(key).map_or("an unknown secret", |secret| secret.name())
}

fn task_id(state: &State, task: TaskRef) -> &TaskId {
    &state.tasks.get(task).id
}

/// "ended" or "expired", for a task that is over.
fn how_over(state: &State, task: TaskRef) -> &'static str {
    match state.tasks.get(task).state {
        TaskState::Active => "is active",
        TaskState::Ended => "ended",
        TaskState::Expired => "expired",
    }
}
