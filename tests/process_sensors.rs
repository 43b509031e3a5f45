//! The process sensors on the real kernel: a real child's fork, execs and exit are reported
//! with its identity, its parent and its exit code. Needs root.

mod common;

use std::{io::Write as _, process::Stdio, time::Duration};

use monitor::{
    event::{EventKind, ExecId, ExitStatus},
    sensors::{SensorOptions, Sensors},
};

#[tokio::test]
async fn exec_fork_and_exit_of_a_real_child_are_reported() {
    let mut sensors = Sensors::load(SensorOptions::default()).expect("loading the sensors (run as root)");

    // The shell waits on stdin so that its start time can be read from /proc before it execs
    // env, which execs a second shell that exits with code 7.
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "read _; exec /usr/bin/env /bin/sh -c 'exit 7'"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start_ticks = monitor::procfs::start_ticks(pid).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(7));

    let events = common::collect_until(&mut sensors, Duration::from_secs(10), |event| {
        event.process.tgid == pid && matches!(event.kind, EventKind::Exit(_))
    })
    .await;

    let me = std::process::id();
    let child_id = events
        .iter()
        .find_map(|event| match &event.kind {
            EventKind::Fork(fork) if event.process.tgid == me && fork.child.tgid == pid => Some(fork.child),
            _ => None,
        })
        .expect("fork of the child by the test process");
    assert_eq!(monitor::procfs::ns_to_ticks(child_id.start_time), start_ticks, "start time matches /proc");

    let execs: Vec<_> = events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::Exec(exec) if event.process.tgid == pid => Some((event.process, exec)),
            _ => None,
        })
        .collect();
    let names: Vec<_> = execs.iter().map(|(_, exec)| (exec.filename.as_str(), exec.argv0.as_str())).collect();
    assert_eq!(names, [("/bin/sh", "/bin/sh"), ("/usr/bin/env", "/usr/bin/env"), ("/bin/sh", "/bin/sh")]);
    for (process, exec) in &execs {
        assert_eq!(*process, child_id, "an exec keeps the process identity");
        assert_eq!(exec.parent.tgid, me);
        assert_eq!(exec.uid, 0);
    }

    let exit = events.last().unwrap();
    assert_eq!(exit.process, child_id);
    assert_eq!(exit.kind, EventKind::Exit(monitor::event::Exit { status: ExitStatus::Exited(7) }));
    assert!(events.iter().all(|event| !event.read_failed), "no kernel read failed");
    assert_eq!(sensors.lost().unwrap().total(), 0);
    assert_eq!(sensors.decode_errors(), 0);
    let _: ExecId = child_id;
}

#[tokio::test]
async fn a_killed_process_and_a_multithreaded_exit_are_reported_once() {
    let mut sensors = Sensors::load(SensorOptions::default()).expect("loading the sensors (run as root)");
    // A process whose threads all exit: only the last thread's exit is a process exit.
    let mut threads = std::process::Command::new("/bin/sh")
        .args(["-c", "exec /usr/bin/python3 -c 'import threading,os; [t.start() or t.join() for t in [threading.Thread(target=lambda: None) for _ in range(4)]]; os._exit(3)'"])
        .spawn()
        .unwrap();
    let threaded = threads.id();
    assert_eq!(threads.wait().unwrap().code(), Some(3));
    let mut sleeper = std::process::Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let killed = sleeper.id();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    let events = common::collect_until(&mut sensors, Duration::from_secs(10), |event| {
        event.process.tgid == killed && matches!(event.kind, EventKind::Exit(_))
    })
    .await;
    let exits = |pid| {
        events
            .iter()
            .filter_map(move |event| match &event.kind {
                EventKind::Exit(exit) if event.process.tgid == pid => Some(exit.status),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(exits(threaded), [ExitStatus::Exited(3)]);
    assert_eq!(exits(killed), [ExitStatus::Signaled(9)]);
}
