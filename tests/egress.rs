//! The egress proxy end to end: a real daemon, a local HTTPS upstream with a certificate the test
//! made (one HTTP/1.1 server, one HTTP/2 server), and real clients (Node's `https`, curl over
//! HTTP/2 and HTTP/1.1, Python's urllib, websockets and grpcio, Go's net/http) run as tasks'
//! processes with `credwatch task exec`. Task A is granted a token; another task's process sends
//! it, read from a file no sensor watches. The upstream records every byte it decrypts, so that
//! "refused before it leaves" is checked where it matters: the other side received nothing.
//! Needs root, node, curl, python3 (grpcio, websockets) and go.

mod common;

use std::{
    path::PathBuf,
    process::{Child, Command},
};

use common::{
    daemon::RunningDaemon,
    upstream::{
        clients::{Client, ClientRequest, Failed, Http, Mode, Reply},
        Proto, TestCa, Upstream,
    },
};
use monitor::daemon::control::{EgressMode, TaskRequest};
use serde_json::Value;

/// Every refusing rule set to `deny`, so that a refused client lives to print the proxy's 403.
const DENY: &str = "cross_task_reuse = [\"deny\"]\npost_task_reuse = [\"deny\"]\nunexpected_destination = [\"deny\"]\n";

/// A daemon whose proxy trusts the test's CA and sends the upstreams' ports to itself, and the
/// two upstreams. The TLS uprobes are off: they would see the clients' requests to the proxy too,
/// and their findings (judged after the write, where `deny` can only kill) would race the proxy's.
struct Rig {
    ca: TestCa,
    h1: Upstream,
    h2: Upstream,
    daemon: RunningDaemon,
    work: tempfile::TempDir,
    /// Task processes left running (task A's root): killed at the end.
    background: Vec<Child>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for child in &mut self.background {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Rig {
    fn start(actions: &str) -> Self {
        let work = tempfile::tempdir().unwrap();
        let ca = TestCa::new(work.path());
        let (h1, h2) = (Upstream::start(&ca, Proto::Http1), Upstream::start(&ca, Proto::Http2));
        let config = format!(
            "[tls]\nenabled = false\n\n[egress]\nupstream_ca = {:?}\nports = [443, {}, {}]\n\n[egress.hosts]\n\"api.test\" = \"127.0.0.1\"\n\
             \"other.test\" = \"127.0.0.1\"\n\n[actions]\n{actions}",
            ca.pem_path().display().to_string(),
            h1.port(),
            h2.port()
        );
        let daemon = RunningDaemon::start(&config);
        Self { ca, h1, h2, daemon, work, background: Vec::new() }
    }

    /// A fresh directory for one client's input files.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `credwatch task exec --id ID [task_args] -- COMMAND`, with `grant` (a variable and its
    /// value) in its environment and granted to the task.
    fn task_exec(&self, id: &str, grant: Option<(&str, &str)>, task_args: &[&str], command: &Command) -> Command {
        let mut outer = Command::new(env!("CARGO_BIN_EXE_credwatch"));
        outer.args(["task", "exec", "--id", id, "--socket"]).arg(&self.daemon.socket).args(task_args);
        if let Some((name, value)) = grant {
            outer.args(["--env", name]).env(name, value);
        }
        outer.arg("--").arg(command.get_program()).args(command.get_args());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => outer.env(name, value),
                None => outer.env_remove(name),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            outer.current_dir(dir);
        }
        outer
    }

    /// Runs `client` with `request` as the only process of a new task `id`, through the proxy.
    fn run(&self, client: Client, request: &ClientRequest, id: &str, grant: Option<(&str, &str)>, task_args: &[&str]) -> Result<Reply, Failed> {
        let dir = self.dir(id);
        let mut inner = client.command(request, &dir, self.ca.pem_path());
        inner.current_dir(&dir);
        client.run_command(self.task_exec(id, grant, task_args, &inner))
    }

    /// Task `id`, granted `name` = `token`, alive until the rig drops: the token stays bound to it.
    fn hold_task(&mut self, id: &str, name: &str, token: &str) {
        let mut sleep = Command::new("sleep");
        sleep.arg("600");
        self.background.push(self.task_exec(id, Some((name, token)), &[], &sleep).spawn().unwrap());
        let deadline = std::time::Instant::now() + common::patience(10);
        let task = loop {
            let tasks = block_on(self.daemon.client.list_tasks()).unwrap();
            if let Some(task) = tasks.as_array().into_iter().flatten().find(|task| task["id"] == id) {
                break task.clone();
            }
            assert!(std::time::Instant::now() < deadline, "task {id} was never registered");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(task["egress"], "proxy", "`task exec` proxies by default, and the task list says so");
    }

    fn findings(&self) -> Vec<Value> {
        block_on(self.daemon.findings())
    }

    /// The finding of `rule` about task `task`'s process (waits up to 10 s).
    fn finding(&self, rule: &str, task: &str) -> Value {
        block_on(self.daemon.finding(|finding| finding["rule"] == rule && finding["task"] == task))
    }
}

/// The API client is async; these tests are not.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

fn bearer(request: ClientRequest, token: &str) -> ClientRequest {
    request.header("Authorization", &format!("Bearer {token}"))
}

/// A refused request's answer: the proxy's own 403 naming the rule and a finding.
fn assert_refused(reply: &Result<Reply, Failed>, rule: &str, what: &str) {
    let reply = reply.as_ref().unwrap_or_else(|failed| panic!("{what}: {failed:?}"));
    assert_eq!(reply.status, "403", "{what}: refused by the proxy");
    let body: Value = serde_json::from_str(reply.body.trim()).unwrap_or_else(|_| panic!("{what}: a JSON reason"));
    assert_eq!(body["refused_by"], "credwatch", "{what}");
    assert_eq!(body["rule"], rule, "{what}");
    assert!(body["finding"].as_str().is_some_and(|id| id.ends_with(rule)), "{what}: names the finding");
}

fn assert_ok(reply: Result<Reply, Failed>, what: &str) -> Reply {
    let reply = reply.unwrap_or_else(|failed| panic!("{what}: {failed:?}"));
    assert!(reply.status == "200" || reply.status == "OK", "{what}: status {} {}", reply.status, reply.protocol);
    reply
}

/// The cases of the acceptance: each client against the upstream its protocol reaches, by the
/// name it can use (Go never proxies a loopback address; Node ignores the proxy variables and
/// resolves the name itself, so it dials the address and the kernel redirects it).
fn clients(rig: &Rig) -> Vec<(Client, String, &'static str)> {
    let (h1, h2) = (rig.h1.port(), rig.h2.port());
    vec![
        (Client::Node, format!("https://127.0.0.1:{h1}/node"), "HTTP/1.1"),
        (Client::Curl(Http::V2), format!("https://api.test:{h2}/curl-h2"), "HTTP/2"),
        (Client::Curl(Http::V1_1), format!("https://api.test:{h1}/curl-h1"), "HTTP/1.1"),
        (Client::Python, format!("https://api.test:{h1}/python"), "HTTP/1.1"),
        (Client::Go, format!("https://api.test:{h2}/go"), "HTTP/2"),
    ]
}

#[test]
fn another_tasks_token_is_refused_before_it_leaves_whatever_the_client() {
    let mut rig = Rig::start(DENY);
    let token = rig.daemon.plant_value();
    rig.hold_task("owner", "CWEGRESS_OWNER", &token);
    for (index, (client, url, _)) in clients(&rig).into_iter().enumerate() {
        let reply = rig.run(client, &bearer(ClientRequest::new(Mode::Request, url), &token), &format!("other-{index}"), None, &[]);
        assert_refused(&reply, "cross_task_reuse", &format!("{client:?} of another task"));
        let finding = rig.finding("cross_task_reuse", &format!("other-{index}"));
        assert_eq!(finding["via"], "egress", "{client:?}");
        assert_eq!(finding["owner_task"], "owner");
    }
    assert_eq!(rig.h1.request_count() + rig.h2.request_count(), 0, "nothing was forwarded");
    assert!(!rig.h1.received_bytes_contain(token.as_bytes()) && !rig.h2.received_bytes_contain(token.as_bytes()));

    // The owner's own processes send the same requests: they arrive unchanged.
    for (index, (client, url, protocol)) in clients(&rig).into_iter().enumerate() {
        let id = format!("owner-{index}");
        let reply = rig.run(client, &bearer(ClientRequest::new(Mode::Request, url.clone()), &token), &id, Some(("CWEGRESS_OWNER", &token)), &[]);
        let reply = assert_ok(reply, &format!("{client:?} of the owner"));
        assert_eq!(reply.body.trim(), "ok");
        let path = url.rsplit('/').next().unwrap();
        let upstream = if protocol == "HTTP/2" { &rig.h2 } else { &rig.h1 };
        let seen = upstream.requests().into_iter().find(|request| request.target == format!("/{path}"));
        let seen = seen.unwrap_or_else(|| panic!("{client:?}: the upstream never saw /{path}"));
        assert_eq!(seen.header("authorization"), Some(format!("Bearer {token}").as_str()), "{client:?}: unchanged");
        assert_eq!(seen.protocol, protocol, "{client:?}");
    }
    let forwarded = rig.daemon.scrape("credwatch_egress_requests_total{result=\"forwarded\"}");
    assert_eq!(forwarded, 5);
    assert_eq!(rig.daemon.scrape("credwatch_egress_requests_total{result=\"refused\"}"), 5);
}

#[test]
fn a_token_in_the_query_a_json_body_a_custom_header_or_a_split_head_is_refused() {
    let mut rig = Rig::start(DENY);
    let token = rig.daemon.plant_value();
    rig.hold_task("owner", "CWEGRESS_PARTS", &token);
    let h1 = rig.h1.port();
    let query = ClientRequest::new(Mode::Request, format!("https://api.test:{h1}/q?page=2&access_token={token}"));
    assert_refused(&rig.run(Client::Python, &query, "query", None, &[]), "cross_task_reuse", "query");
    let body = ClientRequest::new(Mode::Request, format!("https://api.test:{h1}/body"))
        .header("Content-Type", "application/json")
        .post(&format!("{{\"auth\": {{\"token\": \"{token}\"}}}}"));
    assert_refused(&rig.run(Client::Python, &body, "json-body", None, &[]), "cross_task_reuse", "JSON body");
    let path = ClientRequest::new(Mode::Request, format!("https://api.test:{h1}/hooks/{token}/send"));
    assert_refused(&rig.run(Client::Go, &path, "path", None, &[]), "cross_task_reuse", "a path segment");
    let custom = ClientRequest::new(Mode::Request, format!("https://api.test:{h1}/custom")).header("PRIVATE-TOKEN", &token);
    assert_refused(&rig.run(Client::Curl(Http::V1_1), &custom, "custom-header", None, &[]), "cross_task_reuse", "PRIVATE-TOKEN");

    // A head in two writes, the token split across them, on a raw TLS socket that knows nothing
    // of proxies: the kernel sends it to the proxy, which reads the whole head.
    let dir = rig.dir("split");
    std::fs::write(dir.join("token"), &token).unwrap();
    let mut split = Command::new("/usr/bin/python3");
    split.arg("-c").arg(SPLIT_HEAD).arg(h1.to_string()).current_dir(&dir);
    let output = rig.task_exec("split", None, &[], &split).output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.starts_with("HTTP/1.1 403"), "the split head was refused: {printed:?}");
    rig.finding("cross_task_reuse", "split");

    assert_eq!(rig.h1.request_count(), 0);
    assert!(!rig.h1.received_bytes_contain(token.as_bytes()), "no byte of the token reached the upstream");
}

/// argv[1]: the port. Sends `GET /split` with `Authorization: Bearer TOKEN` cut in the middle of
/// the token into two writes, 50 ms apart, and prints the first line of the answer.
const SPLIT_HEAD: &str = r#"
import socket, ssl, sys, time
port = int(sys.argv[1])
token = open("token").read()
context = ssl.create_default_context()
with socket.create_connection(("127.0.0.1", port)) as raw:
    with context.wrap_socket(raw, server_hostname="api.test") as tls:
        head = f"GET /split HTTP/1.1\r\nHost: api.test:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        cut = head.index(token) + len(token) // 2
        tls.sendall(head[:cut].encode())
        time.sleep(0.05)
        tls.sendall(head[cut:].encode())
        print(tls.recv(4096).decode(errors="replace").splitlines()[0], flush=True)
"#;

#[test]
fn streams_websockets_and_grpc_pass_as_they_come_once_judged() {
    let mut rig = Rig::start(DENY);
    let token = rig.daemon.plant_value();
    rig.hold_task("owner", "CWEGRESS_STREAM", &token);
    let grant = Some(("CWEGRESS_STREAM", token.as_str()));
    let (h1, h2) = (rig.h1.port(), rig.h2.port());
    for (client, url) in [
        (Client::Node, format!("https://127.0.0.1:{h1}/sse?n=5&gap_ms=300")),
        (Client::Python, format!("https://api.test:{h1}/sse?n=5&gap_ms=300")),
        (Client::Go, format!("https://api.test:{h2}/sse?n=5&gap_ms=300")),
    ] {
        let request = bearer(ClientRequest::new(Mode::Sse, url), &token);
        let reply = assert_ok(rig.run(client, &request, &format!("sse-{client:?}").to_lowercase(), grant, &[]), "SSE");
        let events = reply.events();
        assert_eq!(events.len(), 5, "{client:?}: every event");
        assert!(events[0].delay_micros < 50_000, "{client:?}: the first event arrived {} µs after it was sent", events[0].delay_micros);
        // Each before the next was sent: nothing held them back.
        for event in &events[1..] {
            assert!(event.delay_micros < 300_000, "{client:?}: event {} arrived {} µs after it was sent", event.index, event.delay_micros);
        }
    }
    // websockets 10.4 has no proxy support: the kernel sends it to the proxy.
    let ws = bearer(ClientRequest::new(Mode::Ws, format!("wss://127.0.0.1:{h1}/ws")), &token).post("hello through the proxy");
    let reply = rig.run(Client::Python, &ws, "websocket", grant, &[]);
    let reply = reply.unwrap_or_else(|failed| panic!("WebSocket: {failed:?}"));
    assert_eq!(reply.status, "101");
    assert_eq!(reply.body.trim(), "hello through the proxy");
    let grpc = bearer(ClientRequest::new(Mode::Grpc, format!("https://api.test:{h2}/grpc.Echo/Say")), &token).post("ping");
    let reply = rig.run(Client::Python, &grpc, "grpc", grant, &[]);
    let reply = assert_ok(reply, &format!("gRPC; the daemon's log:\n{}", rig.daemon.log_text()));
    assert_eq!(reply.body.trim(), "ping");
    assert!(rig.findings().is_empty(), "the owner's own streams are no finding: {:?}", rig.findings());
}

#[test]
fn a_host_outside_the_allow_list_by_name_and_a_token_after_its_task_are_refused() {
    let mut rig = Rig::start(DENY);
    let token = rig.daemon.plant_value();
    let grant = Some(("CWEGRESS_ALLOW", token.as_str()));
    let h1 = rig.h1.port();
    let allowed = bearer(ClientRequest::new(Mode::Request, format!("https://api.test:{h1}/allowed")), &token);
    assert_ok(rig.run(Client::Python, &allowed, "named", grant, &["--allow", "api.test"]), "the allowed name");
    let outside = bearer(ClientRequest::new(Mode::Request, format!("https://other.test:{h1}/outside")), &token);
    let reply = rig.run(Client::Python, &outside, "named-2", grant, &["--allow", "*.api.test", "--allow", "api.test"]);
    assert_refused(&reply, "unexpected_destination", "a name outside the allow list");
    let finding = rig.finding("unexpected_destination", "named-2");
    assert_eq!(finding["server"], format!("other.test:{h1}"));
    assert_eq!(finding["destination"], format!("127.0.0.1:{h1}"), "the address the proxy resolved");
    assert_eq!(rig.h1.requests().iter().filter(|request| request.target == "/outside").count(), 0);

    // A process of a task that has ended sends the task's token: post_task_reuse. The task is
    // registered through the API (proxied, granted the variable) with a gated shell as its root,
    // ended, and only then does the shell run the client.
    let after = rig.daemon.plant_value();
    let dir = rig.dir("survivor");
    let request = bearer(ClientRequest::new(Mode::Request, format!("https://api.test:{h1}/after")), &after);
    let proxy = rig.daemon_status()["egress"].clone();
    let proxy_url = format!("http://{}", proxy["address"].as_str().unwrap());
    let bundle = PathBuf::from(proxy["ca"]["bundle"].as_str().unwrap());
    let client = Client::Python.command(&request, &dir, &bundle);
    let env = [("CWEGRESS_AFTER", after.as_str()), ("HTTPS_PROXY", proxy_url.as_str())];
    // The client does not carry the variable: starting with it after the task is itself reuse.
    let gated = common::Gated::spawn(&format!("unset CWEGRESS_AFTER; {}", shell_words(&client)), &dir, &env);
    let request = TaskRequest {
        env: vec!["CWEGRESS_AFTER".to_owned()],
        egress: EgressMode::Proxy,
        ..TaskRequest::new("ended", gated.pid)
    };
    block_on(rig.daemon.client.start_task(&request)).unwrap();
    block_on(rig.daemon.client.end_task("ended")).unwrap();
    let (status, printed) = gated.release();
    assert!(printed.starts_with("403 "), "refused after the task: {status} {printed:?}");
    assert!(printed.contains("post_task_reuse"));
    rig.finding("post_task_reuse", "ended");
    assert_eq!(rig.h1.requests().iter().filter(|request| request.target == "/after").count(), 0);
    assert!(!rig.h1.received_bytes_contain(after.as_bytes()));
}

/// A command as `sh -c` text, with the variables it sets (those it removes are not set here).
fn shell_words(command: &Command) -> String {
    let quote = |text: &std::ffi::OsStr| format!("'{}'", text.to_string_lossy().replace('\'', "'\\''"));
    let env: Vec<String> = command
        .get_envs()
        .filter_map(|(name, value)| Some(format!("{}={}", name.to_string_lossy(), quote(value?))))
        .collect();
    let words: Vec<String> = std::iter::once(command.get_program()).chain(command.get_args()).map(quote).collect();
    format!("{} {}", env.join(" "), words.join(" "))
}

#[test]
fn clients_that_ignore_the_proxy_are_sent_to_it_and_other_ways_out_are_refused() {
    let mut rig = Rig::start(DENY);
    let token = rig.daemon.plant_value();
    rig.hold_task("owner", "CWEGRESS_BYPASS", &token);
    let h1 = rig.h1.port();
    // The proxy variables unset, straight to the upstream's address: the kernel redirects it.
    let request = bearer(ClientRequest::new(Mode::Request, format!("https://127.0.0.1:{h1}/bypass")), &token);
    let dir = rig.dir("bypass");
    let mut inner = Client::Python.command(&request, &dir, rig.ca.pem_path());
    let mut unset = Command::new("env");
    for name in ["-u", "HTTPS_PROXY", "-u", "https_proxy", "-u", "HTTP_PROXY", "-u", "http_proxy"] {
        unset.arg(name);
    }
    unset.arg(inner.get_program()).args(inner.get_args()).current_dir(&dir);
    for (name, value) in inner.get_envs() {
        if let Some(value) = value {
            unset.env(name, value);
        }
    }
    inner = unset;
    let reply = Client::Python.run_command(rig.task_exec("bypass", None, &[], &inner));
    assert_refused(&reply, "cross_task_reuse", "a client that ignores the proxy");
    assert!(!rig.h1.received_bytes_contain(token.as_bytes()));

    // Another TCP port and a UDP datagram, from a task whose allow list names neither.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = listener.local_addr().unwrap().port();
    let mut probe = Command::new("/usr/bin/python3");
    probe.arg("-c").arg(OTHER_WAYS).arg(other.to_string()).arg(h1.to_string());
    let output = rig.task_exec("other-ways", None, &["--allow", "api.test"], &probe).output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(printed.trim(), "tcp 1\nudp 1", "both refused with EPERM (errno 1)");
    // A task without an allow list may reach other TCP ports, but no UDP but DNS (QUIC included).
    let output = rig.task_exec("unrestricted", None, &[], &probe).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "tcp 0\nudp 1");
    // A process in no task gets nothing from the proxy: its connection is closed unread.
    let status = rig.daemon_status();
    let proxy = status["egress"]["address"].as_str().unwrap().to_owned();
    let mut stranger = std::net::TcpStream::connect(&proxy).unwrap();
    std::io::Write::write_all(&mut stranger, b"GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stranger, &mut answer);
    assert!(answer.is_empty(), "the proxy answered a process of no task");
    assert!(rig.daemon.scrape("credwatch_egress_requests_total{result=\"unidentified\"}") >= 1);
}

/// argv: a TCP port nothing allows, the upstream's port. Prints the errno of a TCP connect to
/// the first and of a UDP datagram to the second (0: it went through).
const OTHER_WAYS: &str = r#"
import errno, socket, sys
def attempt(kind, action):
    try:
        action()
        print(kind, 0)
    except OSError as error:
        print(kind, error.errno)
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
attempt("tcp", lambda: tcp.connect(("127.0.0.1", int(sys.argv[1]))))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt("udp", lambda: udp.sendto(b"x", ("127.0.0.1", int(sys.argv[2]))))
"#;

impl Rig {
    fn daemon_status(&self) -> Value {
        block_on(self.daemon.client.status()).unwrap()
    }
}
