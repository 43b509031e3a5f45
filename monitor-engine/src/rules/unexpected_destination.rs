//! unexpected_destination (high): a process holding a secret connects, or sends a datagram,
//! outside its task's allowed destinations; or sends a secret in a TLS request to a `Host`
//! outside them.

use std::{
    hash::{DefaultHasher, Hash as _, Hasher as _},
    net::{IpAddr, SocketAddr},
};

use super::{actor, secret_name, Draft, Subject};
use crate::{
    finding::{Rule, Severity, UseVia},
    secrets::SecretKey,
    tasks::TaskRef,
    State,
};
use crate::event::ExecId;

/// The port a `Host` without one names: requests seen over TLS are HTTPS.
const HTTPS_PORT: u16 = 443;

pub(super) fn check(state: &State, process: ExecId, destination: SocketAddr) -> Option<Draft> {
    let holder = state.processes.get(process)?;
    let secret = holder.held_secret()?;
    let task = holder.task?;
    let allowed = state.tasks.get(task).allowed.as_ref()?;
    if allowed.iter().any(|allowed| allowed.matches(destination)) {
        return None;
    }
    let draft = draft(state, task, secret, Subject::Destination(destination), &format!("connected to {destination}"));
    Some(Draft { destination: Some(destination), ..draft })
}

/// What a request was, for [`check_request`].
pub(crate) struct RequestSeen<'a> {
    /// The host the request is for: a TLS request's `Host`, the host the proxy was asked for.
    pub(crate) server: &'a str,
    /// The address the egress proxy resolved it to.
    pub(crate) address: Option<SocketAddr>,
    pub(crate) egress: bool,
}

/// A process of a task sent `secret` in a request for `server`: allowed when the host is an
/// address the allow list covers, or a name one of its name entries covers (`HOST:PORT`, `HOST`
/// for any port, `*.DOMAIN` for its subdomains). The host is what the client asked for, not the
/// socket's peer: a holder's connect elsewhere is judged at the connect, and the proxy connects
/// to the name it judged.
pub(super) fn check_request(state: &State, process: ExecId, secret: SecretKey, request: &RequestSeen<'_>) -> Option<Draft> {
    let task = state.processes.get(process)?.task?;
    let record = state.tasks.get(task);
    let allowed = record.allowed.as_ref()?;
    let server = request.server;
    let lower = server.to_ascii_lowercase();
    let (host, port) = host_port(&lower);
    let permitted = match host {
        Host::Address(ip) => allowed.iter().any(|allowed| allowed.matches(SocketAddr::new(ip, port))),
        Host::Name(name) => record.allowed_hosts.iter().any(|entry| name_allows(entry, name, port)),
    };
    if permitted {
        return None;
    }
    // `Subject` is `Copy`: the secret and the normalised host as a hash.
    let mut hasher = DefaultHasher::new();
    (secret, host, port).hash(&mut hasher);
    let subject = Subject::Server(hasher.finish());
    let what = if request.egress { "sent a request through the egress proxy to" } else { "sent it in a TLS request to" };
    let draft = draft(state, task, secret, subject, &format!("{what} {server}"));
    let via = if request.egress { UseVia::Egress } else { UseVia::Tls };
    Some(Draft { via: Some(via), server: Some(server.to_owned()), destination: request.address, ..draft })
}

/// Whether an allow list's name entry (lower case) covers `name` on `port`: `HOST:PORT` that
/// host and port, `HOST` every port of it, `*.DOMAIN` (with or without a port) the names under
/// the domain, not the domain itself.
fn name_allows(entry: &str, name: &str, port: u16) -> bool {
    let (pattern, entry_port) = match entry.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>())) {
        Some((host, Ok(entry_port))) => (host, Some(entry_port)),
        _ => (entry, None),
    };
    if entry_port.is_some_and(|entry_port| entry_port != port) {
        return false;
    }
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(domain) => name.strip_suffix(domain).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => pattern == name,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Host<'a> {
    Address(IpAddr),
    /// Without the root's trailing dot.
    Name(&'a str),
}

/// A lower-case `Host` header's (or `HOST:PORT` entry's) host and port: `name`, `name.:8443`,
/// `192.0.2.1:8443`, `[2001:db8::1]`; without a port, HTTPS's.
fn host_port(server: &str) -> (Host<'_>, u16) {
    if let Ok(address) = server.parse::<SocketAddr>() {
        return (Host::Address(address.ip()), address.port());
    }
    let unbracketed = server.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return (Host::Address(ip), HTTPS_PORT);
    }
    let (name, port) = match server.rsplit_once(':').map(|(name, port)| (name, port.parse::<u16>())) {
        Some((name, Ok(port))) => (name, port),
        Some((_, Err(_))) | None => (server, HTTPS_PORT),
    };
    (Host::Name(name.trim_end_matches('.')), port)
}

