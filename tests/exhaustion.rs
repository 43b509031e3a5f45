//! No map or buffer an agent can fill to escape, on the real kernel and the real daemon: each
//! kernel map is given a small size and filled, then the failure is counted, a critical
//! `monitor_blind` finding is raised, and a bound secret opened by another task's process is
//! still killed before it reads a byte. Needs root.

mod common;

use std::{
    io::ErrorKind,
    net::TcpListener,
    os::unix::process::ExitStatusExt as _,
    path::Path,
};

use common::{daemon::RunningDaemon, fifo, open_fifo_for_writing, pid_alive, shared_read::SharedRead, wait_for_comm, Gated};
use monitor::daemon::control::TaskRequest;
use serde_json::Value;

fn granted(id: &str, root: u32, secrets: &[&Path]) -> TaskRequest {
    TaskRequest { secrets: secrets.iter().map(|secret| secret.display().to_string()).collect(), ..TaskRequest::new(id, root) }
}

/// Waits for the `monitor_blind` finding about `map`, then checks the status counts it.
async fn blind(daemon: &RunningDaemon, map: &str) -> Value {
    let subject = format!("kernel map {map}");
    let finding = daemon.finding(|finding| finding["rule"] == "monitor_blind" && finding["secret"]["name"] == subject).await;
    assert_eq!(finding["severity"], "critical");
    let status = daemon.client.status().await.unwrap();
    let maps = status["kernel"]["maps"].as_array().unwrap();
    let counted = maps.iter().find(|entry| entry["map"] == map).unwrap();
    assert!(counted["write_failures"].as_u64().unwrap() > 0, "{status:#}");
    finding
}

/// A process of a new task `intruder` reads `secret` (bound to another task): it must be killed
/// at the open, in the kernel, with not a byte copied to it.
async fn reuse_is_still_killed(daemon: &RunningDaemon, secret: &Path) {
    let read = SharedRead::new(daemon.home.path(), "intruder");
    let reader = Gated::spawn(&format!("exec {}", read.command(&secret.display().to_string())), daemon.home.path(), &[]);
    let pid = reader.pid;
    daemon.client.start_task(&TaskRequest::new("intruder", reader.pid)).await.unwrap();
    let (status, _) = reader.release();
    killed_before_a_byte(daemon, pid, status, &read).await;
}

/// Process `pid`, which read a secret through `read`, died by SIGKILL with nothing in its buffer,
/// and its finding says the kernel killed it.
async fn killed_before_a_byte(daemon: &RunningDaemon, pid: u32, status: std::process::ExitStatus, read: &SharedRead) {
    assert_eq!(status.signal(), Some(9), "the reader was killed at the open: {status}");
    assert_eq!(read.received().len(), 0, "bytes of the secret reached the reader");
    let finding = daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["pid"] == pid).await;
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
}

/// Process `pid`, which read a secret through `read` while its task could not be recorded, was
/// refused with nothing in its buffer; returns the result of its finding's `kill_process`.
async fn refused_without_a_byte(daemon: &RunningDaemon, pid: u32, read: &SharedRead) -> String {
    assert_eq!(read.received().len(), 0, "bytes of the secret reached the reader");
    let finding = daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["pid"] == pid).await;
    let actions = finding["actions"].as_array().unwrap();
    let kill = actions.iter().find(|action| action["action"] == "kill_process").expect("the default plan kills");
    kill["result"].as_str().unwrap().to_owned()
}

/// The process was refused (EPERM: python exits 1), not killed, and its finding says it was
/// spared: it may be the owner's own new process.
async fn spared(daemon: &RunningDaemon, pid: u32, status: std::process::ExitStatus, read: &SharedRead) {
    assert_eq!((status.code(), status.signal()), (Some(1), None), "the reader was refused, not killed: {status}");
    assert_eq!(refused_without_a_byte(daemon, pid, read).await, "spared_task_unrecorded");
}

