//! Every rule end to end: the real daemon (`credwatch run`) on the built-in catalogue with a
//! temporary HOME, tasks registered over its real API socket, real processes reading real files,
//! reading other processes' environments and connecting to real loopback listeners. Each rule
//! has a scenario that fires it and a benign twin that stays silent. Needs root.

mod common;

use std::{net::TcpListener, os::unix::process::ExitStatusExt as _, time::Duration};

use common::{daemon::RunningDaemon, shared_read::SharedRead, Gated};
use monitor::{daemon::control::TaskRequest, event::ExecId};
use serde_json::Value;

/// A finding's process (`pid`, `start_time` in the record) as the sensors identify it.
fn exec_id(finding: &Value, field: &str) -> ExecId {
    let process = &finding[field];
    let number = |name: &str| process[name].as_u64().unwrap_or_else(|| panic!("{field}.{name} in {finding:#}"));
    ExecId { tgid: number("pid") as u32, start_time: number("start_time") }
}

fn is(rule: &'static str, pid: u32) -> impl Fn(&Value) -> bool {
    move |finding| finding["rule"] == rule && finding["process"]["pid"] == pid
}

/// Findings of `rule` about `pid`, after the daemon caught up.
async fn findings_of(daemon: &RunningDaemon, rule: &str, pid: u32) -> Vec<Value> {
    daemon.settle().await;
    daemon.findings().await.into_iter().filter(|finding| finding["rule"] == rule && finding["process"]["pid"] == pid).collect()
}