fn draft(state: &State, task: TaskRef, secret: SecretKey, subject: Subject, what: &str) -> Draft {
    let owner = state
        .secrets
        .binding(secret)
        .and_then(|binding| binding.active_owner(&state.tasks).or_else(|| binding.finished_grantee(&state.tasks)));
    let detail = format!(
        "{} holding {} {what}, outside the task's allowed destinations",
        actor(state, state.tasks.membership(Some(task))),
        secret_name(state, secret)
    );
    Draft {
        rule: Rule::UnexpectedDestination,
        severity: Severity::High,
        secret,
        owner_task: owner,
        subject,
        destination: None,
        via: None,
        server: None,
        target: None,
        detail,
        sprawl: false,
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        scenario::{fingerprint, task, Scenario, AWS},
        Rule, Severity, TaskId,
    };

    /// Task a (pid 100) may reach 10.0.0.0/8 on port 443, and holds the AWS credentials.
    fn restricted_holder() -> Scenario {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .start(task("a").root(100).file(AWS).allow(&["10.0.0.0/8:443"]))
            .open(100, AWS);
        scenario
    }

    #[test]
    fn a_holder_connecting_elsewhere() {
        let mut scenario = restricted_holder();
        scenario.connect(100, "203.0.113.5:443");
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::UnexpectedDestination);
        assert_eq!(finding.severity, Severity::High);
        assert_eq!(finding.process, scenario.id(100));
        assert_eq!(finding.task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.destination, Some("203.0.113.5:443".parse().unwrap()));
        assert_eq!(finding.secret.name, "/root/.aws/credentials");
    }

    #[test]
    fn allowed_destinations_and_non_holders_stay_silent() {
        let mut scenario = restricted_holder();
        scenario.connect(100, "10.20.30.40:443");
        scenario.spawn(1, 101).start(task("quiet").root(101).allow(&[])).connect(101, "203.0.113.5:443");
        scenario.assert_silent();
    }

    #[test]
    fn an_unrestricted_task_may_connect_anywhere() {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .start(task("a").root(100).file(AWS))
            .open(100, AWS)
            .connect(100, "203.0.113.5:443");
        scenario.assert_silent();
    }

    #[test]
    fn an_empty_allow_list_forbids_every_destination_to_holders() {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .start(task("a").root(100).file(AWS).allow(&[]))
            .open(100, AWS)
            .connect(100, "10.0.0.1:53");
        assert_eq!(scenario.only_finding().rule, Rule::UnexpectedDestination);
    }

    #[test]
    fn a_token_sent_over_tls_to_a_host_outside_the_allow_list() {
        let token = fingerprint(0x77);
        let mut scenario = Scenario::new();
        scenario.spawn(1, 100).start(task("a").root(100).token(token, "api key").allow(&["api.example.com:443", "192.0.2.0/24:8443"]));
        for allowed in ["api.example.com", "API.example.com:443", "192.0.2.9:8443"] {
            scenario.tls(100, allowed, token);
        }
        scenario.assert_silent();
        scenario.tls(100, "evil.example.net", token);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::UnexpectedDestination);
        assert_eq!(finding.server.as_deref(), Some("evil.example.net"));
        assert_eq!(finding.via, Some(crate::UseVia::Tls));
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        for outside in ["api.example.com:8443", "192.0.2.9", "[2001:db8::1]:443"] {
            scenario.tls(100, outside, token);
            assert_eq!(scenario.only_finding().rule, Rule::UnexpectedDestination, "{outside}");
        }
        scenario.tls(100, "evil.example.net:443", token);
        scenario.tls(100, "Evil.Example.Net.", token);
        scenario.assert_silent();
    }

    #[test]
    fn hosts_are_compared_without_case_trailing_dot_or_the_default_port() {
        let token = fingerprint(0x77);
        let mut scenario = Scenario::new();
        scenario.spawn(1, 100).start(task("a").root(100).token(token, "api key").allow(&["api.example.com.:443", "[2001:db8::1]:443"]));
        for allowed in ["api.example.com", "API.EXAMPLE.COM.", "api.example.com:443", "[2001:db8::1]", "[2001:DB8::1]:443"] {
            scenario.tls(100, allowed, token);
        }
        scenario.assert_silent();
    }

    #[test]
    fn names_without_a_port_and_wildcards_cover_what_they_say() {
        assert!(super::name_allows("api.example.com", "api.example.com", 8443));
        assert!(super::name_allows("*.example.com", "a.b.example.com", 443));
        assert!(!super::name_allows("*.example.com", "example.com", 443));
        assert!(!super::name_allows("*.example.com", "evilexample.com", 443));
        assert!(super::name_allows("*.example.com:443", "api.example.com", 443));
        assert!(!super::name_allows("*.example.com:443", "api.example.com", 8443));
        assert!(!super::name_allows("api.example.com:443", "api.example.com", 8443));
        let token = fingerprint(0x77);
        let mut scenario = Scenario::new();
        scenario.spawn(1, 100).start(task("a").root(100).token(token, "api key").allow(&["*.example.com", "api.test"]));
        for allowed in ["x.example.com", "api.test:9443"] {
            scenario.egress(100, allowed, token);
        }
        scenario.assert_silent();
        scenario.egress(100, "example.com", token);
        let finding = scenario.only_finding();
        assert_eq!((finding.rule, finding.via), (Rule::UnexpectedDestination, Some(crate::UseVia::Egress)));
        assert_eq!(finding.destination, Some("127.0.0.1:443".parse().unwrap()));
    }

    #[test]
    fn a_forked_child_inherits_what_its_parent_holds() {
        let mut scenario = restricted_holder();
        scenario.spawn(100, 101).exec(101, "/usr/bin/curl", &[]).connect(101, "198.51.100.1:80");
        let finding = scenario.only_finding();
        assert_eq!(finding.process, scenario.id(101));
        assert_eq!(finding.task, Some(TaskId("a".to_owned())));
        let ancestry: Vec<_> = finding.ancestry.iter().map(|ancestor| ancestor.process.tgid).collect();
        assert_eq!(ancestry, [101, 100, 1]);
    }
}
