//! No map or buffer an agent can fill to escape, on the real kernel and the real daemon: each
//! kernel map is given a small size and filled, then the failure is counted, a critical
//! `monitor_blind` finding is raised, and a bound secret opened by another task's process is
//! still killed before it reads a byte. Needs root.

mod common;

use std::{os::unix::process::ExitStatusExt as _, path::Path, process::Command};

use common::{daemon::RunningDaemon, wait_for_comm, Gated};
use monitor::daemon::control::TaskRequest;
use serde_json::Value;

fn granted(id: &str, root: u32, secrets: &[&Path]) -> TaskRequest {
    TaskRequest { secrets: secrets.iter().map(|secret| secret.display().to_string()).collect(), ..TaskRequest::new(id, root) }
}

/// Waits for the `monitor_blind` finding about `map`, then checks the status counts it.
async fn blind(daemon: &RunningDaemon, map: &str) -> Value {
    let subject = format!("kernel map {map}");
    let finding = daemon.finding(|finding| finding["rule"] == "monitor_blind" && finding["secret"]["name"] == subject).await;
    assert_eq!(finding["severity"], "critical");
    let status = daemon.client.status().await.unwrap();
    let maps = status["kernel"]["maps"].as_array().unwrap();
    let counted = maps.iter().find(|entry| entry["map"] == map).unwrap();
    assert!(counted["write_failures"].as_u64().unwrap() > 0, "{status:#}");
    finding
}

/// A process of a new task `intruder` reads `secret` (bound to another task): it must be killed
/// at the open with nothing read.
async fn reuse_is_still_killed(daemon: &RunningDaemon, secret: &Path, value: &str) {
    let reader = Gated::spawn(&format!("exec cat {}", secret.display()), daemon.home.path(), &[]);
    daemon.client.start_task(&TaskRequest::new("intruder", reader.pid)).await.unwrap();
    let (status, output) = reader.release();
    assert_eq!(status.signal(), Some(9), "the reuser was killed at the open: {status}");
    assert!(output.is_empty() && !output.contains(value), "the reuser read {} bytes", output.len());
}

/// A task root that forks `children` processes which live on (each needs a `TASK_OF` entry,
/// and a `HOLDERS` one when the root holds a secret), writing their pids to `children` in HOME.
fn many_children(prelude: &str, children: u32, home: &Path) -> Gated {
    let fork = format!("for i in $(seq {children}); do sleep 120 >/dev/null & echo $! >> children; done; wait");
    Gated::spawn(&format!("{prelude}; {fork}"), home, &[])
}

