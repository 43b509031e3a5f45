//! The tracepoint tier's raw syscall programs are attached only while something needs them
//! (`monitor/src/sensors/syscall_hooks.rs`): with the file guard, the cgroup hooks and the memory
//! hooks, not even a secret holder does. The real daemon, real processes, and the kernel's own
//! account of the daemon's links, which the daemon's `status` and metrics must agree with.

mod common;

use std::{
    collections::BTreeMap,
    os::unix::process::ExitStatusExt as _,
    time::{Duration, Instant},
};

use common::{daemon::RunningDaemon, wait_for_comm, Gated};
use monitor::daemon::control::TaskRequest;

/// Only the test's own secrets count: a secret in the environment of some other process on the
/// host would make it a holder, and the programs would rightly stay attached. (The harness puts
/// these keys in its `[catalogue]` table.)
const OWN_CATALOGUE: &str = "defaults = false\nfiles = [\"~/.aws/credentials\"]\nenv = [\"CWTEST_*\"]\n";

/// The fdinfo of each of the daemon's descriptors, as `name: value` fields: the kernel's own
/// account of the BPF links and programs the daemon holds.
fn fdinfo(daemon: &RunningDaemon) -> Vec<BTreeMap<String, String>> {
    let entries = std::fs::read_dir(format!("/proc/{}/fdinfo", daemon.pid())).unwrap();
    entries
        // A descriptor closed since the listing has no fdinfo left.
        .filter_map(|entry| std::fs::read_to_string(entry.unwrap().path()).ok())
        .map(|info| {
            info.lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
                .collect()
        })
        .collect()
}

/// The tracepoints the kernel runs the daemon's programs on: raw tracepoint and tp_btf programs
/// alike are raw tracepoint links.
fn kernel_links(daemon: &RunningDaemon) -> Vec<String> {
    let mut links: Vec<String> = fdinfo(daemon)
        .into_iter()
        .filter(|fields| fields.get("link_type").is_some_and(|kind| kind == "raw_tracepoint"))
        .map(|fields| fields.get("tp_name").expect("a raw tracepoint link names its tracepoint").clone())
        .collect();
    links.sort();
    links
}

/// Whether the kernel runs one of the raw syscall programs for the daemon.
fn syscall_programs_attached(daemon: &RunningDaemon) -> bool {
    kernel_links(daemon).iter().any(|link| link == "sys_enter" || link == "sys_exit")
}

/// Which of the memory hooks the kernel runs for the daemon.
fn memory_hooks_attached(daemon: &RunningDaemon) -> [bool; 2] {
    let links = kernel_links(daemon);
    ["mmap_lock_start_locking", "sched_switch"].map(|hook| links.iter().any(|link| link == hook))
}

/// What the daemon says of its hooks, in status and in the metrics: whether the syscall programs
/// are attached, and which memory hooks.
async fn daemon_account(daemon: &RunningDaemon) -> (bool, [bool; 2]) {
    let status = daemon.client.status().await.unwrap();
    let attached = status["kernel"]["syscall_hooks_attached"].as_bool().expect("status says whether the syscall programs are attached");
    let memory_hooks = ["tp_btf/mmap_lock_start_locking", "tp_btf/sched_switch"]
        .map(|hook| daemon.scrape(&format!("credwatch_sensor_info{{hook=\"{hook}\",")) == 1);
    (attached, memory_hooks)
}