#[tokio::test]
async fn cross_task_reuse_is_caught_and_killed_and_the_owner_is_not() {
    let mut daemon = RunningDaemon::start("");
    let (secret, value) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();

    let owner = Gated::spawn("cat .aws/credentials; exec sh -c 'cat .aws/credentials >/dev/null'", &home, &[]);
    let owner_id = owner.exec_id();
    let mut request = TaskRequest::new("agent-a", owner.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();
    let (status, output) = owner.release();
    assert!(status.success(), "the owner and its child read their secret: {status}");
    assert!(output == value, "the owner's read is intact ({} bytes)", output.len());

    let read = SharedRead::new(&home, "rogue");
    let rogue = Gated::spawn(&format!("exec {}", read.command(".aws/credentials")), &home, &[]);
    let rogue_id = rogue.exec_id();
    daemon.client.start_task(&TaskRequest::new("agent-b", rogue.pid)).await.unwrap();
    let (status, _) = rogue.release();
    assert_eq!(status.signal(), Some(9), "killed in the kernel: {status}");
    assert_eq!(read.received().len(), 0, "bytes of the secret reached the rogue");

    let finding = daemon.finding(is("cross_task_reuse", rogue_id.tgid)).await;
    assert_eq!(exec_id(&finding, "process"), rogue_id);
    assert_eq!(finding["severity"], "critical");
    assert_eq!(finding["task"], "agent-b");
    assert_eq!(finding["owner_task"], "agent-a");
    assert_eq!(finding["secret"]["name"], secret.display().to_string());
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
    assert!(findings_of(&daemon, "cross_task_reuse", owner_id.tgid).await.is_empty(), "benign twin: the owner");
    daemon.stop().await;
}

#[tokio::test]
async fn post_task_reuse_after_end_and_after_ttl_is_killed() {
    let mut daemon = RunningDaemon::start("");
    let (secret, _) = daemon.plant(".config/gh/hosts.yml");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();

    // A process that outlives its ended task.
    let leftover_read = SharedRead::new(&home, "leftover");
    let leftover = Gated::spawn(&format!("exec {}", leftover_read.command(".config/gh/hosts.yml")), &home, &[]);
    let leftover_id = leftover.exec_id();
    let mut request = TaskRequest::new("short", leftover.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();
    // Benign twin first: while the task is active its own process may read.
    let twin = Gated::spawn("exec cat .config/gh/hosts.yml >/dev/null", &home, &[]);
    let mut twin_request = TaskRequest::new("twin", twin.pid);
    twin_request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&twin_request).await.unwrap();
    let (status, _) = twin.release();
    assert!(status.success(), "{status}");
    daemon.client.end_task("twin").await.unwrap();
    daemon.client.end_task("short").await.unwrap();
    let (status, _) = leftover.release();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert_eq!(leftover_read.received().len(), 0, "bytes of the secret reached the leftover");
    let finding = daemon.finding(is("post_task_reuse", leftover_id.tgid)).await;
    assert_eq!(exec_id(&finding, "process"), leftover_id);
    assert_eq!(finding["task"], "short");
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");

    // TTL expiry behaves the same.
    let late_read = SharedRead::new(&home, "late");
    let late = Gated::spawn(&format!("exec {}", late_read.command(".config/gh/hosts.yml")), &home, &[]);
    let late_id = late.exec_id();
    let mut request = TaskRequest::new("ttl", late.pid);
    request.secrets = vec![secret.display().to_string()];
    request.ttl = Some(Duration::from_secs(1));
    daemon.client.start_task(&request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(daemon.client.list_tasks().await.unwrap().as_array().unwrap().iter().find(|t| t["id"] == "ttl").unwrap()["state"], "expired");
    let (status, _) = late.release();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert_eq!(late_read.received().len(), 0, "bytes of the secret reached the late reader");
    let finding = daemon.finding(is("post_task_reuse", late_id.tgid)).await;
    assert_eq!(finding["task"], "ttl");
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
    daemon.stop().await;
}

#[tokio::test]
async fn unexpected_destination_fires_outside_the_allowlist_only() {
    let mut daemon = RunningDaemon::start("");
    let (secret, _) = daemon.plant(".netrc");
    daemon.wait_watched(&secret);
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let (allowed_port, other_port) = (allowed.local_addr().unwrap().port(), elsewhere.local_addr().unwrap().port());
    let connect = |port: u16| {
        format!("exec python3 -c 'import socket; open(\".netrc\").read(); socket.create_connection((\"127.0.0.1\", {port})).close()'")
    };
    let home = daemon.home.path().to_owned();

    let good = Gated::spawn(&connect(allowed_port), &home, &[]);
    let good_pid = good.pid;
    let mut request = TaskRequest::new("fetcher", good.pid);
    request.secrets = vec![secret.display().to_string()];
    request.allow = Some(vec![format!("127.0.0.1:{allowed_port}")]);
    daemon.client.start_task(&request).await.unwrap();
    assert!(good.release().0.success());

    let bad = Gated::spawn(&connect(other_port), &home, &[]);
    let bad_id = bad.exec_id();
    let mut request = TaskRequest::new("exfil", bad.pid);
    request.secrets = vec![secret.display().to_string()];
    request.allow = Some(vec![format!("127.0.0.1:{allowed_port}")]);
    daemon.client.start_task(&request).await.unwrap();
    assert!(bad.release().0.success(), "unexpected_destination alerts by default");

    let finding = daemon.finding(is("unexpected_destination", bad_id.tgid)).await;
    assert_eq!(exec_id(&finding, "process"), bad_id);
    assert_eq!(finding["destination"], format!("127.0.0.1:{other_port}"));
    assert_eq!(finding["task"], "exfil");
    assert!(findings_of(&daemon, "unexpected_destination", good_pid).await.is_empty(), "benign twin: allowed destination");
    daemon.stop().await;
}

#[tokio::test]
async fn environ_harvest_of_a_task_process_fires_and_own_or_sibling_reads_do_not() {
    let mut daemon = RunningDaemon::start("");
    let token = daemon.plant_value();
    let home = daemon.home.path().to_owned();
    // The task's root starts a holder of the token, lets a sibling in the same task read the
    // holder's environ and its own, then stops the holder.
    let root = Gated::spawn(
        "sleep 30 & echo $! > target.pid; sleep 2; cat /proc/$!/environ >/dev/null; cat /proc/self/environ >/dev/null; kill $!",
        &home,
        &[("GITHUB_TOKEN", token.as_str())],
    );
    let mut request = TaskRequest::new("holder", root.pid);
    request.env = vec!["GITHUB_TOKEN".to_owned()];
    daemon.client.start_task(&request).await.unwrap();
    let root = std::thread::spawn(move || root.release());
    let pid_file = home.join("target.pid");
    let target_pid: u32 = loop {
        match std::fs::read_to_string(&pid_file).ok().and_then(|text| text.trim().parse().ok()) {
            Some(pid) => break pid,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    daemon.settle().await;

    let harvester = Gated::spawn(&format!("exec cat /proc/{target_pid}/environ >/dev/null"), &home, &[]);
    let harvester_id = harvester.exec_id();
    assert!(harvester.release().0.success());
    let finding = daemon.finding(is("environ_harvest", harvester_id.tgid)).await;
    assert_eq!(exec_id(&finding, "process"), harvester_id);
    assert_eq!(exec_id(&finding, "target").tgid, target_pid);
    assert_eq!(finding["owner_task"], "holder");
    assert_eq!(finding["task"], Value::Null);

    assert!(root.join().unwrap().0.success());
    daemon.settle().await;
    let inside: Vec<_> = daemon
        .findings()
        .await
        .into_iter()
        .filter(|finding| finding["rule"] == "environ_harvest" && finding["task"] == "holder")
        .collect();
    assert!(inside.is_empty(), "benign twins: a sibling in the task and one's own environ: {inside:#?}");
    daemon.stop().await;
}

#[tokio::test]
async fn secret_propagation_outside_the_task_fires_and_inside_does_not() {
    let mut daemon = RunningDaemon::start("");
    let token = daemon.plant_value();
    let home = daemon.home.path().to_owned();
    let env = [("GITHUB_TOKEN", token.as_str())];
    // Programs that live long enough for the daemon to read their environment.
    let root = Gated::spawn("exec sh -c 'exec sleep 0.5'", &home, &env);
    let root_pid = root.pid;
    let mut request = TaskRequest::new("granted", root.pid);
    request.env = vec!["GITHUB_TOKEN".to_owned()];
    daemon.client.start_task(&request).await.unwrap();
    assert!(root.release().0.success(), "benign twin: the task's own children carry it");

    let outsider = Gated::spawn("exec sleep 0.5", &home, &env);
    let outsider_id = outsider.exec_id();
    assert!(outsider.release().0.success());
    let finding = daemon.finding(is("secret_propagation", outsider_id.tgid)).await;
    assert_eq!(exec_id(&finding, "process"), outsider_id);
    assert_eq!(finding["owner_task"], "granted");
    assert_eq!(finding["secret"]["name"], "GITHUB_TOKEN");
    assert_eq!(finding["secret"]["fingerprint_prefix"].as_str().unwrap().len(), 8);
    assert!(findings_of(&daemon, "secret_propagation", root_pid).await.is_empty());
    daemon.stop().await;
}

#[tokio::test]
async fn untasked_access_is_counted_in_auto_mode_and_public_keys_are_not_secrets() {
    let mut daemon = RunningDaemon::start("");
    let (secret, _) = daemon.plant(".ssh/id_ed25519");
    daemon.plant(".ssh/id_ed25519.pub");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let reader = Gated::spawn("exec cat .ssh/id_ed25519 >/dev/null", &home, &[]);
    let reader_id = reader.exec_id();
    assert!(reader.release().0.success(), "untasked access is not killed by default");
    let finding = daemon.finding(is("untasked_access", reader_id.tgid)).await;
    assert_eq!(exec_id(&finding, "process"), reader_id);
    assert_eq!(finding["severity"], "info", "auto mode");
    assert_eq!(finding["sprawl"]["processes"], 1);
    assert_eq!(finding["task"], Value::Null);

    let public = Gated::spawn("exec cat .ssh/id_ed25519.pub >/dev/null", &home, &[]);
    let public_pid = public.pid;
    assert!(public.release().0.success());
    assert!(findings_of(&daemon, "untasked_access", public_pid).await.is_empty(), "benign twin: a public key");
    daemon.stop().await;
}

#[tokio::test]
async fn kill_task_takes_down_a_rogue_task_with_its_detached_child() {
    let mut daemon = RunningDaemon::start("[actions]\ncross_task_reuse = [\"kill_task\"]\n");
    let (secret, _) = daemon.plant(".kube/config");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let owner = Gated::spawn("exec sleep 30", &home, &[]);
    let mut request = TaskRequest::new("cluster-admin", owner.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();

    let read = SharedRead::new(&home, "rogue");
    let rogue = Gated::spawn(
        &format!(
            "(setsid sh -c 'echo $$ > detached.pid; exec sleep 60' &); while [ ! -s detached.pid ]; do sleep 0.05; done; exec {}",
            read.command("../$(basename $PWD)/.kube/config")
        ),
        &home,
        &[],
    );
    let rogue_pid = rogue.pid;
    daemon.client.start_task(&TaskRequest::new("rogue", rogue.pid)).await.unwrap();
    let (status, _) = rogue.release();
    assert_eq!(status.signal(), Some(9), "{status}");
    // kill_task kills in the kernel at the open too, before it signals the others.
    assert_eq!(read.received().len(), 0, "bytes of the secret reached the rogue");
    let detached: u32 = std::fs::read_to_string(home.join("detached.pid")).unwrap().trim().parse().unwrap();
    let finding = daemon.finding(is("cross_task_reuse", rogue_pid)).await;
    assert_eq!(finding["actions"][0]["action"], "kill_task");
    assert_eq!(finding["actions"][0]["result"], "killed", "{finding:#}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while monitor::procfs::start_ticks(detached).is_some() && !is_zombie(detached) {
        assert!(std::time::Instant::now() < deadline, "the detached child of the rogue task survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(monitor::procfs::start_ticks(owner.pid).is_some(), "the owner task is untouched");

    // The recorded open carries the path as the process named it and where the secret lives.
    daemon.settle().await;
    let recording = std::fs::read_to_string(&daemon.record).unwrap();
    let open: Value = recording
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|input| input["kind"] == "secret_open" && input["process"]["tgid"] == rogue_pid)
        .expect("the rogue's open is recorded");
    assert!(open["path"].as_str().unwrap().starts_with("../"), "{open}");
    assert_eq!(open["resolved_path"], secret.display().to_string());
    assert_eq!(open["kernel_action"], "killed");
    drop(owner);
    daemon.stop().await;
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
}

#[tokio::test]
async fn a_broker_token_registered_for_one_task_is_caught_in_another() {
    let mut daemon = RunningDaemon::start("");
    let token = daemon.plant_value();
    let home = daemon.home.path().to_owned();
    let owner = Gated::spawn("exec sleep 30", &home, &[]);
    daemon.client.start_task(&TaskRequest::new("deploy", owner.pid)).await.unwrap();
    let request = monitor::daemon::control::TokenRequest {
        task: "deploy".to_owned(),
        label: "vault lease 7".to_owned(),
        value: Some(token.clone()),
        decoy: false,
    };
    let answer = daemon.client.register_token(&request).await.unwrap();
    assert_eq!(answer["fingerprint_prefix"].as_str().unwrap().len(), 8);

    // A program that lives long enough for the daemon to read its environment (a process gone
    // before that is counted as unreadable: see README, "Known gaps").
    let other = Gated::spawn("exec sleep 1", &home, &[("VAULT_TOKEN", token.as_str())]);
    let other_id = other.exec_id();
    daemon.client.start_task(&TaskRequest::new("reporting", other.pid)).await.unwrap();
    // The default kill_process acts from userspace here (the value is in an environment, not
    // a file).
    assert_eq!(other.release().0.signal(), Some(9));
    let finding = daemon.finding(is("cross_task_reuse", other_id.tgid)).await;
    assert_eq!(finding["task"], "reporting");
    assert_eq!(finding["owner_task"], "deploy");
    assert_eq!(finding["secret"]["name"], "vault lease 7");
    assert_eq!(finding["secret"]["fingerprint_prefix"], answer["fingerprint_prefix"]);
    drop(owner);
    daemon.stop().await;
}
