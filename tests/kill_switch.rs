//! Kill switches on the real kernel: the in-kernel kill at syscall exit, userspace kills with
//! kernel verdicts, and killing a whole task including a double-forked child. Needs root.

mod common;

use std::{
    os::unix::{fs::MetadataExt as _, process::ExitStatusExt as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{shared_read::SharedRead, Planted};
use monitor::{
    actions::kill::{kill_process, kill_task, KillOutcome},
    event::{EventKind, ExecId, InodeId, KernelAction},
    sensors::{SensorOptions, Sensors},
};
use monitor_common::maps::policy;

const OWNER: u32 = 1;
const ROGUE: u32 = 2;
const SHARER: u32 = 3;

fn load() -> Sensors {
    Sensors::load(SensorOptions::default()).expect("loading the sensors (run as root)")
}

/// Runs `script` in a gated shell that first joins kernel task `task` (if any).
fn run_in_task(sensors: &mut Sensors, task: Option<u32>, script: &str, dir: &std::path::Path) -> (std::process::ExitStatus, String, u32) {
    let child = common::Gated::spawn(script, dir, &[]);
    let pid = child.pid;
    if let Some(task) = task {
        sensors.maps_mut().join_task(pid, task).unwrap();
    }
    let (status, output) = child.release();
    (status, output, pid)
}

#[tokio::test]
async fn a_rogue_task_is_killed_in_the_kernel_before_it_reads_one_byte() {
    let planted = Planted::new("kernel-kill");
    let mut sensors = load();
    let meta = std::fs::metadata(&planted.path).unwrap();
    let inode = InodeId { dev: meta.dev(), ino: meta.ino() };
    let maps = sensors.maps_mut();
    maps.set_enforcement(policy::KILL_OTHER_TASK, policy::KILL_OTHER_TASK, policy::REPORT, false).unwrap();
    maps.set_grantee(9, OWNER, true).unwrap();
    maps.set_grantee(9, SHARER, true).unwrap();
    maps.watch(inode, 9, policy::ACTIVE).unwrap();
    let dir = planted.dir.path();

    let read = SharedRead::new(dir, "rogue");
    let (status, _, rogue) = run_in_task(&mut sensors, Some(ROGUE), &format!("exec {}", read.command("secret")), dir);
    assert_eq!(status.signal(), Some(9), "{status}");
    assert_eq!(read.received().len(), 0, "bytes of the secret reached the rogue");

    for owner in [OWNER, SHARER] {
        let (status, output, _) = run_in_task(&mut sensors, Some(owner), "exec cat secret", dir);
        assert!(status.success(), "each task granted the secret reads it: {status}");
        // Compared without printing: a failure must not write the planted value.
        assert!(output == planted.value, "an owner's read differs ({} bytes)", output.len());
    }

    let (status, _, _) = run_in_task(&mut sensors, None, "exec cat secret", dir);
    assert!(status.success(), "KILL_OTHER_TASK spares untasked processes: {status}");

    let events = common::collect_until(&mut sensors, Duration::from_secs(10), |event| {
        event.process.tgid == rogue && matches!(event.kind, EventKind::Exit(_))
    })
    .await;
    let actions: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::SecretOpen(open) if event.process.tgid == rogue => Some(open.kernel_action),
            _ => None,
        })
        .collect();
    assert_eq!(actions, [KernelAction::Killed]);
}

#[tokio::test]
async fn after_its_task_ended_even_an_owner_process_is_killed() {
    let planted = Planted::new("post-task");
    let mut sensors = load();
    let meta = std::fs::metadata(&planted.path).unwrap();
    let maps = sensors.maps_mut();
    maps.set_enforcement(policy::KILL_AFTER_TASK, policy::KILL_AFTER_TASK, policy::REPORT, false).unwrap();
    maps.set_grantee(9, SHARER, true).unwrap();
    maps.watch(InodeId { dev: meta.dev(), ino: meta.ino() }, 9, policy::ACTIVE).unwrap();
    maps.finish_task(OWNER).unwrap();
    let read = SharedRead::new(planted.dir.path(), "ended-owner");
    let script = format!("exec {}", read.command("secret"));
    let (status, _, _) = run_in_task(&mut sensors, Some(OWNER), &script, planted.dir.path());
    assert_eq!(status.signal(), Some(9), "{status}");
    assert_eq!(read.received().len(), 0, "bytes of the secret reached the ended task's process");
    let (status, output, _) = run_in_task(&mut sensors, Some(SHARER), "exec cat secret", planted.dir.path());
    assert!(status.success() && output == planted.value, "the grantee still active reads it: {status}");
}

#[tokio::test]
async fn a_userspace_kill_checks_identity_and_leaves_a_kernel_verdict() {
    let mut sensors = load();
    let mut sleeper = Command::new("/bin/sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id();
    let right = monitor::procfs::exec_id(pid).unwrap();
    let wrong = ExecId { start_time: right.start_time + 1_000_000_000, ..right };
    assert_eq!(kill_process(wrong, sensors.maps_mut()).unwrap(), KillOutcome::Gone, "a reused pid is spared");
    assert!(sleeper.try_wait().unwrap().is_none());

    assert_eq!(kill_process(right, sensors.maps_mut()).unwrap(), KillOutcome::Signalled);
    assert_eq!(sleeper.wait().unwrap().signal(), Some(9));
    sensors.maps_mut().clear_verdict(pid).unwrap();

    // A verdict alone kills at the next syscall.
    let waiting = common::Gated::spawn("echo alive", &std::env::temp_dir(), &[]);
    let pid = waiting.pid;
    sensors.maps_mut().add_verdict(pid).unwrap();
    let (status, output) = waiting.release();
    assert_eq!(status.signal(), Some(9));
    assert!(output.is_empty(), "{output}");
    sensors.maps_mut().clear_verdict(pid).unwrap();
}

#[tokio::test]
async fn kill_task_reaches_a_double_forked_child() {
    const TASK: u32 = 5;
    let mut sensors = load();
    let mut root = Command::new("/bin/sh")
        .args(["-c", "read _; (setsid /bin/sleep 60 &); exec /bin/sleep 60"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sensors.maps_mut().join_task(root.id(), TASK).unwrap();
    std::io::Write::write_all(&mut root.stdin.take().unwrap(), b"go\n").unwrap();

    // Wait for the detached sleeper: a member whose parent is not the root.
    let deadline = Instant::now() + Duration::from_secs(10);
    let detached = loop {
        let members = sensors.maps_mut().members_of(TASK);
        if let Some(&pid) = members.iter().find(|&&pid| pid != root.id() && is_sleep(pid)) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no detached member among {members:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(parent_of(detached), root.id(), "the child left the tree");

    let outcome = kill_task(TASK, None, sensors.maps_mut());
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert!(outcome.signalled >= 2, "{}", outcome.signalled);
    assert_eq!(root.wait().unwrap().signal(), Some(9));
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_running(detached) {
        assert!(Instant::now() < deadline, "the detached child survived");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stat_field(pid: u32, index: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(index).map(str::to_owned)
}

fn is_sleep(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "sleep")
}

fn parent_of(pid: u32) -> u32 {
    stat_field(pid, 1).unwrap().parse().unwrap()
}

/// Alive and not a zombie waiting for whoever adopted it.
fn is_running(pid: u32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z")
}
