//! The daemon across its life: tasks and bindings survive a restart and reuse is still caught;
//! a task's own process cannot end its task through the real API. Needs root.

mod common;

use std::os::unix::process::ExitStatusExt as _;

use common::{daemon::RunningDaemon, shared_read::SharedRead, Gated};
use monitor::daemon::control::TaskRequest;

fn task(id: &str, root: u32, secret: &std::path::Path) -> TaskRequest {
    TaskRequest { secrets: vec![secret.display().to_string()], ..TaskRequest::new(id, root) }
}

#[tokio::test]
async fn tasks_and_bindings_survive_a_restart_and_reuse_is_still_killed() {
    let mut daemon = RunningDaemon::start("");
    let (secret, value) = daemon.plant(".docker/config.json");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();

    // The owner waits across the restart, then reads its secret; its task must still be its.
    let owner = Gated::spawn("exec cat .docker/config.json", &home, &[]);
    daemon.client.start_task(&task("builder", owner.pid, &secret)).await.unwrap();
    let read = SharedRead::new(&home, "rogue");
    let rogue = Gated::spawn(&format!("exec {}", read.command(".docker/config.json")), &home, &[]);
    let rogue_pid = rogue.pid;
    daemon.client.start_task(&task("intruder", rogue.pid, &daemon.home.path().join(".npmrc"))).await.unwrap_err();
    let mut intruder = task("intruder", rogue.pid, &secret);
    intruder.secrets.clear();
    daemon.client.start_task(&intruder).await.unwrap();

    let (home_dir, state) = daemon.stop().await;
    let daemon = RunningDaemon::start_in(home_dir, state, "");
    let tasks = daemon.client.list_tasks().await.unwrap();
    let ids: Vec<_> = tasks.as_array().unwrap().iter().map(|task| task["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["builder", "intruder"]);
    assert!(tasks.as_array().unwrap().iter().all(|task| task["state"] == "active"));

    let (status, output) = owner.release();
    assert!(status.success(), "the owner still reads its secret after the restart: {status}");
    assert!(output == value, "the owner's read is intact ({} bytes)", output.len());
    let (status, _) = rogue.release();
    assert_eq!(status.signal(), Some(9), "the binding survived the restart: {status}");
    assert_eq!(read.received().len(), 0, "bytes of the secret reached the rogue");
    let finding = daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["pid"] == rogue_pid).await;
    assert_eq!(finding["owner_task"], "builder");
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_task_member_cannot_end_its_own_task() {
    let mut daemon = RunningDaemon::start("");
    let (secret, _) = daemon.plant(".vault-token");
    daemon.wait_watched(&secret);
    let socket = daemon.socket.display().to_string();
    let credwatch = env!("CARGO_BIN_EXE_credwatch");
    let member = Gated::spawn(&format!("exec {credwatch} task end agent --socket {socket} 2>&1"), daemon.home.path(), &[]);
    daemon.client.start_task(&task("agent", member.pid, &secret)).await.unwrap();
    let (status, output) = member.release();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("403") && output.contains("is a member of"), "{output}");
    let tasks = daemon.client.list_tasks().await.unwrap();
    assert_eq!(tasks[0]["state"], "active", "the task is still active");
    daemon.stop().await;
}
