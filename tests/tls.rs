//! Token use in TLS plaintext: real clients (curl and Python's urllib on OpenSSL, wget on GnuTLS)
//! send a registered token in a request header to a local TLS server whose certificate the test
//! made; the daemon sees it at the TLS library's write, before encryption. The token reaches the
//! clients through files, never their command line or environment, so that only the TLS sensor
//! can see it. Needs root, curl, wget, python3 and openssl.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use common::{daemon::RunningDaemon, Gated};
use monitor::daemon::control::{TaskRequest, TokenRequest};
use serde_json::Value;

/// An HTTPS server on loopback answering 200 to every GET, with a self-signed certificate
/// (`tests/data/https_server.py`, which the benchmark's HTTPS loop runs too).
struct TlsServer {
    child: Child,
    port: u16,
}

impl TlsServer {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(include_str!("data/https_server.py"))
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the server printed {line:?}"));
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the header files the clients read their headers from, into `dir`: the token as a bearer
/// token, and `canary` (when given) as an API key.
fn header_files(dir: &Path, token: &str, canary: Option<&str>) {
    let mut headers = vec![("Authorization", format!("Bearer {token}"))];
    headers.extend(canary.map(|canary| ("X-Api-Key", canary.to_owned())));
    let lines = |format: &dyn Fn(&str, &str) -> String| headers.iter().map(|(name, value)| format(name, value)).collect::<String>();
    std::fs::write(dir.join("headers.txt"), lines(&|name, value| format!("{name}: {value}\n"))).unwrap();
    std::fs::write(dir.join("wgetrc"), lines(&|name, value| format!("header = {name}: {value}\n"))).unwrap();
}

/// One request to `url` by each client, in sequence; with `then` = "&&" each must succeed, with
/// ";" whatever becomes of the one before.
fn every_client(url: &str, then: &str) -> String {
    let python = "import ssl, sys, urllib.request; \
                  headers = dict(line.split(': ', 1) for line in open('headers.txt').read().splitlines()); \
                  urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers=headers), \
                  context=ssl._create_unverified_context()).read()";
    format!(
        "{} {then} /usr/bin/python3 -c \"{python}\" {url} {then} \
         WGETRC=wgetrc wget -q -O /dev/null --no-check-certificate {url}",
        curl(url)
    )
}

fn curl(url: &str) -> String {
    format!("curl --http1.1 -sf -k -o /dev/null -H @headers.txt {url}")
}

fn via_tls<'a>(findings: &'a [Value], rule: &str) -> Vec<&'a Value> {
    findings.iter().filter(|finding| finding["rule"] == rule && finding["via"] == "tls").collect()
}

/// The clients' requests, found by the executable that sent them: one finding each.
async fn one_finding_per_client(daemon: &RunningDaemon, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut found = Vec::new();
    for client in ["curl", "python3", "wget"] {
        let sent_by = |finding: &Value| {
            finding["ancestry"][0]["filename"].as_str().is_some_and(|name| name.contains(client)) && wanted(finding)
        };
        found.push(daemon.finding(sent_by).await);
        daemon.settle().await;
        let all = daemon.findings().await.into_iter().filter(|finding| sent_by(finding)).count();
        assert_eq!(all, 1, "one finding for {client}'s request");
    }
    found
}