/// Kills what a `many_children` root forked; the root, waiting for them, then exits.
fn kill_children(home: &Path) {
    let pids = std::fs::read_to_string(home.join("children")).unwrap_or_default();
    for pid in pids.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
        // SAFETY: signalling the test's own grandchildren.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[tokio::test]
async fn a_full_membership_map_fails_closed() {
    let mut daemon = RunningDaemon::start("[maps]\ntask_of = 16\n");
    let (secret, value) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let root = many_children(":", 40, &home);
    daemon.client.start_task(&granted("crowd", root.pid, &[&secret])).await.unwrap();
    let release = tokio::task::spawn_blocking(move || root.release());
    let finding = blind(&daemon, "TASK_OF").await;
    assert_eq!(finding["task"], "crowd", "the finding names the task whose fork failed: {finding:#}");
    let status = daemon.client.status().await.unwrap();
    assert_eq!(status["kernel"]["fail_closed"], serde_json::json!(["membership"]), "{status:#}");
    let doctor = Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["doctor", "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&doctor.stdout);
    let row = table.lines().find(|line| line.starts_with("daemon-map:TASK_OF")).unwrap_or_default();
    assert!(row.contains("full") && row.contains("16 entries"), "doctor shows the full map:\n{table}");

    // The new task's root cannot be recorded either: judged as another task's, never as no task's.
    reuse_is_still_killed(&daemon, &secret, &value).await;
    // A process in no task is now judged as another task's too: it cannot be told from a member
    // whose membership was lost.
    let outsider = Command::new("cat").arg(&secret).output().unwrap();
    assert_eq!(outsider.status.signal(), Some(9), "fail closed: {}", outsider.status);
    assert!(outsider.stdout.is_empty());

    kill_children(&home);
    release.await.unwrap();
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_holders_map_reports_every_members_connects() {
    let mut daemon = RunningDaemon::start("[maps]\nholders = 8\n");
    let (secret, value) = daemon.plant(".netrc");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // The root itself holds the secret (an open fd): its children inherit the holding.
    let root = many_children("exec 3<.netrc", 20, &home);
    daemon.client.start_task(&granted("holders", root.pid, &[&secret])).await.unwrap();
    let release = tokio::task::spawn_blocking(move || root.release());
    blind(&daemon, "HOLDERS").await;
    let status = daemon.client.status().await.unwrap();
    assert_eq!(status["kernel"]["fail_closed"], serde_json::json!(["holdings"]), "{status:#}");
    reuse_is_still_killed(&daemon, &secret, &value).await;
    kill_children(&home);
    release.await.unwrap();
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_watch_map_keeps_the_secrets_already_watched() {
    let mut daemon = RunningDaemon::start("[maps]\nwatched = 4\n");
    let (secret, value) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let owner = Gated::spawn("exec cat .aws/credentials", &home, &[]);
    daemon.client.start_task(&granted("owner", owner.pid, &[&secret])).await.unwrap();
    for key in 0..8 {
        daemon.plant(&format!(".ssh/id_flood{key}"));
    }
    blind(&daemon, "WATCHED").await;
    reuse_is_still_killed(&daemon, &secret, &value).await;
    let (status, output) = owner.release();
    assert!(status.success() && output == value, "the owner still reads its secret: {status}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_owner_map_never_refuses_an_owner() {
    let mut daemon = RunningDaemon::start("[maps]\ngrantees = 2\n");
    let (shared, shared_value) = daemon.plant(".docker/config.json");
    let (private, private_value) = daemon.plant(".vault-token");
    daemon.wait_watched(&shared);
    daemon.wait_watched(&private);
    let home = daemon.home.path().to_owned();
    let first = Gated::spawn("sleep 120", &home, &[]);
    daemon.client.start_task(&granted("first", first.pid, &[&private, &shared])).await.unwrap();
    // No room for a third owner: the shared secret is left to the daemon, not refused to them.
    let third = Gated::spawn("exec cat .docker/config.json", &home, &[]);
    daemon.client.start_task(&granted("third", third.pid, &[&shared])).await.unwrap();
    blind(&daemon, "GRANTEES").await;
    let (status, output) = third.release();
    assert!(status.success() && output == shared_value, "an owner is never refused: {status}");
    reuse_is_still_killed(&daemon, &private, &private_value).await;
    drop(first);
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_verdict_map_still_kills() {
    let config = "[maps]\nverdicts = 1\n[actions]\nenviron_harvest = [\"kill_process\"]\n";
    let mut daemon = RunningDaemon::start(config);
    let (secret, value) = daemon.plant(".git-credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // The holder's own process opens the secret, forks a second holder, then waits as `sleep`.
    let holder = Gated::spawn("exec 3<.git-credentials; sleep 120 & echo $! >second.pid; exec sleep 120", &home, &[]);
    let holder_pid = holder.pid;
    daemon.client.start_task(&granted("holder", holder.pid, &[&secret])).await.unwrap();
    let holder = std::thread::spawn(move || holder.release());
    wait_for_comm(holder_pid, "sleep");
    let second: u32 = std::fs::read_to_string(home.join("second.pid")).unwrap().trim().parse().unwrap();
    // Each harvester's own process ptrace-attaches to a holder, which stops for it (the kernel
    // reports the tracer; the daemon kills it), then waits as `sleep`, still attached.
    let attach = |target: u32| {
        format!(
            "exec python3 -c 'import ctypes, os; libc = ctypes.CDLL(None); assert libc.ptrace(16, {target}, 0, 0) == 0; \
             os.waitpid({target}, 0x40000000); os.execv(\"/bin/sleep\", [\"sleep\", \"120\"])'"
        )
    };
    let harvesters = [Gated::spawn(&attach(holder_pid), &home, &[]), Gated::spawn(&attach(second), &home, &[])];
    for (index, harvester) in harvesters.iter().enumerate() {
        daemon.client.start_task(&TaskRequest::new(&format!("harvester-{index}"), harvester.pid)).await.unwrap();
    }
    // Both harvests reach the stopped daemon before it drains: two kills, one verdict slot.
    daemon.pause();
    let pids: Vec<u32> = harvesters.iter().map(|harvester| harvester.pid).collect();
    let released: Vec<_> =
        harvesters.into_iter().map(|harvester| std::thread::spawn(move || harvester.release())).collect();
    for &pid in &pids {
        wait_for_comm(pid, "sleep");
    }
    daemon.resume();
    for thread in released {
        let (status, _) = thread.join().unwrap();
        assert_eq!(status.signal(), Some(9), "each harvester is killed: {status}; {:#?}", daemon.findings().await);
    }
    blind(&daemon, "VERDICTS").await;
    reuse_is_still_killed(&daemon, &secret, &value).await;
    // SAFETY: signalling the test's own children.
    unsafe {
        libc::kill(second as i32, libc::SIGKILL);
        libc::kill(holder_pid as i32, libc::SIGKILL);
    }
    holder.join().unwrap();
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_allowlist_map_drops_the_partial_list() {
    let mut daemon = RunningDaemon::start("[maps]\nallowed_destinations = 2\n");
    let (secret, value) = daemon.plant(".pypirc");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let owner = Gated::spawn("exec cat .pypirc", &home, &[]);
    let mut request = granted("listed", owner.pid, &[&secret]);
    request.allow = Some(vec!["10.0.0.0/8:443".into(), "192.168.0.0/16:443".into(), "127.0.0.1:8080".into()]);
    daemon.client.start_task(&request).await.unwrap();
    blind(&daemon, "ALLOWED_DESTINATIONS").await;
    reuse_is_still_killed(&daemon, &secret, &value).await;
    let (status, output) = owner.release();
    assert!(status.success() && output == value, "{status}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_flood_of_one_tasks_events_cannot_hide_another_tasks_reuse() {
    let mut daemon = RunningDaemon::start_with_args("", &["--ring-buffer-mib", "1"]);
    let (secret, value) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // A holder of its own secret (it reads it while the daemon runs: the file guard answers its
    // open) waits at a FIFO, then connects 50 000 times to a closed loopback port: far more
    // reported connects than a 1 MiB buffer holds.
    let fifo = home.join("go");
    let fifo_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let refused_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let flood = format!(
        "python3 -c \"import socket, sys\nopen(sys.argv[1]).read()\nopen('go').read()\nfor _ in range(50000):\n  \
         s = socket.socket()\n  s.connect_ex(('127.0.0.1', {refused_port}))\n  s.close()\" .aws/credentials"
    );
    let flooder = Gated::spawn(&flood, &home, &[]);
    daemon.client.start_task(&granted("flooder", flooder.pid, &[&secret])).await.unwrap();
    let reuser = Gated::spawn("exec cat .aws/credentials", &home, &[]);
    let reuser_pid = reuser.pid;
    daemon.client.start_task(&TaskRequest::new("reuser", reuser.pid)).await.unwrap();
    let flooding = std::thread::spawn(move || flooder.release());
    // Opening the FIFO for writing returns once the flooder, its secret read, opened it to read.
    let go = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();

    // Nothing is drained while the daemon is stopped: the flood fills the buffer for certain.
    daemon.pause();
    drop(go);
    let (status, _) = flooding.join().unwrap();
    assert!(status.success(), "{status}");
    daemon.resume();
    // The reuse is decided while the daemon still drains the flood's full buffer.
    let (status, output) = reuser.release();
    assert_eq!(status.signal(), Some(9), "killed at the open, whatever the buffer holds: {status}");
    assert!(output.is_empty() && !output.contains(&value));

    killed_and_drops_counted(&daemon, reuser_pid, "connect").await;
    daemon.stop().await;
}

/// The same where the kernel refuses the file guard (a daemon without `CAP_SYS_ADMIN` and
/// `CAP_NET_ADMIN`): secret opens then go through the ring buffer, and a task flooding opens of
/// its own secret fills it while the daemon is stopped; another task's reuse is still killed at
/// `sys_exit`, and the flood's drops are counted.
#[tokio::test]
async fn without_the_file_guard_a_flood_of_secret_opens_cannot_hide_another_tasks_reuse() {
    let wrapper = ["setpriv", "--bounding-set=-sys_admin,-net_admin", "--"];
    let mut daemon = RunningDaemon::start_wrapped(&wrapper, "", &["--ring-buffer-mib", "1"]);
    let gaps = daemon.gaps().await;
    assert!(gaps.iter().any(|gap| gap == "files:fanotify_guard"), "this test needs the daemon without its file guard: {gaps:?}");
    let (secret, value) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // 50 000 opens of its own secret: far more events than a 1 MiB buffer holds.
    let flood = "python3 -c \"import sys\nfor _ in range(50000): open(sys.argv[1]).close()\" .aws/credentials";
    let flooder = Gated::spawn(flood, &home, &[]);
    daemon.client.start_task(&granted("flooder", flooder.pid, &[&secret])).await.unwrap();
    let reuser = Gated::spawn("exec cat .aws/credentials", &home, &[]);
    let reuser_pid = reuser.pid;
    daemon.client.start_task(&TaskRequest::new("reuser", reuser.pid)).await.unwrap();

    // Nothing is drained while the daemon is stopped: the flood fills the buffer for certain.
    daemon.pause();
    let (status, _) = flooder.release();
    assert!(status.success(), "{status}");
    let (status, output) = reuser.release();
    daemon.resume();
    assert_eq!(status.signal(), Some(9), "killed in the kernel, whatever the buffer holds: {status}");
    assert!(output.is_empty() && !output.contains(&value));

    killed_and_drops_counted(&daemon, reuser_pid, "secret_open").await;
    daemon.stop().await;
}

/// After a flood: the reuser's finding says it was killed at the use, and the flood's lost events
/// of `kind` are counted.
async fn killed_and_drops_counted(daemon: &RunningDaemon, reuser_pid: u32, kind: &str) {
    let finding =
        daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["pid"] == reuser_pid).await;
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel");
    let status = daemon.client.status().await.unwrap();
    let lost = status["kernel"]["lost"][kind].as_u64().unwrap_or(0);
    assert!(lost > 0, "the flood's drops are counted: {status:#}");
}
