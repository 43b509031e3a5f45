//! Operations end to end: the real daemon scraped by a real Prometheus and alerting a real
//! Alertmanager (Debian's `prometheus` and `prometheus-alertmanager`, installed by `cargo xtask
//! setup`), started on free loopback ports; alert sinks pointed at a dead address; the audit log
//! and the revocation webhook after a reuse. Needs root.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{daemon::RunningDaemon, shared_read::SharedRead, Gated};
use monitor::daemon::control::TaskRequest;
use serde_json::Value;

/// A Prometheus or Alertmanager started for one test, killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Server {
    /// Runs `program` with `args`; `{dir}` in an argument stands for the server's temporary
    /// directory, where `config` is written as `config.yml`. Waits (30 s) until `/-/ready`.
    fn start(name: &'static str, program: &str, config: &str, args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix(&format!("credwatch-{name}-")).tempdir().unwrap();
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let dir_text = dir.path().display().to_string();
        let child = Command::new(program)
            .args(args.iter().map(|arg| arg.replace("{dir}", &dir_text).replace("{address}", &address.to_string())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {program} ({error}); run `cargo xtask setup`"));
        let server = Self { name, child, address, dir };
        server.wait_for("ready", Duration::from_secs(30), || (http_get(address, "/-/ready").0 == 200).then_some(()));
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Polls `check` every 200 ms until it gives a value, failing with the server's log.
    fn wait_for<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(Instant::now() < deadline, "{}: no {what} after {timeout:?}; its log:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (at the time of the call).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A GET over HTTP/1.0 (so no chunked reply): status and body. Status 0 when nothing answers.
fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut reply = String::new();
    if stream.read_to_string(&mut reply).is_err() {
        return (0, String::new());
    }
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The result vector of an instant query to Prometheus's HTTP API.
fn query(prometheus: &Server, promql: &str) -> Vec<Value> {
    let (status, body) = http_get(prometheus.address, &format!("/api/v1/query?query={}", encode(promql)));
    assert_eq!(status, 200, "query {promql}: {body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    reply["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The value of a one-element query result.
fn scalar(result: &[Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// Alerts that Alertmanager holds matching `matchers`, as `amtool` reports them.
fn amtool_alerts(alertmanager: &Server, matchers: &[&str]) -> Vec<Value> {
    let output = Command::new("amtool")
        .arg(format!("--alertmanager.url=http://{}", alertmanager.address))
        .args(["alert", "query", "--output=json"])
        .args(matchers)
        .output()
        .expect("amtool runs; run `cargo xtask setup`");
    assert!(output.status.success(), "amtool: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Task `agent-a` is granted `relative` (a file under HOME) and reads it; task `agent-b` then
/// reads it too and is killed in the kernel before a byte. Returns the secret's path.
async fn reuse(daemon: &mut RunningDaemon, relative: &str) -> PathBuf {
    let (secret, _) = daemon.plant(relative);
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let owner = Gated::spawn(&format!("cat {relative} >/dev/null"), &home, &[]);
    let mut request = TaskRequest::new("agent-a", owner.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();
    assert!(owner.release().0.success());
    let read = SharedRead::new(&home, "rogue");
    let rogue = Gated::spawn(&format!("exec {}", read.command(relative)), &home, &[]);
    let rogue_pid = rogue.pid;
    daemon.client.start_task(&TaskRequest::new("agent-b", rogue.pid)).await.unwrap();
    let (status, _) = rogue.release();
    assert_eq!(status.signal(), Some(9), "the rogue is killed: {status}");
    assert_eq!(read.received().len(), 0, "bytes of the secret reached the rogue");
    let finding = daemon
        .finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["pid"] == rogue_pid)
        .await;
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
    secret
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned()
}

#[tokio::test]
async fn prometheus_scrapes_the_reuse_and_alertmanager_holds_its_alerts() {
    let alertmanager = Server::start(
        "alertmanager",
        "prometheus-alertmanager",
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
        &[
            "--config.file={dir}/config.yml",
            "--storage.path={dir}/data",
            "--web.listen-address={address}",
            // One instance, no gossip port.
            "--cluster.listen-address=",
        ],
    );
    let mut daemon =
        RunningDaemon::start(&format!("[alerts]\nalertmanager_url = \"http://{}\"\n", alertmanager.address));
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/alerts.rules.yml");
    let prometheus_config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [{rules:?}]\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{alertmanager}\"]\n\
         scrape_configs:\n  - job_name: credwatch\n    static_configs:\n      - targets: [\"{metrics}\"]\n",
        rules = rules.display().to_string(),
        alertmanager = alertmanager.address,
        metrics = daemon.metrics_address(),
    );
    let prometheus = Server::start(
        "prometheus",
        "prometheus",
        &prometheus_config,
        &["--config.file={dir}/config.yml", "--storage.tsdb.path={dir}/data", "--web.listen-address={address}"],
    );
    // A first sample at 0, so that the alert rule sees the increase.
    let reuse_series = "sum(credwatch_findings_total{job=\"credwatch\",rule=\"cross_task_reuse\"})";
    prometheus.wait_for("scrape of credwatch", Duration::from_secs(30), || {
        scalar(&query(&prometheus, reuse_series)).filter(|&count| count == 0.0)
    });
    let started = Instant::now();

    let secret = reuse(&mut daemon, ".aws/credentials").await;

    let count = prometheus.wait_for("scraped reuse finding", Duration::from_secs(30), || {
        scalar(&query(&prometheus, reuse_series)).filter(|&count| count >= 1.0)
    });
    println!("Prometheus scraped {count} cross_task_reuse finding(s) {:?} after the reuse", started.elapsed());
    for series in ["credwatch_sensor_info", "credwatch_event_latency_seconds_count", "credwatch_events_total"] {
        assert!(!query(&prometheus, series).is_empty(), "{series} is scraped");
    }

    let alert = alertmanager.wait_for("finding alert", Duration::from_secs(30), || {
        amtool_alerts(&alertmanager, &["alertname=CredwatchFinding", "rule=cross_task_reuse"]).into_iter().next()
    });
    println!("Alertmanager held the finding {:?} after the reuse", started.elapsed());
    let labels = &alert["labels"];
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["task"], "agent-b");
    assert_eq!(labels["host"], host_name());
    // The annotations are the finding's record, flattened: the same names and the same id as the
    // finding the API serves.
    let annotations = &alert["annotations"];
    assert_eq!(annotations["secret_name"], secret.display().to_string());
    assert_eq!(annotations["owner_task"], "agent-a");
    let served = daemon.findings().await.into_iter().find(|finding| finding["rule"] == "cross_task_reuse").unwrap();
    assert_eq!(annotations["id"], served["id"], "{annotations:#} / {served:#}");
    assert_eq!(annotations["process_pid"], served["process"]["pid"].to_string());
    assert_eq!(annotations["version"], served["version"].to_string());

    // The alert rule evaluated by Prometheus on the scraped counter reaches Alertmanager too.
    let rule_alert =
        alertmanager.wait_for("CredwatchCredentialReuse from the rules file", Duration::from_secs(60), || {
            amtool_alerts(&alertmanager, &["alertname=CredwatchCredentialReuse"]).into_iter().next()
        });
    println!("Alertmanager held the rule's alert {:?} after the reuse", started.elapsed());
    assert_eq!(rule_alert["labels"]["rule"], "cross_task_reuse");
    assert_eq!(rule_alert["labels"]["severity"], "critical");

    let everything = serde_json::to_string(&amtool_alerts(&alertmanager, &[])).unwrap();
    assert!(!everything.contains(&std::fs::read_to_string(&secret).unwrap()), "a secret value reached Alertmanager");
    daemon.stop().await;
}

/// Readers of a secret in no task: one `untasked_access` finding each.
const READERS: usize = 40;

#[tokio::test]
async fn dead_alert_sinks_neither_block_nor_slow_the_engine_and_count_their_drops() {
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let queue = 4;
    let mut daemon = RunningDaemon::start(&format!(
        "[alerts]\nalertmanager_url = \"http://{dead}\"\nwebhook_url = \"http://{dead}/hook\"\nmin_severity = \"info\"\nqueue = {queue}\n"
    ));
    let (secret, _) = daemon.plant(".netrc");
    daemon.wait_watched(&secret);
    let metrics = daemon.metrics_address();

    let started = Instant::now();
    common::sh(&format!("for i in $(seq {READERS}); do cat {} >/dev/null; done", secret.display()), daemon.home.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let findings = daemon.findings().await;
        let count = findings.iter().filter(|finding| finding["rule"] == "untasked_access").count();
        if count >= READERS {
            break;
        }
        assert!(Instant::now() < deadline, "{count} of {READERS} findings after 10 s; log:\n{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = started.elapsed();

    let scrape_started = Instant::now();
    let (status, text) = http_get(metrics, "/metrics");
    let scrape = scrape_started.elapsed();
    assert_eq!(status, 200);
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
    };
    let dropped_webhook = value("credwatch_sink_dropped_total{sink=\"webhook\"}");
    let dropped_alertmanager = value("credwatch_sink_dropped_total{sink=\"alertmanager\"}");
    let status = daemon.client.status().await.unwrap();
    let latency = &status["latency"];
    let p99 = Duration::from_nanos(latency["p99_ns"].as_u64().unwrap());
    println!(
        "{READERS} findings delivered in {delivered:?}; event latency p99 {p99:?} over {} events; scrape {scrape:?}; \
         dropped: webhook {dropped_webhook}, alertmanager {dropped_alertmanager}",
        latency["count"]
    );

    // At most the queue and one batch in flight are held; the rest is dropped and counted at once.
    assert!(dropped_webhook >= (READERS - queue - 1) as f64, "webhook drops: {dropped_webhook}");
    assert!(dropped_alertmanager >= (READERS - 2 * queue) as f64, "alertmanager drops: {dropped_alertmanager}");
    assert_eq!(status["export_dropped"], 0, "the exporters kept up with the daemon");
    // The sinks retry for half a minute; meanwhile the engine decides as quickly as ever.
    assert!(p99 < Duration::from_millis(250), "event → decision p99 {p99:?} with dead sinks");
    assert!(scrape < Duration::from_secs(1), "a scrape took {scrape:?}");

    let stopping = Instant::now();
    daemon.stop().await;
    println!("stopped in {:?} with the sinks still retrying", stopping.elapsed());
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "stopping took {:?} with sinks still retrying",
        stopping.elapsed()
    );
}

/// A revocation endpoint: replies 200 to each POST and keeps the bodies.
fn revocation_endpoint() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0; 4096];
            let body = loop {
                let read = stream.read(&mut buffer).unwrap();
                if read == 0 {
                    break None;
                }
                request.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&request).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                let length = head
                    .lines()
                    .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ")?.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    break Some(format!("{}\n{body}", head.lines().next().unwrap_or_default()));
                }
            };
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            received.lock().unwrap().extend(body);
        }
    });
    (address, bodies)
}

#[tokio::test]
async fn the_audit_log_and_the_revocation_webhook_record_a_reuse_and_never_a_secret() {
    let (endpoint, revocations) = revocation_endpoint();
    let mut daemon = RunningDaemon::start(&format!(
        "[actions]\ncross_task_reuse = [\"kill_process\", \"revoke\"]\n[revoke]\nurl = \"http://{endpoint}/v1/revoke\"\n"
    ));
    // A granted environment variable too: its value must not reach any record either.
    let token = daemon.plant_value();
    let holder = Gated::spawn("true", daemon.home.path(), &[("GITHUB_TOKEN", &token)]);
    let mut request = TaskRequest::new("env-holder", holder.pid);
    request.env = vec!["GITHUB_TOKEN".to_owned()];
    daemon.client.start_task(&request).await.unwrap();
    assert!(holder.release().0.success());
    daemon.client.end_task("env-holder").await.unwrap();

    let secret = reuse(&mut daemon, ".config/gh/hosts.yml").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let revocation = loop {
        if let Some(body) = revocations.lock().unwrap().first().cloned() {
            break body;
        }
        assert!(Instant::now() < deadline, "no revocation request; log:\n{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (request_line, body) = revocation.split_once('\n').unwrap();
    assert_eq!(request_line, "POST /v1/revoke HTTP/1.1");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["version"], 2);
    assert_eq!(body["task"], "agent-b");
    assert_eq!(body["secret_name"], secret.display().to_string());
    assert!(body["secret_id"].is_u64(), "{body}");
    assert_eq!(body["rule"], "cross_task_reuse");
    let secret_value = std::fs::read_to_string(&secret).unwrap();
    assert!(!revocation.contains(&secret_value) && !revocation.contains(&token), "a secret value in the revocation");

    let served = daemon.findings().await.into_iter().find(|finding| finding["rule"] == "cross_task_reuse").unwrap();
    let audit_path = daemon.audit_path();
    // `stop` also checks that no planted value appears in the audit log.
    let (_home, _state) = daemon.stop().await;
    assert_eq!(std::fs::metadata(&audit_path).unwrap().permissions().mode() & 0o777, 0o600);
    let records: Vec<Value> = std::fs::read_to_string(&audit_path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record["version"], 2, "{record}");
        assert_eq!(record["seq"], index as u64 + 1, "seq counts every record: {record}");
        assert_eq!(record["host"], host_name());
        assert!(record["time"].as_str().is_some_and(|time| time.ends_with('Z')), "{record}");
    }
    let of = |kind: &'static str| records.iter().filter(move |record| record["type"] == kind);
    let changes: Vec<(String, String)> = of("task")
        .map(|record| (record["task"].as_str().unwrap().to_owned(), record["change"].as_str().unwrap().to_owned()))
        .collect();
    for expected in [("env-holder", "started"), ("env-holder", "ended"), ("agent-a", "started"), ("agent-b", "started")]
    {
        assert!(changes.contains(&(expected.0.to_owned(), expected.1.to_owned())), "{expected:?} not in {changes:?}");
    }
    let env_holder = of("task").find(|record| record["task"] == "env-holder").unwrap();
    assert_eq!(env_holder["env"], serde_json::json!(["GITHUB_TOKEN"]));
    let finding = of("finding").find(|record| record["rule"] == "cross_task_reuse").expect("the reuse is audited");
    assert_eq!(finding["task"], "agent-b");
    assert_eq!(finding["owner_task"], "agent-a");
    assert_eq!(finding["secret"]["name"], secret.display().to_string());
    let mut audited = finding.clone();
    audited.as_object_mut().unwrap().remove("seq");
    assert_eq!(served, audited, "the API serves the audited record, without the audit stream's seq");
    let actions: Vec<_> =
        finding["actions"].as_array().unwrap().iter().map(|action| action["action"].clone()).collect();
    assert_eq!(actions, ["kill_process", "revoke"]);
    assert_eq!(finding["actions"][1]["result"], "queued");
    let delivered =
        of("action").find(|record| record["action"] == "revoke").expect("the revocation's outcome is audited");
    assert_eq!(delivered["result"], "delivered");
    assert_eq!(delivered["task"], "agent-b");
}
