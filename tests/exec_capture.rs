//! Every exec judged: the kernel captures the new image's command line and environment at exec,
//! so even a process that lives a millisecond is scanned, and a known value is recognised on a
//! command line or under another name. Real processes, the real kernel and daemon. Needs root.

mod common;

use std::{
    os::unix::process::ExitStatusExt as _,
    process::Command,
    time::{Duration, Instant},
};

use common::{daemon::RunningDaemon, Gated};
use monitor::daemon::control::{TaskRequest, TokenRequest};
use serde_json::Value;

/// The audit log's findings of `rule` about the secret named `name`, once there are `count`
/// (every finding is audited; the API keeps only the latest thousand).
fn audited(daemon: &RunningDaemon, rule: &str, name: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(daemon.audit_path()).unwrap_or_default();
        let found: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|record| record["rule"] == rule && record["secret"]["name"] == name)
            .collect();
        if found.len() >= count || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_thousand_short_lived_execs_are_all_judged() {
    let mut daemon = RunningDaemon::start("");
    let value = daemon.plant_value();
    let burst = Command::new("/bin/sh")
        .args(["-c", "for i in $(seq 1000); do /bin/true; done"])
        .env("CWTEST_BURST_TOKEN", &value)
        .status()
        .unwrap();
    assert!(burst.success());
    // The shell, its `seq` and each of its thousand `true`s, every one gone within a millisecond.
    let found = audited(&daemon, "untasked_access", "CWTEST_BURST_TOKEN", 1002);
    let trues: std::collections::BTreeSet<u64> = found
        .iter()
        .filter(|record| record["ancestry"][0]["filename"] == "/bin/true")
        .filter_map(|record| record["process"]["pid"].as_u64())
        .collect();
    assert_eq!(trues.len(), 1000, "every exec carrying the variable was judged");
    let status = daemon.client.status().await.unwrap();
    assert_eq!(status["kernel"]["lost"]["exec"], 0, "{status:#}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_granted_value_in_a_short_lived_process_outside_the_task_is_propagation_every_time() {
    let mut daemon = RunningDaemon::start("");
    let value = daemon.plant_value();
    let root = Gated::spawn("exec sleep 60", daemon.home.path(), &[("GITHUB_TOKEN", value.as_str())]);
    let mut request = TaskRequest::new("granted", root.pid);
    request.env = vec!["GITHUB_TOKEN".to_owned()];
    daemon.client.start_task(&request).await.unwrap();
    let mut pids = Vec::new();
    for _ in 0..50 {
        let mut child = Command::new("env").arg("-i").arg(format!("GITHUB_TOKEN={value}")).arg("/bin/true").spawn().unwrap();
        pids.push(child.id());
        assert!(child.wait().unwrap().success());
    }
    let found = audited(&daemon, "secret_propagation", "GITHUB_TOKEN", 50);
    for pid in pids {
        assert!(
            found.iter().any(|record| record["process"]["pid"] == pid),
            "no secret_propagation for pid {pid} ({} found)",
            found.len()
        );
    }
    drop(root);
    daemon.stop().await;
}

#[tokio::test]
async fn a_granted_token_on_another_tasks_command_line_is_reuse_and_on_its_own_is_not() {
    let mut daemon = RunningDaemon::start("");
    let token = daemon.plant_value();
    let home = daemon.home.path().to_owned();
    // Each waits with the token among its arguments: judged, and, for the reuser, killed.
    let holding = |flag: &str| format!("exec sh -c 'exec sleep 60' waiting {flag} {token}");
    let owner = Gated::spawn(&holding("--token"), &home, &[]);
    let owner_pid = owner.pid;
    daemon.client.start_task(&TaskRequest::new("owner", owner.pid)).await.unwrap();
    let request = TokenRequest { task: "owner".into(), label: "deploy token".into(), value: Some(token.clone()), decoy: false };
    daemon.client.register_token(&request).await.unwrap();
    let other = Gated::spawn(&holding("--auth-token"), &home, &[]);
    let other_pid = other.pid;
    daemon.client.start_task(&TaskRequest::new("other", other.pid)).await.unwrap();
    let owner = std::thread::spawn(move || owner.release());
    let (status, _) = other.release();
    assert_eq!(status.signal(), Some(9), "the reuser is killed: {status}");

    let finding = daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["pid"] == other_pid).await;
    assert_eq!(finding["owner_task"], "owner");
    assert!(finding["detail"].as_str().unwrap().ends_with("started with the value of deploy token on its command line, which is bound to task owner"), "{finding:#}");
    daemon.settle().await;
    let about_owner: Vec<_> =
        daemon.findings().await.into_iter().filter(|finding| finding["process"]["pid"] == owner_pid).collect();
    assert!(about_owner.is_empty(), "the owner's own use is silent: {about_owner:#?}");
    // SAFETY: signalling the test's own child, which the owner's task left alive.
    unsafe { libc::kill(owner_pid as i32, libc::SIGKILL) };
    owner.join().unwrap();
    daemon.stop().await;
}

#[tokio::test]
async fn what_is_cut_of_an_environment_is_counted() {
    let daemon = RunningDaemon::start("[exec]\nenv_bytes = 256\n");
    let before = daemon.client.status().await.unwrap()["daemon"]["exec_cut"].as_u64().unwrap();
    let status = Command::new("/bin/true").env("CREDWATCH_TEST_PADDING", "x".repeat(1000)).status().unwrap();
    assert!(status.success());
    daemon.settle().await;
    let after = daemon.client.status().await.unwrap()["daemon"]["exec_cut"].as_u64().unwrap();
    assert!(after > before, "a 1 KiB variable past a 256-byte capture is counted: {before} -> {after}");
    daemon.stop().await;
}