#[tokio::test]
async fn a_token_sent_over_tls_by_another_task_is_reuse_and_by_its_owner_silent() {
    // Alerts only, so that every client runs to its end.
    let mut daemon = RunningDaemon::start("[actions]\ncross_task_reuse = [\"alert\"]\n");
    let (token, canary) = (daemon.plant_value(), daemon.plant_value());
    let home = daemon.home.path().to_owned();
    let server = TlsServer::start(&home);
    let register = |task: &str, label: &str, value: &str| TokenRequest {
        task: task.into(),
        label: label.into(),
        value: Some(value.to_owned()),
        decoy: false,
    };

    // The owner's requests carry its own token and a canary, task third's token: the canary's
    // findings show that each request was read, so that the owner's silence means something.
    let owner_dir = tempfile::tempdir_in(&home).unwrap();
    header_files(owner_dir.path(), &token, Some(&canary));
    let owner = Gated::spawn(&every_client(&server.url(), "&&"), owner_dir.path(), &[]);
    daemon.client.start_task(&TaskRequest::new("owner", owner.pid)).await.unwrap();
    let third = Gated::spawn("exec sleep 120", &home, &[]);
    daemon.client.start_task(&TaskRequest::new("third", third.pid)).await.unwrap();
    daemon.client.register_token(&register("owner", "deploy token", &token)).await.unwrap();
    daemon.client.register_token(&register("third", "canary", &canary)).await.unwrap();
    let other_dir = tempfile::tempdir_in(&home).unwrap();
    header_files(other_dir.path(), &token, None);
    let other = Gated::spawn(&every_client(&server.url(), "&&"), other_dir.path(), &[]);
    daemon.client.start_task(&TaskRequest::new("other", other.pid)).await.unwrap();
    let (status, _) = owner.release();
    assert!(status.success(), "each of the owner's clients sent its request: {status}");
    let (status, _) = other.release();
    assert!(status.success(), "each of the other task's clients sent its request: {status}");

    let from_other = one_finding_per_client(&daemon, |finding| finding["task"] == "other").await;
    for finding in from_other {
        assert_eq!(finding["rule"], "cross_task_reuse", "{finding:#}");
        assert_eq!(finding["via"], "tls");
        assert_eq!(finding["owner_task"], "owner");
        assert_eq!(finding["server"], format!("127.0.0.1:{}", server.port));
        assert_eq!(finding["secret"]["name"], "deploy token");
        assert!(finding["detail"].as_str().unwrap().contains("in the authorization header of a TLS request"), "{finding:#}");
    }
    let from_owner = one_finding_per_client(&daemon, |finding| finding["task"] == "owner").await;
    for finding in from_owner {
        assert_eq!((finding["rule"].as_str(), finding["via"].as_str()), (Some("cross_task_reuse"), Some("tls")), "{finding:#}");
        assert_eq!(finding["secret"]["name"], "canary", "the owner's own token is silent: {finding:#}");
    }
    let tier = daemon.client.status().await.unwrap()["tier"].as_str().unwrap().to_owned();
    for hook in ["uprobe/SSL_write", "uprobe/gnutls_record_send"] {
        assert_eq!(daemon.scrape(&format!("credwatch_sensor_info{{hook=\"{hook}\",tier=\"{tier}\"}}")), 1, "{hook}");
    }
    drop((server, third));
    daemon.stop().await;
}

#[tokio::test]
async fn a_token_sent_outside_the_allow_list_or_after_its_task_ended_is_reported() {
    // Alerts only: a kill after the write would race the client's exit.
    let mut daemon = RunningDaemon::start("[actions]\npost_task_reuse = [\"alert\"]\n");
    let token = daemon.plant_value();
    let home = daemon.home.path().to_owned();
    header_files(&home, &token, None);
    let (allowed, elsewhere) = (TlsServer::start(&home), TlsServer::start(&home));

    let owner = Gated::spawn(&format!("{} && {}", curl(&allowed.url()), curl(&elsewhere.url())), &home, &[]);
    let mut request = TaskRequest::new("owner", owner.pid);
    request.allow = Some(vec![format!("127.0.0.1:{}", allowed.port)]);
    daemon.client.start_task(&request).await.unwrap();
    let token_request = TokenRequest { task: "owner".into(), label: "api token".into(), value: Some(token.clone()), decoy: false };
    daemon.client.register_token(&token_request).await.unwrap();
    assert!(owner.release().0.success(), "unexpected_destination alerts: nothing is killed");
    let finding = daemon.finding(|finding| finding["rule"] == "unexpected_destination" && finding["via"] == "tls").await;
    assert_eq!(finding["server"], format!("127.0.0.1:{}", elsewhere.port), "{finding:#}");
    assert_eq!(finding["task"], "owner");

    daemon.client.end_task("owner").await.unwrap();
    let (status, _) = Gated::spawn(&curl(&allowed.url()), &home, &[]).release();
    assert!(status.success(), "post_task_reuse alerts here: nothing is killed ({status})");
    let finding = daemon.finding(|finding| finding["rule"] == "post_task_reuse" && finding["via"] == "tls").await;
    assert_eq!(finding["owner_task"], "owner", "{finding:#}");
    assert_eq!(finding["task"], Value::Null, "a process in no task: {finding:#}");
    daemon.settle().await;
    let findings = daemon.findings().await;
    let to_allowed: Vec<_> = via_tls(&findings, "unexpected_destination")
        .into_iter()
        .filter(|finding| finding["server"] == format!("127.0.0.1:{}", allowed.port))
        .collect();
    assert!(to_allowed.is_empty(), "the allowed server is not unexpected: {to_allowed:#?}");
    drop((allowed, elsewhere));
    daemon.stop().await;
}
