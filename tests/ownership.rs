//! Who owns a secret, on the real kernel and the real daemon: the kill switch strikes the reuser
//! and never the owner or a bystander, after a restart, when the reader is a task's root whose
//! task ends right after, and when several tasks share one credential. Needs root.

mod common;

use std::{
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::{Child, Command},
};

use common::{daemon::RunningDaemon, pid_alive, shared_read::SharedRead, Gated};
use monitor::daemon::control::TaskRequest;
use serde_json::Value;

fn granted(id: &str, root: u32, secret: &Path) -> TaskRequest {
    TaskRequest { secrets: vec![secret.display().to_string()], ..TaskRequest::new(id, root) }
}

/// A process that lives until killed, as a bystander or a task's second member.
fn sleeper() -> Child {
    Command::new("/bin/sleep").arg("120").spawn().unwrap()
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

fn pid_in(file: &Path) -> u32 {
    std::fs::read_to_string(file).unwrap().trim().parse().unwrap()
}

fn handles(tasks: &Value) -> Vec<u64> {
    tasks.as_array().unwrap().iter().map(|task| task["handle"].as_u64().unwrap()).collect()
}

/// Task A is granted the secret and restored by a restart; then task B's reader (a child of B's
/// root, next to a second member of B) reads A's secret while task X runs beside them.
async fn reuse_after_a_restart(action: &str) {
    let config = format!("[actions]\ncross_task_reuse = [\"{action}\"]\n");
    let mut daemon = RunningDaemon::start(&config);
    let (secret, value) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let holder = Gated::spawn("exec cat .aws/credentials", &home, &[]);
    daemon.client.start_task(&granted("a", holder.pid, &secret)).await.unwrap();

    let (home_dir, state) = daemon.stop().await;
    let daemon = RunningDaemon::start_in(home_dir, state, &config);
    let mut bystander = sleeper();
    daemon.client.start_task(&TaskRequest::new("x", bystander.id())).await.unwrap();
    // The root outlives its reader (it waits for its other member), so kill_task finds it.
    // Under kill_task the root outlives its children, so that it can only end by the kill: a root
    // that exited once the member died would win or lose a race with the daemon's next signal.
    let after_wait = if action == "kill_task" { "; exec sleep 120" } else { "" };
    let read = SharedRead::new(&home, "reader");
    let reader = Gated::spawn(
        &format!(
            "sleep 120 >/dev/null & echo $! > member; sh -c 'echo $$ > reader; exec {}'; echo reader=$?; wait{after_wait}",
            read.command(".aws/credentials")
        ),
        &home,
        &[],
    );
    let root = reader.pid;
    daemon.client.start_task(&TaskRequest::new("b", root)).await.unwrap();
    let tasks = daemon.client.list_tasks().await.unwrap();
    let mut issued = handles(&tasks);
    issued.sort_unstable();
    issued.dedup();
    assert_eq!(issued.len(), 3, "every task has its own handle after the restart: {tasks:#}");

    let release = tokio::task::spawn_blocking(move || reader.release());
    let finding = daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["task"] == "b").await;
    assert_eq!(finding["owner_task"], "a");
    assert_eq!(finding["actions"][0]["action"], action, "{finding:#}");
    let member = pid_in(&home.join("member"));
    assert_eq!(finding["process"]["pid"], pid_in(&home.join("reader")), "{finding:#}");
    match action {
        "kill_task" => {
            assert_eq!(finding["actions"][0]["result"], "killed", "{finding:#}");
            let (status, _) = release.await.unwrap();
            assert_eq!(status.signal(), Some(9), "kill_task takes b's root too: {status}");
            // kill_task kills in the kernel at the open too, before it signals the others.
            assert_eq!(read.received().len(), 0, "the reader read bytes of the secret");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while pid_alive(member) {
                assert!(std::time::Instant::now() < deadline, "b's other member survived kill_task");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        _ => {
            assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "killed at the open: {finding:#}");
            assert!(pid_alive(member), "kill_process spares b's other member");
            // SAFETY: signalling the test's own grandchild, which the root waits for.
            unsafe { libc::kill(member as i32, libc::SIGKILL) };
            let (status, output) = release.await.unwrap();
            assert!(status.success(), "the root lives on: {status}");
            assert_eq!(output.trim(), "reader=137", "only the reader died at the open");
            assert_eq!(read.received().len(), 0, "the reader read bytes of the secret");
        }
    }
    assert!(alive(&mut bystander), "task x's process is a bystander");
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    let (status, output) = holder.release();
    assert!(status.success(), "a's holder reads its secret after the restart: {status}");
    assert!(output == value, "a's read is intact ({} bytes)", output.len());
    // Every event of a's read and of x's life is in the kernel's buffer by now: settle drains it.
    daemon.settle().await;
    let about_a_or_x: Vec<_> =
        daemon.findings().await.into_iter().filter(|finding| finding["task"] == "a" || finding["task"] == "x").collect();
    assert!(about_a_or_x.is_empty(), "no finding about a or x: {about_a_or_x:#?}");
    daemon.stop().await;
}

#[tokio::test]
async fn after_a_restart_kill_process_strikes_only_the_reuser() {
    reuse_after_a_restart("kill_process").await;
}

#[tokio::test]
async fn after_a_restart_kill_task_strikes_only_the_reusing_task() {
    reuse_after_a_restart("kill_task").await;
}

#[tokio::test]
async fn a_task_root_under_task_exec_that_reuses_is_judged_while_its_task_was_active() {
    let config = "[actions]\ncross_task_reuse = [\"kill_process\", \"kill_task\"]\n";
    let mut daemon = RunningDaemon::start(config);
    let (secret, value) = daemon.plant(".kube/config");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let holder = Gated::spawn("exec cat .kube/config", &home, &[]);
    daemon.client.start_task(&granted("a", holder.pid, &secret)).await.unwrap();

    let socket = daemon.socket.display().to_string();
    // The reader is the task's root; task exec ends the task as soon as it is killed.
    let output = Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["task", "exec", "--id", "c", "--socket", &socket, "--", "cat", ".kube/config"])
        .current_dir(&home)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(137), "the root was killed at the open");
    // task exec says why, in one line.
    let said = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = said.lines().filter(|line| line.starts_with("credwatch: task c: ")).collect();
    assert_eq!(lines.len(), 1, "{said}");
    assert!(lines[0].contains("cross_task_reuse") && lines[0].contains(".kube/config"), "{said}");
    assert!(lines[0].contains("kill_process (killed_in_kernel)"), "{said}");
    assert!(output.stdout.is_empty(), "the root printed {} bytes", output.stdout.len());
    let tasks = daemon.client.list_tasks().await.unwrap();
    assert!(tasks.as_array().unwrap().iter().any(|task| task["id"] == "c" && task["state"] == "ended"), "{tasks:#}");

    let finding = daemon.finding(|finding| finding["task"] == "c").await;
    assert_eq!(finding["rule"], "cross_task_reuse", "c was active at the read: {finding:#}");
    let id = finding["id"].as_str().unwrap();
    assert!(lines[0].ends_with(&format!("(finding {id})")), "the line names the finding: {said}");
    assert_eq!(finding["actions"][1]["action"], "kill_task", "{finding:#}");
    daemon.settle().await;
    let about_c: Vec<_> = daemon.findings().await.into_iter().filter(|finding| finding["task"] == "c").collect();
    assert_eq!(about_c.len(), 1, "one finding, no post_task_reuse or untasked_access: {about_c:#?}");

    let (status, output) = holder.release();
    assert!(status.success() && output == value, "a's holder is untouched: {status}");
    daemon.stop().await;
}