/// Polls (10 s at most) until `state` holds of the kernel's links, then until the daemon's
/// account of them agrees with the kernel's (it follows on the daemon's 1 s tick).
async fn until(daemon: &RunningDaemon, what: &str, state: impl Fn(&RunningDaemon) -> bool) {
    let deadline = Instant::now() + common::patience(10);
    while !state(daemon) {
        assert!(Instant::now() < deadline, "never {what}: {:?}", kernel_links(daemon));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let kernel = (syscall_programs_attached(daemon), memory_hooks_attached(daemon));
        let said = daemon_account(daemon).await;
        if said == kernel {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: the daemon says {said:?}, the kernel {kernel:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_holder_needs_no_syscall_program_and_its_harvest_is_seen_off_the_syscall_path() {
    let mut daemon = RunningDaemon::start(OWN_CATALOGUE);
    let (secret, _) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // Nobody holds a secret: nothing on the syscall path, nor the memory hooks, which only a
    // holder needs.
    let none = |daemon: &RunningDaemon| !syscall_programs_attached(daemon) && memory_hooks_attached(daemon) == [false, false];
    until(&daemon, "detached", none).await;
    // What this tier cannot do is said, in status and in the metrics.
    let gaps = daemon.gaps().await;
    let has = |capability: &str| gaps.iter().any(|gap| gap == capability);
    assert!(has("files:mmap_of_earlier_fd") && has("self_protection"), "{gaps:?}");
    assert!(!has("files:io_uring_open"), "the file guard sees io_uring opens: {gaps:?}");
    assert_eq!(daemon.scrape("credwatch_sensor_gaps{capability=\"files:mmap_of_earlier_fd\"}"), 1);

    // A task's root reads its secret and stays: a holder, and still no syscall program.
    let holder = Gated::spawn("exec 3<.aws/credentials; exec sleep 60", &home, &[]);
    let holder_pid = holder.pid;
    let request = TaskRequest { secrets: vec![secret.display().to_string()], ..TaskRequest::new("holder", holder_pid) };
    daemon.client.start_task(&request).await.unwrap();
    let holding = std::thread::spawn(move || holder.release());
    wait_for_comm(holder_pid, "sleep");
    daemon.settle().await;
    // The memory hooks were attached before the holding was recorded.
    assert_eq!(memory_hooks_attached(&daemon), [true, true], "{:?}", kernel_links(&daemon));
    assert!(!syscall_programs_attached(&daemon), "a holder, and no syscall program: {:?}", kernel_links(&daemon));
    until(&daemon, "attached for the holder", |daemon| memory_hooks_attached(daemon) == [true, true]).await;

    // A process in no task reaches into the holder's environment: seen by the memory hooks.
    let harvester = Gated::spawn(&format!("exec cat /proc/{holder_pid}/environ >/dev/null"), &home, &[]);
    let harvester_pid = harvester.pid;
    assert!(harvester.release().0.success());
    daemon
        .finding(|finding| finding["rule"] == "environ_harvest" && finding["process"]["pid"] == harvester_pid)
        .await;
    assert!(!syscall_programs_attached(&daemon), "seen without a syscall program: {:?}", kernel_links(&daemon));

    // The holder is gone: nothing held, everything detached again.
    // SAFETY: signalling the test's own child.
    unsafe { libc::kill(holder_pid as i32, libc::SIGKILL) };
    holding.join().unwrap();
    until(&daemon, "detached with no holder", none).await;
    daemon.stop().await;
}

/// How often the kernel ran the daemon's `sys_enter` program, while run counts are enabled: the
/// daemon's own program (its fdinfo names the id; other tests' daemons load theirs), named and
/// counted by the kernel's program info.
fn sys_enter_runs(daemon: &RunningDaemon) -> u64 {
    let ids: Vec<u32> = fdinfo(daemon)
        .into_iter()
        .filter(|fields| !fields.contains_key("link_type"))
        .filter_map(|fields| fields.get("prog_id")?.parse().ok())
        .collect();
    let program = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|program| ids.contains(&program.id()) && program.name_as_str() == Some("sys_enter"))
        .expect("the daemon has a sys_enter program loaded");
    program.run_count()
}

#[tokio::test]
async fn a_kill_verdict_puts_sys_enter_on_the_syscall_path_until_its_process_is_gone() {
    // A variable of its own: the other tests' daemons must not take its root for a holder.
    let config = "defaults = false\nenv = [\"CWKILL_*\"]\n[actions]\nsecret_propagation = [\"kill_process\"]\n";
    let mut daemon = RunningDaemon::start(config);
    let _counting = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let home = daemon.home.path().to_owned();
    let token = daemon.plant_value();
    let env = [("CWKILL_TOKEN", token.as_str())];
    let root = Gated::spawn("exec sleep 60", &home, &env);
    let request = TaskRequest { env: vec!["CWKILL_TOKEN".to_owned()], ..TaskRequest::new("granted", root.pid) };
    daemon.client.start_task(&request).await.unwrap();
    until(&daemon, "without syscall programs", |daemon| !syscall_programs_attached(daemon)).await;
    let before = sys_enter_runs(&daemon);

    // A process in no task starts with the task's secret in its environment: the daemon kills it,
    // with a kernel verdict in case it raced, and sys_enter enforces verdicts.
    let outsider = Gated::spawn("exec env sleep 60", &home, &env);
    let outsider_pid = outsider.pid;
    let (status, _) = outsider.release();
    assert_eq!(status.signal(), Some(9), "{status}");
    let finding = daemon
        .finding(|finding| finding["rule"] == "secret_propagation" && finding["process"]["pid"] == outsider_pid)
        .await;
    assert_eq!(finding["actions"][0]["result"], "signalled", "{finding:#}");
    assert!(sys_enter_runs(&daemon) > before, "sys_enter ran while the verdict was pending");

    // The killed process is gone and its verdict with it: nothing on the syscall path again.
    until(&daemon, "detached once the verdict was served", |daemon| !syscall_programs_attached(daemon)).await;
    drop(root);
    daemon.stop().await;
}
