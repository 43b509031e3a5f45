//! The tracepoint tier's raw syscall programs are attached only while something needs them
//! (`monitor/src/sensors/syscall_hooks.rs`): with the file guard, the cgroup hooks and the memory
//! hooks, not even a secret holder does. The real daemon, real processes, and the daemon's own
//! account of its hooks in `status`.

mod common;

use std::time::{Duration, Instant};

use common::{daemon::RunningDaemon, wait_for_comm, Gated};
use monitor::daemon::control::TaskRequest;

/// Only the test's own secrets count: a secret in the environment of some other process on the
/// host would make it a holder, and the programs would rightly stay attached. (The harness puts
/// these keys in its `[catalogue]` table.)
const OWN_CATALOGUE: &str = "defaults = false\nfiles = [\"~/.aws/credentials\"]\nenv = [\"CWTEST_*\"]\n";

async fn attached(daemon: &RunningDaemon) -> bool {
    let status = daemon.client.status().await.unwrap();
    status["kernel"]["syscall_hooks_attached"].as_bool().expect("status says whether the syscall programs are attached")
}

/// Polls until the daemon's tick has made the programs `wanted` (10 s at most).
async fn until_attached(daemon: &RunningDaemon, wanted: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while attached(daemon).await != wanted {
        assert!(Instant::now() < deadline, "the syscall programs never became attached={wanted}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_holder_needs_no_syscall_program_and_its_harvest_is_seen_off_the_syscall_path() {
    let mut daemon = RunningDaemon::start(OWN_CATALOGUE);
    let (secret, _) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // Nobody holds a secret: nothing on the syscall path.
    until_attached(&daemon, false).await;
    // What this tier cannot do is said, in status and in the metrics.
    let gaps = daemon.gaps().await;
    let has = |capability: &str| gaps.iter().any(|gap| gap == capability);
    assert!(has("files:mmap_of_earlier_fd") && has("self_protection"), "{gaps:?}");
    assert!(!has("files:io_uring_open"), "the file guard sees io_uring opens: {gaps:?}");
    assert_eq!(daemon.scrape("credwatch_sensor_gaps{capability=\"files:mmap_of_earlier_fd\"}"), 1);

    // Nor the memory hooks, which only a holder needs.
    let memory_hooks = |daemon: &RunningDaemon| {
        ["tp_btf/mmap_lock_start_locking", "tp_btf/sched_switch"]
            .map(|hook| daemon.scrape(&format!("credwatch_sensor_info{{hook=\"{hook}\",")))
    };
    assert_eq!(memory_hooks(&daemon), [0, 0]);

    // A task's root reads its secret and stays: a holder, and still no syscall program.
    let holder = Gated::spawn("exec 3<.aws/credentials; exec sleep 60", &home, &[]);
    let holder_pid = holder.pid;
    let request = TaskRequest { secrets: vec![secret.display().to_string()], ..TaskRequest::new("holder", holder_pid) };
    daemon.client.start_task(&request).await.unwrap();
    let holding = std::thread::spawn(move || holder.release());
    wait_for_comm(holder_pid, "sleep");
    daemon.settle().await;
    assert!(!attached(&daemon).await, "a holder, and no syscall program");
    // The memory hooks were attached before the holding; the metrics follow on the daemon's tick.
    let deadline = Instant::now() + Duration::from_secs(10);
    while memory_hooks(&daemon) != [1, 1] {
        assert!(Instant::now() < deadline, "the memory hooks are not attached for a holder");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A process in no task reaches into the holder's environment: seen by the memory hooks.
    let harvester = Gated::spawn(&format!("exec cat /proc/{holder_pid}/environ >/dev/null"), &home, &[]);
    let harvester_pid = harvester.pid;
    assert!(harvester.release().0.success());
    daemon
        .finding(|finding| finding["rule"] == "environ_harvest" && finding["process"]["pid"] == harvester_pid)
        .await;
    assert!(!attached(&daemon).await, "seen without a syscall program");

    // The holder is gone: nothing held, everything detached again.
    // SAFETY: signalling the test's own child.
    unsafe { libc::kill(holder_pid as i32, libc::SIGKILL) };
    holding.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while memory_hooks(&daemon) != [0, 0] {
        assert!(Instant::now() < deadline, "the memory hooks stay attached with no holder");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.stop().await;
}