#[tokio::test]
async fn two_tasks_granted_one_file_share_it_and_a_third_is_killed() {
    let mut daemon = RunningDaemon::start("");
    let (secret, value) = daemon.plant(".config/gcloud/application_default_credentials.json");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let secret_name = ".config/gcloud/application_default_credentials.json";
    let reads = ["first", "second", "third"].map(|task| SharedRead::new(&home, task));
    let [first, second, third] =
        reads.each_ref().map(|read| Gated::spawn(&format!("exec {}", read.command(secret_name)), &home, &[]));
    let pids = [first.pid, second.pid, third.pid];
    daemon.client.start_task(&granted("first", first.pid, &secret)).await.unwrap();
    daemon.client.start_task(&granted("second", second.pid, &secret)).await.unwrap();
    daemon.client.start_task(&TaskRequest::new("third", third.pid)).await.unwrap();

    for (sharer, read) in [(second, &reads[1]), (first, &reads[0])] {
        let (status, _) = sharer.release();
        assert!(status.success(), "each grantee reads the shared secret: {status}");
        assert!(read.received() == value.as_bytes(), "a grantee's read differs ({} bytes)", read.received().len());
    }
    let (status, _) = third.release();
    assert_eq!(status.signal(), Some(9), "the third task is killed at the open: {status}");
    assert_eq!(reads[2].received().len(), 0, "the third task read bytes of the secret");
    let finding = daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["task"] == "third").await;
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
    assert!(finding["detail"].as_str().unwrap().ends_with("which is bound to tasks first, second"), "{finding:#}");
    daemon.settle().await;
    let about_sharers =
        daemon.findings().await.into_iter().filter(|finding| pids[..2].contains(&(finding["process"]["pid"].as_u64().unwrap() as u32)));
    assert_eq!(about_sharers.count(), 0, "no finding about a grantee");
    daemon.stop().await;
}

#[tokio::test]
async fn task_exec_with_env_yields_no_finding_for_the_launcher() {
    let mut daemon = RunningDaemon::start("");
    let value = daemon.plant_value();
    let socket = daemon.socket.display().to_string();
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["task", "exec", "--id", "with-env", "--socket", &socket, "--env", "GITHUB_TOKEN", "--"])
        .args(["sh", "-c", "echo $$ > root; test -n \"$GITHUB_TOKEN\""])
        .env("GITHUB_TOKEN", &value)
        .current_dir(daemon.home.path())
        .spawn()
        .unwrap();
    let launcher_pid = launcher.id();
    assert!(launcher.wait().unwrap().success());
    let root = pid_in(&daemon.home.path().join("root"));
    daemon.settle().await;
    let ours: Vec<_> = daemon
        .findings()
        .await
        .into_iter()
        .filter(|finding| [launcher_pid, root].contains(&(finding["process"]["pid"].as_u64().unwrap() as u32)))
        .collect();
    assert!(ours.is_empty(), "findings about the launcher or its granted command: {ours:#?}");
    let status = daemon.client.status().await.unwrap();
    assert!(status["daemon"]["execs_own"].as_u64().unwrap() >= 1, "the launcher's exec was recognised: {status:#}");
    daemon.stop().await;
}