/// A listener on loopback that never blocks the test.
fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Whether `listener` has a connection waiting.
fn connected(listener: &TcpListener) -> bool {
    match listener.accept() {
        Ok(_) => true,
        Err(error) if error.kind() == ErrorKind::WouldBlock => false,
        Err(error) => panic!("accept: {error}"),
    }
}

/// A script for a task root that forks `children` processes which live on (each needs a
/// `TASK_OF` entry, and a `HOLDERS` one when the root holds a secret), writing their pids to
/// `children` in its directory, then runs `then` and waits for them.
fn many_children(prelude: &str, children: u32, then: &str) -> String {
    format!("{prelude}; for i in $(seq {children}); do sleep 120 >/dev/null & echo $! >> children; done; {then}; wait")
}

/// The pids a `many_children` root wrote, once all `count` are there (10 s at most).
fn forked(home: &Path, count: usize) -> Vec<u32> {
    let deadline = std::time::Instant::now() + common::patience(10);
    loop {
        let pids = children(home);
        if pids.len() >= count {
            return pids;
        }
        assert!(std::time::Instant::now() < deadline, "{} of {count} children forked", pids.len());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The pids a `many_children` root has written so far.
fn children(home: &Path) -> Vec<u32> {
    let pids = std::fs::read_to_string(home.join("children")).unwrap_or_default();
    pids.lines().filter_map(|line| line.trim().parse().ok()).collect()
}

/// Kills what a `many_children` root forked; the root, waiting for them, then exits.
fn kill_children(home: &Path) {
    for pid in children(home) {
        // SAFETY: signalling the test's own grandchildren.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

#[tokio::test]
async fn a_full_membership_map_fails_closed() {
    let mut daemon = RunningDaemon::start("[maps]\ntask_of = 16\n");
    let (secret, _) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // The root's first child, recorded before the map fills, reads the secret once `late` exists
    // (after the task ended). Once its children fill the map, the root starts one more that reads
    // the task's own secret.
    let late = SharedRead::new(&home, "late");
    let prelude = format!(
        "{{ sh -c 'echo $$ > late-pid; while [ ! -e late ]; do sleep 0.05; done; exec {}' & }}",
        late.command(".aws/credentials")
    );
    let own = SharedRead::new(&home, "owner-child");
    let then = format!("sh -c 'echo $$ > own-pid; exec {}'; echo $? > own-status", own.command(".aws/credentials"));
    let root = Gated::spawn(&many_children(&prelude, 40, &then), &home, &[]);
    daemon.client.start_task(&granted("crowd", root.pid, &[&secret])).await.unwrap();
    // A thread, not a blocking task: a test that fails meanwhile must not wait for the root.
    let release = std::thread::spawn(move || root.release());
    let finding = blind(&daemon, "TASK_OF").await;
    assert_eq!(finding["task"], "crowd", "the finding names the task whose fork failed: {finding:#}");
    let status = daemon.client.status().await.unwrap();
    assert_eq!(status["kernel"]["fail_closed"], serde_json::json!(["membership"]), "{status:#}");
    let doctor = std::process::Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["doctor", "--socket"])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&doctor.stdout);
    let row = table.lines().find(|line| line.starts_with("daemon-map:TASK_OF")).unwrap_or_default();
    assert!(row.contains("full") && row.contains("16 entries"), "doctor shows the full map:\n{table}");

    // The task's own children live on: none read a secret. The one that reads the task's own
    // secret is refused, not killed: the kernel cannot tell it from another task's process.
    let dead: Vec<u32> = forked(&home, 40).into_iter().filter(|&pid| !pid_alive(pid)).collect();
    assert!(dead.is_empty(), "children of the task that read no secret were killed: {dead:?}; {:#?}", daemon.findings().await);
    let deadline = std::time::Instant::now() + common::patience(10);
    while !home.join("own-status").exists() {
        assert!(std::time::Instant::now() < deadline, "the owner's new child never finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let own_pid: u32 = std::fs::read_to_string(home.join("own-pid")).unwrap().trim().parse().unwrap();
    let own_status = std::fs::read_to_string(home.join("own-status")).unwrap();
    assert_eq!(own_status.trim(), "1", "the owner's new child was refused (exit 1), not killed (137)");
    assert_eq!(refused_without_a_byte(&daemon, own_pid, &own).await, "spared_task_unrecorded");
    // The new task's root cannot be recorded either: judged as another task's, never as no task's,
    // and refused without a byte; the daemon knows it in another task, so kills it after.
    let read = SharedRead::new(&home, "intruder");
    let reader = Gated::spawn(&format!("exec {}", read.command(&secret.display().to_string())), &home, &[]);
    let pid = reader.pid;
    daemon.client.start_task(&TaskRequest::new("intruder", reader.pid)).await.unwrap();
    let (status, _) = reader.release();
    assert!(status.code() == Some(1) || status.signal() == Some(libc::SIGKILL), "refused, then killed: {status}");
    let result = refused_without_a_byte(&daemon, pid, &read).await;
    assert!(result == "signalled" || result == "gone", "another task's process is not spared: {result}");
    // A process in no task is now judged as another task's too: it cannot be told from a member
    // whose membership was lost.
    let read = SharedRead::new(&home, "outsider");
    let mut outsider = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {}", read.command(".aws/credentials")))
        .current_dir(&home)
        .spawn()
        .unwrap();
    let pid = outsider.id();
    spared(&daemon, pid, outsider.wait().unwrap(), &read).await;
    // A post-task reuse by a member recorded before the map filled: killed before a byte.
    daemon.client.end_task("crowd").await.unwrap();
    std::fs::write(home.join("late"), b"").unwrap();
    let late_pid: u32 = std::fs::read_to_string(home.join("late-pid")).unwrap().trim().parse().unwrap();
    let finding = daemon.finding(|finding| finding["rule"] == "post_task_reuse" && finding["process"]["pid"] == late_pid).await;
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
    assert!(late.received().is_empty(), "bytes of the secret reached the post-task reader");

    // Drained: once the crowd is gone, every task process is recorded again, and the kernel
    // judges by membership again: with the secret granted to a task again, a process in no task
    // reads it (reported, not refused, as untasked access is by default).
    kill_children(&home);
    release.join().unwrap();
    let deadline = std::time::Instant::now() + common::patience(10);
    loop {
        let status = daemon.client.status().await.unwrap();
        if status["kernel"]["fail_closed"] == serde_json::json!([]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the membership map drained, fail-closed stays: {status:#}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let keeper = Gated::spawn(":", &home, &[]);
    daemon.client.start_task(&granted("after", keeper.pid, &[&secret])).await.unwrap();
    let read = SharedRead::new(&home, "outsider-after");
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {}", read.command(".aws/credentials")))
        .current_dir(&home)
        .status()
        .unwrap();
    assert!(status.success() && !read.received().is_empty(), "a process in no task reads it again: {status}");
    drop(keeper);
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_holders_map_reports_every_members_connects() {
    let mut daemon = RunningDaemon::start("[maps]\nholders = 8\n");
    let (secret, _) = daemon.plant(".netrc");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let (elsewhere, port) = listener();
    let go = fifo(&home, "go");
    // The root holds the secret (an open fd) and its 20 children inherit the holding: more holders
    // than the map holds. Once the map is full, one more member, a holder the kernel could not
    // record, connects outside the task's allow list.
    let connect = format!(
        "python3 -c \"import os, socket; open('connector', 'w').write(str(os.getpid())); \
         socket.create_connection(('127.0.0.1', {port})).close()\""
    );
    let root = Gated::spawn(&many_children("exec 3<.netrc", 20, &format!("read _ < go; {connect}")), &home, &[]);
    let mut request = granted("holders", root.pid, &[&secret]);
    request.allow = Some(vec!["127.0.0.1:1".into()]);
    daemon.client.start_task(&request).await.unwrap();
    // A thread, not a blocking task: a test that fails meanwhile must not wait for the root.
    let release = std::thread::spawn(move || root.release());
    blind(&daemon, "HOLDERS").await;
    let status = daemon.client.status().await.unwrap();
    assert_eq!(status["kernel"]["fail_closed"], serde_json::json!(["holdings"]), "{status:#}");
    std::io::Write::write_all(&mut open_fifo_for_writing(&go), b"go\n").unwrap();

    // Reported by the kernel although it could not record the connector as a holder.
    let destination = format!("127.0.0.1:{port}");
    let finding = daemon
        .finding(|finding| finding["rule"] == "unexpected_destination" && finding["destination"] == destination.as_str())
        .await;
    let connector: u32 = std::fs::read_to_string(home.join("connector")).unwrap().parse().unwrap();
    assert_eq!(finding["process"]["pid"], connector, "{finding:#}");
    assert_eq!(finding["task"], "holders");
    assert!(connected(&elsewhere), "an alert only: the connect went through");
    reuse_is_still_killed(&daemon, &secret).await;
    kill_children(&home);
    release.join().unwrap();
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_watch_map_keeps_the_secrets_already_watched() {
    let mut daemon = RunningDaemon::start("[maps]\nwatched = 4\n");
    let (secret, value) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let owner = Gated::spawn("exec cat .aws/credentials", &home, &[]);
    daemon.client.start_task(&granted("owner", owner.pid, &[&secret])).await.unwrap();
    for key in 0..8 {
        daemon.plant(&format!(".ssh/id_flood{key}"));
    }
    blind(&daemon, "WATCHED").await;
    reuse_is_still_killed(&daemon, &secret).await;
    let (status, output) = owner.release();
    assert!(status.success() && output == value, "the owner still reads its secret: {status}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_owner_map_never_refuses_an_owner() {
    let mut daemon = RunningDaemon::start("[maps]\ngrantees = 2\n");
    let (shared, shared_value) = daemon.plant(".docker/config.json");
    let (private, _) = daemon.plant(".vault-token");
    daemon.wait_watched(&shared);
    daemon.wait_watched(&private);
    let home = daemon.home.path().to_owned();
    let first = Gated::spawn("sleep 120", &home, &[]);
    daemon.client.start_task(&granted("first", first.pid, &[&private, &shared])).await.unwrap();
    // No room for a third owner: the shared secret is left to the daemon, not refused to them.
    let third = Gated::spawn("exec cat .docker/config.json", &home, &[]);
    daemon.client.start_task(&granted("third", third.pid, &[&shared])).await.unwrap();
    blind(&daemon, "GRANTEES").await;
    let (status, output) = third.release();
    assert!(status.success() && output == shared_value, "an owner is never refused: {status}");
    reuse_is_still_killed(&daemon, &private).await;
    drop(first);
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_verdict_map_still_kills() {
    let config = "[maps]\nverdicts = 1\n[actions]\nenviron_harvest = [\"kill_process\"]\n";
    let mut daemon = RunningDaemon::start(config);
    let (secret, _) = daemon.plant(".git-credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // The holder's own process opens the secret, forks a second holder, then waits as `sleep`.
    let holder = Gated::spawn("exec 3<.git-credentials; sleep 120 & echo $! >second.pid; exec sleep 120", &home, &[]);
    let holder_pid = holder.pid;
    daemon.client.start_task(&granted("holder", holder.pid, &[&secret])).await.unwrap();
    let holder = std::thread::spawn(move || holder.release());
    wait_for_comm(holder_pid, "sleep");
    let second: u32 = std::fs::read_to_string(home.join("second.pid")).unwrap().trim().parse().unwrap();
    // Each harvester's own process ptrace-attaches to a holder, which stops for it (the kernel
    // reports the tracer; the daemon kills it), then waits as `sleep`, still attached.
    let attach = |target: u32| {
        format!(
            "exec python3 -c 'import ctypes, os; libc = ctypes.CDLL(None); assert libc.ptrace(16, {target}, 0, 0) == 0; \
             os.waitpid({target}, 0x40000000); os.execv(\"/bin/sleep\", [\"sleep\", \"120\"])'"
        )
    };
    let harvesters = [Gated::spawn(&attach(holder_pid), &home, &[]), Gated::spawn(&attach(second), &home, &[])];
    for (index, harvester) in harvesters.iter().enumerate() {
        daemon.client.start_task(&TaskRequest::new(&format!("harvester-{index}"), harvester.pid)).await.unwrap();
    }
    // Both harvests reach the stopped daemon before it drains: two kills, one verdict slot.
    daemon.pause();
    let pids: Vec<u32> = harvesters.iter().map(|harvester| harvester.pid).collect();
    let released: Vec<_> =
        harvesters.into_iter().map(|harvester| std::thread::spawn(move || harvester.release())).collect();
    for &pid in &pids {
        wait_for_comm(pid, "sleep");
    }
    daemon.resume();
    for thread in released {
        let (status, _) = thread.join().unwrap();
        if status.signal() != Some(9) {
            let status_report = daemon.client.status().await.unwrap();
            panic!(
                "each harvester is killed: {status}; {:#?}\nstatus: {status_report:#}\nlog:\n{}",
                daemon.findings().await,
                daemon.log_text()
            );
        }
    }
    blind(&daemon, "VERDICTS").await;
    reuse_is_still_killed(&daemon, &secret).await;
    // SAFETY: signalling the test's own children.
    unsafe {
        libc::kill(second as i32, libc::SIGKILL);
        libc::kill(holder_pid as i32, libc::SIGKILL);
    }
    holder.join().unwrap();
    daemon.stop().await;
}

#[tokio::test]
async fn a_full_allowlist_map_drops_the_partial_list() {
    let config = "[maps]\nallowed_destinations = 2\n[actions]\nunexpected_destination = [\"deny\"]\n";
    let mut daemon = RunningDaemon::start(config);
    let (secret, value) = daemon.plant(".pypirc");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // Four listed destinations, three of them listeners, in a map with room for two: whichever
    // two the kernel took, a partial list would refuse at least one listed listener.
    let listed = [listener(), listener(), listener()];
    let ports: Vec<String> = listed.iter().map(|(_, port)| port.to_string()).collect();
    let unlisted_port = listener().1;
    let go = fifo(&home, "go");
    // The owner reads its secret (a holder: its connects are judged), waits for the map to be
    // full, connects to each listed listener and prints each connect's errno (0: connected), then
    // connects to an unlisted port and waits.
    let connects = format!(
        "exec /usr/bin/python3 -c \"import socket, sys, time\nprint(len(open('.pypirc').read()), flush=True)\nopen('go').read()\n\
         for port in sys.argv[1:]:\n  print(socket.socket().connect_ex(('127.0.0.1', int(port))), flush=True)\n\
         socket.socket().connect_ex(('127.0.0.1', {unlisted_port}))\ntime.sleep(120)\" {}",
        ports.join(" ")
    );
    let owner = Gated::spawn(&connects, &home, &[]);
    let owner_pid = owner.pid;
    let mut request = granted("listed", owner.pid, &[&secret]);
    let mut allow: Vec<String> = listed.iter().map(|(_, port)| format!("127.0.0.1:{port}")).collect();
    allow.push("10.0.0.0/8:443".into());
    request.allow = Some(allow);
    daemon.client.start_task(&request).await.unwrap();
    let release = std::thread::spawn(move || owner.release());
    blind(&daemon, "ALLOWED_DESTINATIONS").await;
    std::io::Write::write_all(&mut open_fifo_for_writing(&go), b"go\n").unwrap();
    let destination = format!("127.0.0.1:{unlisted_port}");
    let finding = daemon
        .finding(|finding| finding["rule"] == "unexpected_destination" && finding["destination"] == destination.as_str())
        .await;
    // No partial list in the kernel: the daemon judged the unlisted connect after the fact, and
    // deny, which the kernel could not do, killed the owner instead.
    assert_eq!(finding["process"]["pid"], owner_pid, "{finding:#}");
    assert_eq!(finding["actions"][0]["result"], "signalled", "{finding:#}");
    let (status, output) = release.join().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    let expected = format!("{}\n0\n0\n0\n", value.len());
    assert_eq!(output, expected, "the length the owner read of its secret, then each listed connect's errno");
    for (listener, port) in &listed {
        assert!(connected(listener), "the listed 127.0.0.1:{port} saw its connection");
    }
    daemon.settle().await;
    let unexpected: Vec<_> =
        daemon.findings().await.into_iter().filter(|finding| finding["rule"] == "unexpected_destination").collect();
    assert_eq!(unexpected.len(), 1, "only the unlisted destination is unexpected: {unexpected:#?}");
    reuse_is_still_killed(&daemon, &secret).await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_flood_of_one_tasks_events_cannot_hide_another_tasks_reuse() {
    let mut daemon = RunningDaemon::start_with_args("", &["--ring-buffer-mib", "1"]);
    let (secret, _) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // A holder of its own secret (it reads it while the daemon runs: the file guard answers its
    // open) waits at a FIFO, then connects 50 000 times to a closed loopback port: far more
    // reported connects than a 1 MiB buffer holds.
    let fifo = fifo(&home, "go");
    let refused_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let flood = format!(
        "python3 -c \"import socket, sys\nopen(sys.argv[1]).read()\nopen('go').read()\nfor _ in range(50000):\n  \
         s = socket.socket()\n  s.connect_ex(('127.0.0.1', {refused_port}))\n  s.close()\" .aws/credentials"
    );
    let flooder = Gated::spawn(&flood, &home, &[]);
    daemon.client.start_task(&granted("flooder", flooder.pid, &[&secret])).await.unwrap();
    let read = SharedRead::new(&home, "reuser");
    let reuser = Gated::spawn(&format!("exec {}", read.command(".aws/credentials")), &home, &[]);
    let reuser_pid = reuser.pid;
    daemon.client.start_task(&TaskRequest::new("reuser", reuser.pid)).await.unwrap();
    let flooding = std::thread::spawn(move || flooder.release());
    // Opening the FIFO for writing returns once the flooder, its secret read, opened it to read.
    let go = open_fifo_for_writing(&fifo);

    // Nothing is drained while the daemon is stopped: the flood fills the buffer for certain.
    daemon.pause();
    drop(go);
    let (status, _) = flooding.join().unwrap();
    assert!(status.success(), "{status}");
    // The reuse comes while the buffer is full and nothing drains it: its open waits for the
    // stopped file guard, which decides from the kernel's maps once it runs again.
    let reusing = std::thread::spawn(move || reuser.release());
    waits_for_the_file_guard(reuser_pid);
    daemon.resume();
    let (status, _) = reusing.join().unwrap();
    killed_before_a_byte(&daemon, reuser_pid, status, &read).await;

    drops_counted(&daemon, "connect").await;
    daemon.stop().await;
}

/// The same where the kernel refuses the file guard (a daemon without `CAP_SYS_ADMIN` and
/// `CAP_NET_ADMIN`): secret opens then go through the ring buffer, and a task flooding opens of
/// its own secret fills it while the daemon is stopped; another task's reuse is still killed at
/// `sys_exit`, and the flood's drops are counted.
#[tokio::test]
async fn without_the_file_guard_a_flood_of_secret_opens_cannot_hide_another_tasks_reuse() {
    let wrapper = ["setpriv", "--bounding-set=-sys_admin,-net_admin", "--"];
    let mut daemon = RunningDaemon::start_wrapped(&wrapper, "", &["--ring-buffer-mib", "1"]);
    let gaps = daemon.gaps().await;
    assert!(gaps.iter().any(|gap| gap == "files:fanotify_guard"), "this test needs the daemon without its file guard: {gaps:?}");
    let (secret, _) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    // 50 000 opens of its own secret: far more events than a 1 MiB buffer holds.
    let flood = "python3 -c \"import sys\nfor _ in range(50000): open(sys.argv[1]).close()\" .aws/credentials";
    let flooder = Gated::spawn(flood, &home, &[]);
    daemon.client.start_task(&granted("flooder", flooder.pid, &[&secret])).await.unwrap();
    let read = SharedRead::new(&home, "reuser");
    let reuser = Gated::spawn(&format!("exec {}", read.command(".aws/credentials")), &home, &[]);
    let reuser_pid = reuser.pid;
    daemon.client.start_task(&TaskRequest::new("reuser", reuser.pid)).await.unwrap();

    // Nothing is drained while the daemon is stopped: the flood fills the buffer for certain, and
    // the reuse is decided in the kernel before the daemon runs again.
    daemon.pause();
    let (status, _) = flooder.release();
    assert!(status.success(), "{status}");
    let (status, _) = reuser.release();
    daemon.resume();
    killed_before_a_byte(&daemon, reuser_pid, status, &read).await;

    drops_counted(&daemon, "secret_open").await;
    daemon.stop().await;
}

/// Waits (10 s at most) until process `pid` is stopped in an open that waits for the file guard's
/// answer.
fn waits_for_the_file_guard(pid: u32) {
    let deadline = std::time::Instant::now() + common::patience(10);
    while !std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|wchan| wchan.contains("fanotify")) {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        assert!(std::time::Instant::now() < deadline, "process {pid} never waited for the file guard: in {wchan:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// After a flood: its lost events of `kind` are counted.
async fn drops_counted(daemon: &RunningDaemon, kind: &str) {
    let status = daemon.client.status().await.unwrap();
    let lost = status["kernel"]["lost"][kind].as_u64().unwrap_or(0);
    assert!(lost > 0, "the flood's drops are counted: {status:#}");
}

#[tokio::test]
async fn a_full_membership_map_spares_the_owners_children_that_carry_its_environment() {
    // A child taken for a process outside the task would be killed. (The root, which starts
    // before its task is registered, is an untasked use: alerted only.) A variable of its own:
    // the other tests' daemons must not take these processes for holders.
    let config = "defaults = false\nenv = [\"CWCROWD_*\"]\n[maps]\ntask_of = 16\n[actions]\n\
                  secret_propagation = [\"kill_process\"]\n";
    let mut daemon = RunningDaemon::start(config);
    let home = daemon.home.path().to_owned();
    let token = daemon.plant_value();
    let env = [("CWCROWD_TOKEN", token.as_str())];
    let root = Gated::spawn(&many_children(":", 40, ":"), &home, &env);
    let request = TaskRequest { env: vec!["CWCROWD_TOKEN".to_owned()], ..TaskRequest::new("crowd", root.pid) };
    daemon.client.start_task(&request).await.unwrap();
    // A thread, not a blocking task: a test that fails meanwhile must not wait for the root.
    let release = std::thread::spawn(move || root.release());
    blind(&daemon, "TASK_OF").await;
    let children = forked(&home, 40);
    // Their execs are in the kernel's buffer by now: settle drains it.
    daemon.settle().await;
    let dead: Vec<&u32> = children.iter().filter(|&&pid| !pid_alive(pid)).collect();
    let about_children: Vec<_> = daemon
        .findings()
        .await
        .into_iter()
        .filter(|finding| finding["process"]["pid"].as_u64().is_some_and(|pid| children.contains(&(pid as u32))))
        .collect();
    assert!(dead.is_empty() && about_children.is_empty(), "children of the task were judged: {dead:?}; {about_children:#?}");
    kill_children(&home);
    release.join().unwrap();
    daemon.stop().await;
}
