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

/// Writes the header files the clients read the token from, into `dir`.
fn header_files(dir: &Path, token: &str) {
    std::fs::write(dir.join("auth.txt"), format!("Authorization: Bearer {token}\n")).unwrap();
    std::fs::write(dir.join("wgetrc"), format!("header = Authorization: Bearer {token}\n")).unwrap();
}

/// One request to `url` by each client, in sequence, whatever becomes of the one before.
fn every_client(url: &str) -> String {
    let python = "import ssl, sys, urllib.request; name, value = open('auth.txt').read().strip().split(': ', 1); \
                  urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={name: value}), \
                  context=ssl._create_unverified_context()).read()";
    format!(
        "{}; /usr/bin/python3 -c \"{python}\" {url}; \
         WGETRC=wgetrc wget -q -O /dev/null --no-check-certificate {url}; exit 0",
        curl(url)
    )
}

fn curl(url: &str) -> String {
    format!("curl --http1.1 -sf -k -o /dev/null -H @auth.txt {url}")
}

fn via_tls<'a>(findings: &'a [Value], rule: &str) -> Vec<&'a Value> {
    findings.iter().filter(|finding| finding["rule"] == rule && finding["via"] == "tls").collect()
}

#[tokio::test]
async fn a_token_sent_over_tls_by_another_task_is_reuse_and_by_its_owner_silent() {
    let mut daemon = RunningDaemon::start("");
    let token = daemon.plant_value();
    let home = daemon.home.path().to_owned();
    header_files(&home, &token);
    let server = TlsServer::start(&home);

    let owner = Gated::spawn(&every_client(&server.url()), &home, &[]);
    daemon.client.start_task(&TaskRequest::new("owner", owner.pid)).await.unwrap();
    let request = TokenRequest { task: "owner".into(), label: "deploy token".into(), value: Some(token.clone()), decoy: false };
    daemon.client.register_token(&request).await.unwrap();
    let other = Gated::spawn(&every_client(&server.url()), &home, &[]);
    daemon.client.start_task(&TaskRequest::new("other", other.pid)).await.unwrap();
    assert!(owner.release().0.success());
    assert!(other.release().0.success());

    for client in ["curl", "python3", "wget"] {
        let finding = daemon
            .finding(|finding| {
                finding["rule"] == "cross_task_reuse"
                    && finding["via"] == "tls"
                    && finding["ancestry"][0]["filename"].as_str().is_some_and(|name| name.contains(client))
            })
            .await;
        assert_eq!(finding["task"], "other", "{finding:#}");
        assert_eq!(finding["owner_task"], "owner");
        assert_eq!(finding["server"], format!("127.0.0.1:{}", server.port));
        assert_eq!(finding["secret"]["name"], "deploy token");
        assert!(finding["detail"].as_str().unwrap().contains("in the authorization header of a TLS request"), "{finding:#}");
    }
    daemon.settle().await;
    let findings = daemon.findings().await;
    let about_owner: Vec<_> = findings.iter().filter(|finding| finding["task"] == "owner").collect();
    assert!(about_owner.is_empty(), "the owner's own requests are silent: {about_owner:#?}");
    // The uprobes see every process on the host: at least these six requests were scanned.
    let status = daemon.client.status().await.unwrap();
    assert!(status["daemon"]["tls_requests_scanned"].as_u64().unwrap() >= 6, "{status:#}");
    let tier = status["tier"].as_str().unwrap();
    for hook in ["uprobe/SSL_write", "uprobe/gnutls_record_send"] {
        assert_eq!(daemon.scrape(&format!("credwatch_sensor_info{{hook=\"{hook}\",tier=\"{tier}\"}}")), 1, "{hook}");
    }
    drop(server);
    daemon.stop().await;
}

#[tokio::test]
async fn a_token_sent_outside_the_allow_list_or_after_its_task_ended_is_reported() {
    let mut daemon = RunningDaemon::start("");
    let token = daemon.plant_value();
    let home = daemon.home.path().to_owned();
    header_files(&home, &token);
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
    Gated::spawn(&curl(&allowed.url()), &home, &[]).release();
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
