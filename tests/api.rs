//! The task API over a real Unix socket, with a fake daemon: a task in the test that answers
//! control messages from a map, so this tests the API layer and `credwatch task exec` alone (the
//! real daemon's end-to-end tests are elsewhere). Needs root: one test drops to uid 65534.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{Read as _, Write as _},
    os::{
        fd::FromRawFd as _,
        unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
    time::Duration,
};

use monitor::{
    api::{self, client::ApiClient, ApiConfig, ApiError, ApiServer},
    daemon::{
        control::{ControlError, ControlMessage, ControlRequest, TaskRequest, TokenRequest},
        feed::FindingsFeed,
    },
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const NOBODY: u32 = 65534;
/// The variable `task exec` tests set, which the fake daemon looks for in the held child.
const MARKER: &str = "CREDWATCH_TEST_MARKER";

/// What the fake daemon saw, for the tests to check afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Started {
        id: String,
        root_pid: Option<u32>,
        secrets: Vec<String>,
        caller_uid: u32,
        marker_in_environ: bool,
        exe: Option<PathBuf>,
    },
    Ended {
        id: String,
        root_alive: bool,
    },
    Token {
        task: String,
    },
}

struct Fake {
    server: ApiServer,
    client: ApiClient,
    feed: FindingsFeed,
    seen: Arc<Mutex<Vec<Seen>>>,
    dir: tempfile::TempDir,
}

/// A refusal counter of the daemon's own metrics.
fn refused() -> prometheus::IntCounterVec {
    monitor::daemon::metrics::Metrics::default().api_refused
}

impl Fake {
    /// A server on a fresh socket with a fake daemon; `marker` is the value `task exec` tests set.
    async fn start(allow_gids: Vec<u32>, marker: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = ApiConfig { socket: dir.path().join("run/api.sock"), allow_uids: vec![0], allow_gids };
        let (control, requests) = mpsc::channel(8);
        let seen = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(fake_daemon(requests, Arc::clone(&seen), marker));
        let feed = FindingsFeed::default();
        let server = api::serve(&config, control, feed.clone(), refused()).await.unwrap();
        Self { client: ApiClient::new(&config.socket), server, feed, seen, dir }
    }

    fn socket(&self) -> &Path {
        self.server.socket()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets any uid reach the socket, so that the peer check is what refuses it. For tests
    /// only: the server makes it 0600.
    fn open_to_everyone(&self) {
        for (path, mode) in [(self.dir.path(), 0o755), (self.socket().parent().unwrap(), 0o755), (self.socket(), 0o666)]
        {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// Answers like the daemon would, from a map of active tasks. A caller whose pid is a task's
/// root is refused, as the daemon refuses callers inside a task.
async fn fake_daemon(
    mut requests: mpsc::Receiver<ControlMessage>,
    seen: Arc<Mutex<Vec<Seen>>>,
    marker: Option<String>,
) {
    let mut tasks: BTreeMap<String, TaskRequest> = BTreeMap::new();
    while let Some(ControlMessage { request, reply }) = requests.recv().await {
        let in_task = |pid: u32| tasks.values().find(|task| task.root_pid == Some(pid)).map(|task| task.id.clone());
        let answer = match request {
            ControlRequest::StartTask { request, caller, hosts: _ } => {
                if let Some(task) = in_task(caller.pid) {
                    Err(ControlError::Forbidden(format!("pid {} is in task {task}", caller.pid)))
                } else if tasks.contains_key(&request.id) {
                    Err(ControlError::Conflict(format!("task {} is already active", request.id)))
                } else {
                    let root = request.root_pid;
                    seen.lock().unwrap().push(Seen::Started {
                        id: request.id.clone(),
                        root_pid: root,
                        secrets: request.secrets.clone(),
                        caller_uid: caller.uid,
                        marker_in_environ: root.is_some_and(|pid| environ_has(pid, MARKER, marker.as_deref())),
                        exe: root.and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok()),
                    });
                    let reply = json!({"id": request.id, "root_pid": root, "state": "active"});
                    tasks.insert(request.id.clone(), request);
                    Ok(reply)
                }
            }
            ControlRequest::EndTask { id, caller } => match (in_task(caller.pid), tasks.remove(&id)) {
                (Some(task), _) => Err(ControlError::Forbidden(format!("pid {} is in task {task}", caller.pid))),
                (None, None) => Err(ControlError::NotFound(id)),
                (None, Some(task)) => {
                    let root_alive = task.root_pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                    seen.lock().unwrap().push(Seen::Ended { id: id.clone(), root_alive });
                    Ok(json!({"id": id, "state": "ended"}))
                }
            },
            ControlRequest::ListTasks => Ok(json!({"tasks": tasks.values().collect::<Vec<_>>()})),
            ControlRequest::RegisterToken { request, caller: _ } => {
                let TokenRequest { task, label, value: _, decoy: _ } = request;
                if tasks.contains_key(&task) {
                    seen.lock().unwrap().push(Seen::Token { task: task.clone() });
                    Ok(json!({"task": task, "label": label}))
                } else {
                    Err(ControlError::NotFound(task))
                }
            }
            ControlRequest::Status => Ok(json!({"tier": "fake", "tasks": {"active": tasks.len()}})),
            ControlRequest::Baselines => Ok(json!({})),
            ControlRequest::ResetBaselines { request, caller: _ } => Ok(json!({ "reset": request.secret })),
        };
        let _ = reply.send(answer);
    }
}

fn environ_has(pid: u32, name: &str, value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let wanted = format!("{name}={value}");
    environ.split(|&byte| byte == 0).any(|entry| entry == wanted.as_bytes())
}

fn random_hex() -> String {
    let mut bytes = [0_u8; 16];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// One raw HTTP/1.1 request; returns the status and the body as JSON (or as a string).
async fn raw(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let socket = socket.to_owned();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
        // A server refusing an oversized body answers and closes before reading it all, so a
        // failed write (or a reset after the answer) still leaves the answer to read.
        let _ = stream.write_all(request.as_bytes());
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        response
    })
    .await
    .unwrap();
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(response);
    let status = text.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())))
}

