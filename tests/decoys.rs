//! Decoy credentials and learned baselines on the real kernel and the real daemon. Needs root.

mod common;

use std::{os::unix::process::ExitStatusExt as _, process::Command};

use common::{daemon::RunningDaemon, shared_read::SharedRead, Gated};
use monitor::daemon::control::TaskRequest;

const DECOY: &str = ".aws/credentials.old";

fn with_decoy() -> RunningDaemon {
    let mut daemon = RunningDaemon::start(&format!("[decoys]\nfiles = [\"~/{DECOY}\"]\n"));
    let decoy = daemon.home.path().join(DECOY);
    daemon.wait_watched(&decoy);
    let value = std::fs::read_to_string(&decoy).unwrap();
    assert!(value.starts_with("[default]\naws_access_key_id = AKIA"), "a decoy that looks real");
    value.lines().filter_map(|line| line.split_once(" = ")).for_each(|(_, key)| daemon.remember(key.to_owned()));
    daemon
}

#[tokio::test]
async fn a_tasks_process_opening_a_decoy_is_killed_before_reading_a_byte() {
    let daemon = with_decoy();
    let read = SharedRead::new(daemon.home.path(), "prober");
    let prober = Gated::spawn(&format!("exec {}", read.command(DECOY)), daemon.home.path(), &[]);
    let pid = prober.pid;
    daemon.client.start_task(&TaskRequest::new("agent", prober.pid)).await.unwrap();
    let (status, _) = prober.release();
    assert_eq!(status.signal(), Some(9), "killed at the open: {status}");
    assert_eq!(read.received().len(), 0, "bytes of the decoy reached the prober");
    let finding = daemon.finding(|finding| finding["rule"] == "decoy_touched" && finding["process"]["pid"] == pid).await;
    assert_eq!(finding["severity"], "critical");
    assert_eq!(finding["task"], "agent");
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel");
    daemon.stop().await;
}

#[tokio::test]
async fn tar_of_a_home_outside_any_task_is_not_critical() {
    let daemon = with_decoy();
    // Not to /dev/null: GNU tar then skips reading the files.
    let archive = tempfile::NamedTempFile::new().unwrap();
    let mut tar = Command::new("tar").arg("cf").arg(archive.path()).arg("-C").arg(daemon.home.path()).arg(".").spawn().unwrap();
    let pid = tar.id();
    let status = tar.wait().unwrap();
    assert!(status.success(), "a backup is never killed: {status}");
    let finding = daemon.finding(|finding| finding["rule"] == "decoy_touched" && finding["process"]["pid"] == pid).await;
    assert_eq!(finding["severity"], "info");
    assert!(finding["detail"].as_str().unwrap().contains("tar"), "the executable is named: {finding:#}");
    daemon.settle().await;
    let critical: Vec<_> =
        daemon.findings().await.into_iter().filter(|finding| finding["severity"] == "critical").collect();
    assert!(critical.is_empty(), "{critical:#?}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_decoy_value_copied_into_another_tasks_process_is_found() {
    let mut daemon = RunningDaemon::start("");
    let home = daemon.home.path().to_owned();
    let socket = daemon.socket.display().to_string();
    // Task a is given a decoy token; its command leaks it to a file.
    let exec = Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["task", "exec", "--id", "a", "--socket", &socket, "--decoy-env", "GITHUB_TOKEN", "--"])
        .args(["sh", "-c", "printf %s \"$GITHUB_TOKEN\" > leaked"])
        .current_dir(&home)
        .status()
        .unwrap();
    assert!(exec.success(), "{exec}");
    let value = std::fs::read_to_string(home.join("leaked")).unwrap();
    assert!(value.starts_with("ghp_") && value.len() == 40, "shaped like a GitHub token");
    daemon.remember(value);

    // A process of task b starts with the leaked value in its environment, and waits.
    let reuser = Gated::spawn("GH_TOKEN=$(cat leaked) exec sleep 60", &home, &[]);
    let pid = reuser.pid;
    daemon.client.start_task(&TaskRequest::new("b", reuser.pid)).await.unwrap();
    let release = std::thread::spawn(move || reuser.release());
    let finding = daemon.finding(|finding| finding["rule"] == "decoy_touched" && finding["process"]["pid"] == pid).await;
    assert_eq!(finding["severity"], "critical");
    assert_eq!((finding["task"].as_str(), finding["owner_task"].as_str()), (Some("b"), Some("a")));
    assert_eq!(finding["secret"]["name"], "decoy GITHUB_TOKEN");
    // SAFETY: signalling the test's own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    release.join().unwrap();
    let about_a: Vec<_> =
        daemon.findings().await.into_iter().filter(|finding| finding["task"] == "a").collect();
    assert!(about_a.is_empty(), "task a carries its own decoy silently: {about_a:#?}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_learned_baseline_survives_a_restart_and_a_new_executable_stands_out() {
    let config = "[baseline]\nlearn_for = \"1s\"\nlearn_uses = 3\n";
    let mut daemon = RunningDaemon::start(config);
    let (secret, _) = daemon.plant(".config/gh/hosts.yml");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let agent = Gated::spawn("for i in 1 2 3; do cat .config/gh/hosts.yml >/dev/null; done; sleep 1.2; exec cat .config/gh/hosts.yml >/dev/null", &home, &[]);
    let mut request = TaskRequest::new("agent", agent.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();
    let (status, _) = agent.release();
    assert!(status.success(), "{status}");
    daemon.settle().await;
    let (home_dir, state) = daemon.stop().await;
    assert!(state.path().join("baselines.json").exists(), "persisted at stop");

    let daemon = RunningDaemon::start_in(home_dir, state, config);
    let shown = Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["baseline", "show", "--json", "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    let baselines: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let name = format!("file:{}", secret.display());
    assert_eq!(baselines[&name]["learned"], true, "{baselines:#}");
    assert!(baselines[&name]["executables"].as_array().unwrap().iter().any(|exe| exe.as_str().unwrap().ends_with("/cat")));

    let stranger = Gated::spawn("exec head -c 1 .config/gh/hosts.yml >/dev/null", &home, &[]);
    let pid = stranger.pid;
    let mut request = TaskRequest::new("agent-2", stranger.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();
    let (status, _) = stranger.release();
    assert!(status.success(), "an anomaly is alerted on, not killed: {status}");
    let finding = daemon.finding(|finding| finding["rule"] == "anomalous_use" && finding["process"]["pid"] == pid).await;
    let detail = finding["detail"].as_str().unwrap();
    assert!(detail.contains("head, an executable never seen with it"), "{detail}");

    let reset = Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["baseline", "reset", "--secret", &name, "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    assert!(daemon.client.baselines().await.unwrap().get(&name).is_none(), "forgotten");
    daemon.stop().await;
}
