//! What the daemon does when things go wrong around it: the audit log's file system is full, an
//! alert sink accepts and never answers, the task registry is corrupt at start, the daemon is
//! killed -9 while it writes the registry. It keeps judging, counts what it loses, and says what
//! is wrong and where. (A full ring buffer while a kill switch fires: `tests/exhaustion.rs`.)
//! Needs root.

mod common;

use std::{
    net::TcpListener,
    os::unix::process::ExitStatusExt as _,
    process::Command,
    time::{Duration, Instant},
};

use common::{daemon::RunningDaemon, shared_read::SharedRead, Gated};
use monitor::daemon::control::TaskRequest;

/// A task `owner` granted `secret`, and a process of task `reuser` reading it: killed in the kernel
/// before a byte, and its finding published through the API whatever the sinks do.
async fn reuse_is_caught(daemon: &RunningDaemon, secret: &std::path::Path, index: usize) {
    let home = daemon.home.path();
    let owner = Gated::spawn("exec sleep 60", home, &[]);
    let mut request = TaskRequest::new(&format!("owner-{index}"), owner.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();
    let read = SharedRead::new(home, &format!("reuser-{index}"));
    let reuser = Gated::spawn(&format!("exec {}", read.command(&secret.display().to_string())), home, &[]);
    let pid = reuser.pid;
    daemon.client.start_task(&TaskRequest::new(&format!("reuser-{index}"), reuser.pid)).await.unwrap();
    assert_eq!(reuser.release().0.signal(), Some(9));
    assert_eq!(read.received().len(), 0, "bytes of the secret reached reuser {index}");
    let finding =
        daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["pid"] == pid).await;
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
    daemon.client.end_task(&format!("owner-{index}")).await.unwrap();
    drop(owner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_file_system_loses_records_counted_and_nothing_else() {
    let full = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"]).arg(full.path()).status().unwrap();
    assert!(mounted.success());
    let audit = full.path().join("audit.jsonl");
    let config = format!("[audit]\npath = {:?}\nmax_bytes = 1048576\n", audit.display().to_string());
    let mut daemon = RunningDaemon::start(&config);
    let (secret, _) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    for index in 0..40 {
        reuse_is_caught(&daemon, &secret, index).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.scrape("credwatch_sink_dropped_total{sink=\"audit\"}") == 0 {
        assert!(Instant::now() < deadline, "the audit log's losses are counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop().await;
    Command::new("umount").arg(full.path()).status().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_sink_that_never_answers_holds_nothing_up() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    // Accepts every connection and never reads or answers.
    let held = std::thread::spawn(move || listener.incoming().take(64).filter_map(Result::ok).collect::<Vec<_>>());
    let config = format!("[alerts]\nalertmanager_url = \"http://{address}\"\nqueue = 4\n");
    let mut daemon = RunningDaemon::start(&config);
    let (secret, _) = daemon.plant(".netrc");
    daemon.wait_watched(&secret);
    let started = Instant::now();
    for index in 0..20 {
        reuse_is_caught(&daemon, &secret, index).await;
    }
    assert!(started.elapsed() < Duration::from_secs(30), "findings kept flowing: {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.scrape("credwatch_sink_dropped_total{sink=\"alertmanager\"}") == 0 {
        assert!(Instant::now() < deadline, "the hanging sink's drops are counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop().await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_registry_is_named_and_kept_aside_and_the_next_start_works() {
    let daemon = RunningDaemon::start("");
    let (home, state) = daemon.stop().await;
    let registry = state.path().join("tasks.json");
    std::fs::write(&registry, "{\"next_handle\": 3, \"tasks\": [").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["run", "--state-dir"])
        .arg(state.path())
        .arg("--socket")
        .arg(state.path().join("api.sock"))
        .arg("--config")
        .arg(state.path().join("credwatch.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}: not a valid state file (moved aside, not deleted)", registry.display())), "{stderr}");
    assert!(state.path().join("tasks.json.corrupt").exists(), "kept aside");
    let daemon = RunningDaemon::start_in(home, state, "");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_while_it_writes_its_registry_restarts_on_a_whole_one() {
    let daemon = RunningDaemon::start("");
    let home = daemon.home.path().to_owned();
    let roots: Vec<Gated> = (0..30).map(|_| Gated::spawn("exec sleep 60", &home, &[])).collect();
    for (index, root) in roots.iter().enumerate() {
        daemon.client.start_task(&TaskRequest::new(&format!("task-{index}"), root.pid)).await.unwrap();
        if index == 20 {
            // SAFETY: killing our own child in the middle of its registry writes.
            unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) };
            break;
        }
    }
    let (home, state) = daemon.abandon();
    let daemon = RunningDaemon::start_in(home, state, "");
    let tasks = daemon.client.list_tasks().await.unwrap();
    let restored = tasks.as_array().unwrap().len();
    assert!((1..=21).contains(&restored), "a whole registry of the tasks saved before the kill: {restored}");
    drop(roots);
    daemon.stop().await;
}