fn error_text(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_else(|| panic!("no error message in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_registers_lists_and_ends_tasks() {
    let fake = Fake::start(vec![], None).await;
    let mode = std::fs::metadata(fake.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let request = TaskRequest {
        secrets: vec!["/etc/hostname".into()],
        allow: Some(vec!["10.0.0.0/8".into()]),
        ttl: Some(Duration::from_secs(900)),
        owner: Some("agent".into()),
        ..TaskRequest::new("build-7", 1)
    };
    let reply = fake.client.start_task(&request).await.unwrap();
    assert_eq!(reply["id"], "build-7");
    let again = fake.client.start_task(&request).await.unwrap_err();
    assert_eq!(again.status().map(|status| status.as_u16()), Some(409));

    let list = fake.client.list_tasks().await.unwrap();
    assert_eq!(list["tasks"][0]["id"], "build-7");
    assert_eq!(list["tasks"][0]["ttl"], "900s");
    assert_eq!(fake.client.status().await.unwrap()["tasks"]["active"], 1);

    assert_eq!(fake.client.end_task("build-7").await.unwrap()["state"], "ended");
    let gone = fake.client.end_task("build-7").await.unwrap_err();
    assert_eq!(gone.status().map(|status| status.as_u16()), Some(404));
    assert!(gone.to_string().contains("no such task: build-7"), "{gone}");
    assert_eq!(fake.client.list_tasks().await.unwrap(), json!({"tasks": []}));

    let (status, body) = raw(fake.socket(), "GET", "/v1/nothing", "").await;
    assert_eq!((status, error_text(&body)), (404, "no such endpoint: /v1/nothing"));
    let (status, _) = raw(fake.socket(), "PUT", "/v1/tasks", "").await;
    assert_eq!(status, 405);
    let (status, _) = raw(fake.socket(), "POST", "/v1/tasks", &" ".repeat((1 << 20) + 1)).await;
    assert_eq!(status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_problem() {
    let fake = Fake::start(vec![], None).await;
    let (status, body) = raw(fake.socket(), "POST", "/v1/tasks", "{\"id\": \"t\",\n\"ttl\": }").await;
    assert_eq!(status, 400);
    assert_eq!(error_text(&body), "malformed JSON at line 2 column 8: expected value");

    for (request, field, message) in [
        (r#"{"id": "t", "ttl": "15x"}"#, "ttl", r#"ttl: "15x" has unknown unit"#),
        (r#"{"id": "t", "root_pid": "abc"}"#, "root_pid", r#"root_pid: invalid type: string "abc", expected u32"#),
        (r#"{"id": "t", "secret": ["/x"]}"#, "secret", "unknown field `secret`, expected one of"),
        (r#"{"root_pid": 1}"#, "id", "missing field `id`"),
    ] {
        let (status, body) = raw(fake.socket(), "POST", "/v1/tasks", request).await;
        assert_eq!((status, body["field"].as_str()), (400, Some(field)), "{body}");
        assert!(error_text(&body).starts_with(message), "{body}");
    }
    assert_eq!(fake.seen(), [], "no bad request reached the daemon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_inside_a_task_is_forbidden() {
    let fake = Fake::start(vec![], None).await;
    let ours = TaskRequest::new("ours", std::process::id());
    fake.client.start_task(&ours).await.unwrap();
    let refused = fake.client.end_task("ours").await.unwrap_err();
    assert_eq!(refused.status().map(|status| status.as_u16()), Some(403));
    assert!(refused.to_string().starts_with("forbidden: pid"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_errors_never_contain_the_value() {
    let fake = Fake::start(vec![], None).await;
    let value = format!("tok_{}", random_hex());
    let bodies = [
        // A number: serde would quote it.
        (r#"{"task": "t", "label": "l", "value": 123456789}"#.to_owned(), 400),
        // The value pasted as a key.
        (format!(r#"{{"task": "t", "label": "l", "{value}": "x"}}"#), 400),
        (format!(r#"{{"task": "t", "label": "l", "value": "{value}" "#), 400),
        (format!(r#"{{"task": "t", "label": "l", "value": ["{value}"]}}"#), 400),
        // Well formed, for a task the daemon does not know.
        (format!(r#"{{"task": "t", "label": "l", "value": "{value}"}}"#), 404),
    ];
    for (index, (body, expected)) in bodies.iter().enumerate() {
        let (status, reply) = raw(fake.socket(), "POST", "/v1/tokens", body).await;
        assert_eq!(status, *expected, "body #{index}");
        let reply = reply.to_string();
        assert!(!reply.contains(&value) && !reply.contains("123456789"), "the reply to body #{index} quotes the token");
    }

    let task = TaskRequest::new("t", 1);
    fake.client.start_task(&task).await.unwrap();
    let token = TokenRequest { task: "t".into(), label: "vault lease 1".into(), value: Some(value.clone()), decoy: false };
    let reply = fake.client.register_token(&token).await.unwrap();
    assert!(!reply.to_string().contains(&value));
    assert!(fake.seen().contains(&Seen::Token { task: "t".into() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_follow_streams_new_lines() {
    let fake = Fake::start(vec![], None).await;
    fake.feed.publish(Arc::from(r#"{"n":1}"#));
    let mut all = fake.client.findings(false).await.unwrap();
    assert_eq!(all.next_line().await.unwrap().as_deref(), Some(r#"{"n":1}"#));
    assert_eq!(all.next_line().await.unwrap(), None);

    let mut follow = fake.client.findings(true).await.unwrap();
    // The reply's headers have arrived, so the server has subscribed: this is a live line.
    fake.feed.publish(Arc::from(r#"{"n":2}"#));
    for expected in [r#"{"n":1}"#, r#"{"n":2}"#] {
        let line = tokio::time::timeout(Duration::from_secs(5), follow.next_line()).await.unwrap().unwrap();
        assert_eq!(line.as_deref(), Some(expected));
    }

    // Stopping the server ends the stream.
    fake.server.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), follow.next_line()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_control_channel_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let config = ApiConfig { socket: dir.path().join("api.sock"), ..ApiConfig::default() };
    let (control, requests) = mpsc::channel(1);
    drop(requests);
    let _server = api::serve(&config, control, FindingsFeed::default(), refused()).await.unwrap();
    let error = ApiClient::new(&config.socket).status().await.unwrap_err();
    assert_eq!(error.status().map(|status| status.as_u16()), Some(503));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_file_is_managed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("new/dir/api.sock");
    let config = ApiConfig { socket: socket.clone(), ..ApiConfig::default() };
    let serve = || api::serve(&config, mpsc::channel(1).0, FindingsFeed::default(), refused());

    let server = serve().await.unwrap();
    let parent = std::fs::metadata(socket.parent().unwrap()).unwrap().permissions().mode();
    assert_eq!(parent & 0o777, 0o755);
    assert!(matches!(serve().await, Err(ApiError::InUse { .. })), "a live socket is not replaced");
    drop(server);
    assert!(!socket.exists(), "dropping the server removes its socket");

    // A socket left behind by a daemon that died.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let server = serve().await.unwrap();
    assert!(ApiClient::new(&socket).list_tasks().await.is_err_and(|error| error.status().is_some()));
    server.shutdown().await;
    assert!(!socket.exists());

    std::fs::write(&socket, "not a socket").unwrap();
    assert!(matches!(serve().await, Err(ApiError::NotASocket { .. })));

    let missing = ApiClient::new(dir.path().join("missing.sock")).status().await.unwrap_err().to_string();
    assert!(missing.contains("missing.sock") && missing.contains("is `credwatch run` running?"), "{missing}");
}

/// Forks a child that becomes uid and gid 65534, sends `GET /v1/status` and returns the raw
/// response. The child makes only async-signal-safe calls: the test process has threads.
fn request_as_nobody(socket: &Path) -> Vec<u8> {
    let path = CString::new(socket.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed sockaddr_un is valid; the path is copied in below, within bounds.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes_with_nul();
    assert!(bytes.len() <= address.sun_path.len());
    for (slot, &byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = byte as libc::c_char;
    }
    let request = b"GET /v1/status HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    let mut pipe = [0; 2];
    // SAFETY: plain syscalls; between fork and _exit the child only makes async-signal-safe calls
    // on memory prepared before the fork.
    unsafe {
        assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            libc::close(pipe[0]);
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                libc::_exit(10);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let length = size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, (&raw const address).cast(), length) != 0 {
                libc::_exit(11);
            }
            libc::write(fd, request.as_ptr().cast(), request.len());
            let mut buffer = [0_u8; 4096];
            loop {
                let read = libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len());
                if read <= 0 {
                    break;
                }
                libc::write(pipe[1], buffer.as_ptr().cast(), read as usize);
            }
            libc::_exit(0);
        }
        libc::close(pipe[1]);
        let mut response = Vec::new();
        std::fs::File::from_raw_fd(pipe[0]).read_to_end(&mut response).unwrap();
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &raw mut status, 0), pid);
        assert_eq!(libc::WEXITSTATUS(status), 0, "the unprivileged child failed (10: setuid, 11: connect)");
        response
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_not_allowlisted_gets_403() {
    let fake = Fake::start(vec![], None).await;
    fake.open_to_everyone();

    let socket = fake.socket().to_owned();
    let response = tokio::task::spawn_blocking(move || request_as_nobody(&socket)).await.unwrap();
    let (status, body) = parse_response(&response);
    assert_eq!(status, 403, "{body}");
    assert!(error_text(&body).starts_with("uid 65534 (gid 65534) may not use the task API"), "{body}");
    assert_eq!(fake.seen(), [], "the refused request never reached the daemon");

    // The same peer is admitted when its group is allowlisted.
    let by_group = Fake::start(vec![NOBODY], None).await;
    by_group.open_to_everyone();
    let socket = by_group.socket().to_owned();
    let response = tokio::task::spawn_blocking(move || request_as_nobody(&socket)).await.unwrap();
    assert_eq!(parse_response(&response), (200, json!({"tier": "fake", "tasks": {"active": 0}})));
}

/// Runs `credwatch` with `args` (and the marker variable set) to completion.
async fn credwatch(args: Vec<String>, marker: &str, dir: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_credwatch"));
    command.args(args).env(MARKER, marker).current_dir(dir);
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

fn exec_args(socket: &Path, id: &str, script: &str) -> Vec<String> {
    let socket = socket.to_str().unwrap();
    // Direct: the fake daemon has no egress proxy to point the command at.
    ["task", "exec", "--id", id, "--socket", socket, "--egress", "direct", "--env", MARKER, "--secret", "key", "--", "sh", "-c", script]
        .map(str::to_owned)
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_exec_registers_the_held_child_and_ends_the_task() {
    let marker = random_hex();
    let fake = Fake::start(vec![], Some(marker.clone())).await;
    let work = tempfile::tempdir().unwrap();

    let output = credwatch(exec_args(fake.socket(), "exec-1", "echo $$ > pid; exit 3"), &marker, work.path()).await;
    assert_eq!(output.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&output.stderr));

    let seen = fake.seen();
    let [Seen::Started { id, root_pid: Some(root), secrets, caller_uid: 0, marker_in_environ, exe }, Seen::Ended { id: ended, root_alive }] =
        seen.as_slice()
    else {
        panic!("the daemon saw {seen:?}");
    };
    assert_eq!((id.as_str(), ended.as_str()), ("exec-1", "exec-1"));
    assert!(marker_in_environ, "the registered pid has the command's environment");
    let credwatch = std::fs::canonicalize(env!("CARGO_BIN_EXE_credwatch")).unwrap();
    assert_eq!(exe.as_deref(), Some(credwatch.as_path()), "registered before the exec");
    let shell_pid: u32 = std::fs::read_to_string(work.path().join("pid")).unwrap().trim().parse().unwrap();
    assert_eq!(shell_pid, *root, "the registered pid is the one that ran the command");
    assert!(!root_alive, "the task ends after the command exited");
    let key = work.path().join("key");
    assert_eq!(secrets, &[key.to_str().unwrap()], "relative secret paths are sent absolute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_exec_does_not_run_the_command_when_registration_fails() {
    let fake = Fake::start(vec![], None).await;
    let work = tempfile::tempdir().unwrap();
    let taken = TaskRequest::new("taken", 1);
    fake.client.start_task(&taken).await.unwrap();

    let output = credwatch(exec_args(fake.socket(), "taken", "touch ran"), "", work.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("registering task taken: conflict: task taken is already active (HTTP 409)"), "{stderr}");
    assert!(!work.path().join("ran").exists(), "the command never ran");

    let missing = work.path().join("missing.sock");
    let output = credwatch(exec_args(&missing, "t", "touch ran"), "", work.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("is `credwatch run` running?"), "{stderr}");
    assert!(!work.path().join("ran").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_exec_forwards_sigterm_and_still_ends_the_task() {
    let fake = Fake::start(vec![], None).await;
    let work = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_credwatch"));
    command.args(exec_args(fake.socket(), "long", "exec sleep 30")).current_dir(work.path());
    let mut child = command.spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.seen().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(
        matches!(fake.seen().last(), Some(Seen::Ended { id, root_alive: false }) if id == "long"),
        "{:?}",
        fake.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_render_the_replies() {
    let fake = Fake::start(vec![], None).await;
    let work = tempfile::tempdir().unwrap();
    let socket = fake.socket().to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let args: Vec<String> =
            args.iter().map(|arg| (*arg).to_owned()).chain(["--socket".into(), socket.clone()]).collect();
        credwatch(args, "", work.path())
    };
    let stdout = |output: &Output| {
        assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout.clone()).unwrap()
    };

    assert_eq!(stdout(&run(&["task", "list"]).await), "no tasks\n");
    let started = stdout(&run(&["task", "start", "--id", "ci-1", "--pid", "1", "--ttl", "1h"]).await);
    assert!(started.contains("id        ci-1\n"), "{started}");
    let list = stdout(&run(&["task", "list"]).await);
    assert!(list.starts_with("ID  "), "{list}");
    assert!(list.lines().nth(1).is_some_and(|row| row.starts_with("ci-1 ") && row.contains("3600s")), "{list}");
    let json: Value = serde_json::from_str(&stdout(&run(&["task", "list", "--json"]).await)).unwrap();
    assert_eq!(json["tasks"][0]["id"], "ci-1");
    assert_eq!(stdout(&run(&["status"]).await), "tasks.active  1\ntier          fake\n");

    fake.feed.publish(Arc::from(
        r#"{"rule":"cross_task_reuse","severity":"critical","process":{"pid":4242,"start_time":1},"task":"b","secret":{"id":1,"name":"/root/.aws/credentials","fingerprint_prefix":"1a2b3c4d"},"detail":"b used a's secret"}"#,
    ));
    let findings = stdout(&run(&["findings"]).await);
    let row = findings.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split("  ").map(str::trim).filter(|cell| !cell.is_empty()).collect();
    assert_eq!(
        cells,
        ["cross_task_reuse", "critical", "b", "4242", "/root/.aws/credentials", "1a2b3c4d", "b used a's secret"],
        "{findings}"
    );
    assert!(stdout(&run(&["findings", "--json"]).await).starts_with(r#"{"rule":"cross_task_reuse""#));

    assert!(stdout(&run(&["task", "end", "ci-1"]).await).contains("state  ended"));
    let refused = run(&["task", "end", "ci-1"]).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no such task: ci-1 (HTTP 404)"), "{stderr}");
}
