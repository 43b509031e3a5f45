//! Refusals at the syscall, end to end, on every tier that can refuse. On the host (the base tier:
//! fanotify file guard and cgroup socket hooks) the tests not marked ignored run; `cargo xtask
//! vm-test` (also run by `cargo xtask test`) boots a kernel twice, once with BPF LSM active (the
//! LSM tier) and once without (the fmod_ret tier), and runs this target there with
//! `--include-ignored`, `CREDWATCH_VM=1` and `CREDWATCH_VM_TIER` naming the tier doctor must pick,
//! so that every test runs on both security-hook tiers too. The tests only those tiers pass report
//! as ignored on the host, with that reason, rather than passing without having run.
//!
//! Each test runs the real daemon configured to `deny`, real processes of real tasks, and checks
//! what the process got back (EPERM, not a kill, not a byte), what the daemon reported
//! (`denied_in_kernel`), and a benign twin that is left alone. These are the tests behind the
//! README's coverage table.

mod common;
#[path = "refusals/ops.rs"]
mod ops;

use std::{
    ffi::CString,
    io::ErrorKind,
    net::{SocketAddrV4, TcpListener, UdpSocket},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::Path,
    process::Command,
};

use common::{daemon::RunningDaemon, Gated};
use monitor::daemon::control::TaskRequest;
use ops::{Forked, Op};
use serde_json::Value;

/// Every rule refuses, so that each security hook's refusal is exercised.
const DENY_ALL: &str = "[actions]
cross_task_reuse = [\"deny\"]
post_task_reuse = [\"deny\"]
unexpected_destination = [\"deny\"]
environ_harvest = [\"deny\"]
";

const EPERM: i64 = -(libc::EPERM as i64);

/// Fails a run outside the VM (`--include-ignored` on a host) with the reason, rather than letting
/// it fail or pass for another one. Returns the tier this boot of the VM is for.
fn require_vm() -> String {
    assert_eq!(
        std::env::var("CREDWATCH_VM").as_deref(),
        Ok("1"),
        "this test needs the test VM (LSM or fmod_ret tier); run it with `cargo xtask vm-test`"
    );
    std::env::var("CREDWATCH_VM_TIER").expect("the VM's init names the tier it boots for")
}

fn granted(id: &str, root: u32, secret: &Path) -> TaskRequest {
    TaskRequest { secrets: vec![secret.display().to_string()], ..TaskRequest::new(id, root) }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Whether this run is on a security-hook tier: the test VM's init says which tier it booted for
/// (the host runs the base tier). Not doctor's choice: that is what the suite checks.
fn security_hooks() -> bool {
    std::env::var("CREDWATCH_VM_TIER").is_ok_and(|tier| tier == "lsm" || tier == "fmod_ret")
}

/// A daemon refusing everything, with `.aws/credentials` planted and watched.
async fn daemon_with_secret() -> (RunningDaemon, std::path::PathBuf) {
    let mut daemon = RunningDaemon::start(DENY_ALL);
    let (secret, _) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    (daemon, secret)
}

/// Task `owner`, granted `secret`, whose root reads it (the benign twin: allowed) and exits.
async fn owner_reads(daemon: &RunningDaemon, secret: &Path) {
    let owner = Gated::spawn("cat .aws/credentials >/dev/null; echo \"owner: cat exited $?\"", daemon.home.path(), &[]);
    daemon.client.start_task(&granted("owner", owner.pid, secret)).await.unwrap();
    let (status, output) = owner.release();
    assert!(status.success() && output.contains("owner: cat exited 0"), "the owner reads its secret: {status}; {output}");
}

/// The findings of `rule` about process `pid`, waiting for at least one.
async fn findings(daemon: &RunningDaemon, rule: &str, pid: u32) -> Vec<Value> {
    daemon.finding(|finding| finding["rule"] == rule && finding["process"]["pid"] == pid).await;
    daemon.settle().await;
    daemon.findings().await.into_iter().filter(|finding| finding["rule"] == rule && finding["process"]["pid"] == pid).collect()
}

fn assert_denied_in_kernel(finding: &Value) {
    let actions = finding["actions"].as_array().unwrap();
    assert!(
        actions.iter().any(|action| action["action"] == "deny" && action["result"] == "denied_in_kernel"),
        "{finding:#}"
    );
}

/// The events the daemon recorded (its `--record` file) of `kind`.
fn recorded_all(daemon: &RunningDaemon, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(&daemon.record)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|input| input["input"] == "event" && input["kind"] == kind)
        .collect()
}

/// The events the daemon recorded of `kind` by process `pid`.
fn recorded(daemon: &RunningDaemon, kind: &str, pid: u32) -> Vec<Value> {
    recorded_all(daemon, kind).into_iter().filter(|input| input["process"]["tgid"] == pid).collect()
}

#[test]
#[ignore = "LSM and fmod_ret tiers: runs in the VM (cargo xtask vm-test)"]
fn doctor_picks_the_tier_the_kernel_allows() {
    let tier = require_vm();
    let output = Command::new(env!("CARGO_BIN_EXE_credwatch")).args(["doctor", "--json"]).output().expect("credwatch doctor");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("doctor --json prints JSON");
    assert_eq!(report["tier"]["selected"], tier, "{report:#}");
    assert_eq!(report["hooks"]["fmod_ret"]["status"], "available", "{report:#}");
    let bpf_lsm_active = report["lsm_list"]["lsms"].as_array().unwrap().contains(&Value::from("bpf"));
    match tier.as_str() {
        "lsm" => {
            assert!(bpf_lsm_active, "{report:#}");
            assert_eq!(report["hooks"]["lsm"]["status"], "available", "{report:#}");
        }
        "fmod_ret" => {
            // BPF LSM built but not in `lsm=`: its programs are refused, the evidence doctor shows.
            assert!(!bpf_lsm_active, "{report:#}");
            assert_ne!(report["hooks"]["lsm"]["status"], "available", "{report:#}");
            let unmet: Vec<_> = report["tier"]["unmet"]["lsm"].as_array().unwrap().iter().map(|unmet| &unmet["requirement"]).collect();
            assert!(unmet.contains(&&Value::from("bpf_lsm_active")), "{report:#}");
        }
        other => panic!("CREDWATCH_VM_TIER={other}: not a tier the VM boots for"),
    }
}

#[tokio::test]
async fn a_bound_secret_opened_by_another_task_is_refused_on_every_path_route() {
    let (daemon, secret) = daemon_with_secret().await;
    owner_reads(&daemon, &secret).await;
    let home = daemon.home.path().to_owned();
    // Other names for the same inode, made by root outside any task (none of this opens it).
    std::fs::create_dir(home.join("sub")).unwrap();
    std::os::unix::fs::symlink(&secret, home.join("link")).unwrap();
    std::fs::hard_link(&secret, home.join("hard")).unwrap();
    std::fs::write(home.join("decoy"), b"").unwrap();
    let mounted = Command::new("mount").arg("--bind").arg(&secret).arg(home.join("decoy")).status().unwrap();
    assert!(mounted.success(), "bind mount");
    let routes = "for route in \"$PWD/.aws/credentials\" .aws/credentials link hard decoy; do
          cat \"$route\"; echo \"$route: cat exited $?\"
        done
        cd sub && cat ../.aws/credentials; echo \"relative after chdir: cat exited $?\"; cd ..
        mv .aws/credentials .aws/renamed; cat .aws/renamed; echo \"renamed: cat exited $?\"; mv .aws/renamed .aws/credentials";
    let rogue = Gated::spawn(routes, &home, &[]);
    let rogue_pid = rogue.pid;
    daemon.client.start_task(&TaskRequest::new("rogue", rogue.pid)).await.unwrap();
    let (status, output) = rogue.release();
    let _ = Command::new("umount").arg(home.join("decoy")).status();
    // Each route's name and its cat's exit code; only those are ever printed: any other text
    // may be the secret.
    let absolute = format!("{}/.aws/credentials", home.display());
    let names = [absolute.as_str(), ".aws/credentials", "link", "hard", "decoy", "relative after chdir", "renamed"];
    let exits: Vec<(&str, &str)> = output
        .lines()
        .filter_map(|line| line.rsplit_once(": cat exited "))
        .filter_map(|(name, code)| Some((*names.iter().find(|&&known| known == name)?, code)))
        .collect();
    let other = output.lines().count() - exits.len();
    assert!(status.success(), "the rogue shell was not killed: {status}; {exits:?}");
    let refused: Vec<(&str, &str)> = names.iter().map(|&name| (name, "1")).collect();
    assert_eq!((exits, other), (refused, 0), "each route's cat exited 1, and printed nothing else");
    // Every `cat` (a child of the rogue shell, so in task rogue) is a finding.
    daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["task"] == "rogue").await;
    daemon.settle().await;
    let found: Vec<Value> = daemon.findings().await.into_iter().filter(|finding| finding["task"] == "rogue").collect();
    assert_eq!(found.len(), 7, "{found:#?}");
    for finding in &found {
        assert_eq!(finding["rule"], "cross_task_reuse");
        assert_eq!(finding["owner_task"], "owner");
        assert_eq!(finding["ancestry"][1]["pid"], rogue_pid, "a child of the rogue shell: {finding:#}");
        assert_denied_in_kernel(finding);
    }
    // Each refusal was reported by the LSM hook or the file guard, with the path as the process
    // named it.
    let refused: Vec<String> = recorded_all(&daemon, "secret_open")
        .iter()
        .filter(|open| open["kernel_action"] == "denied")
        .map(|open| open["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    for named in [".aws/credentials", "link", "hard", "decoy", "../.aws/credentials", ".aws/renamed"] {
        assert!(refused.iter().any(|path| path == named), "{named} in {refused:?}");
    }

    // Replaced by `mv` (a new inode): re-watched under the same binding, refused the same way.
    let inode = |path: &Path| std::fs::metadata(path).unwrap().ino();
    let before = inode(&secret);
    common::sh("printf x > new && mv new .aws/credentials", &home);
    let after = inode(&secret);
    assert_ne!(before, after, "a new inode");
    daemon.wait_for_log(&format!("ino={after}"));
    let rogue = Gated::spawn("cat .aws/credentials 2>&1; echo \"replaced: cat exited $?\"", &home, &[]);
    daemon.client.start_task(&TaskRequest::new("rogue-after-mv", rogue.pid)).await.unwrap();
    let (status, output) = rogue.release();
    // GNU's or busybox's (in the test VM) cat, each with its wording around strerror(EPERM).
    let refused = output.lines().next().is_some_and(|line| line.ends_with("Operation not permitted"));
    assert!(status.success() && refused && output.ends_with("\nreplaced: cat exited 1\n"), "refused with EPERM: {status}; {output}");
    let finding =
        daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["task"] == "rogue-after-mv").await;
    assert_denied_in_kernel(&finding);
    daemon.stop().await;
}

#[tokio::test]
async fn openat2_open_by_handle_and_an_o_path_reopen_are_refused() {
    let (daemon, secret) = daemon_with_secret().await;
    let home = daemon.home.path().to_owned();
    // Benign twin: the owner's own openat2.
    let owner = Forked::spawn(Op::Openat2(c_path(&secret)));
    daemon.client.start_task(&granted("owner", owner.pid, &secret)).await.unwrap();
    let results = owner.release();
    assert!(results[0] >= 0 && results[1] > 0, "the owner's openat2 and read work: {results:?}");
    assert_eq!(owner.wait(), 0);
    // The parent (root, in no task) takes the file handle; that does not open the file.
    let handle = name_to_handle(&secret);
    let ops = [
        ("openat2", Op::Openat2(c_path(&secret))),
        ("open_by_handle_at", Op::OpenByHandle { mount_dir: c_path(&home), handle }),
        ("O_PATH then /proc/self/fd reopen", Op::OpenPathThenReopen(c_path(&secret))),
    ];
    for (index, (route, op)) in ops.into_iter().enumerate() {
        let rogue = Forked::spawn(op);
        let pid = rogue.pid;
        daemon.client.start_task(&TaskRequest::new(&format!("rogue-{index}"), pid)).await.unwrap();
        let results = rogue.release();
        if index == 2 {
            assert!(results[0] >= 0, "{route}: an O_PATH open cannot read, so it is allowed: {results:?}");
            assert_eq!(results[1..3], [EPERM, 0], "{route}: {results:?}");
        } else {
            assert_eq!(results[..2], [EPERM, 0], "{route}: refused, nothing read: {results:?}");
        }
        assert_eq!(rogue.wait(), 0, "{route}: exited normally, not killed");
        let found = findings(&daemon, "cross_task_reuse", pid).await;
        assert_denied_in_kernel(&found[0]);
    }
    daemon.stop().await;
}

/// `name_to_handle_at` of `path`: the `struct file_handle` bytes (`handle_bytes`, `handle_type`,
/// the handle).
fn name_to_handle(path: &Path) -> Vec<u8> {
    let mut handle = vec![0u8; 8 + 128];
    handle[..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id = 0;
    let path = c_path(path);
    // SAFETY: `handle` has room for 128 handle bytes, as its header says.
    let result = unsafe {
        libc::syscall(libc::SYS_name_to_handle_at, libc::AT_FDCWD, path.as_ptr(), handle.as_mut_ptr(), &mut mount_id, 0)
    };
    assert_eq!(result, 0, "name_to_handle_at: {}", std::io::Error::last_os_error());
    handle
}

#[tokio::test]
async fn io_uring_openat_is_refused_for_another_task_and_reported_for_the_owner() {
    let (daemon, secret) = daemon_with_secret().await;
    // Benign twin: the owner opens it through io_uring; allowed, and reported by the LSM hook
    // (no open syscall, so sys_exit never sees it).
    let owner = Forked::spawn(Op::IoUringOpenat(c_path(&secret)));
    let owner_pid = owner.pid;
    daemon.client.start_task(&granted("owner", owner.pid, &secret)).await.unwrap();
    let results = owner.release();
    assert!(results[0] >= 0 && results[1] >= 0 && results[2] > 0, "the owner's io_uring open and read work: {results:?}");
    assert_eq!(owner.wait(), 0);

    let rogue = Forked::spawn(Op::IoUringOpenat(c_path(&secret)));
    let rogue_pid = rogue.pid;
    daemon.client.start_task(&TaskRequest::new("rogue", rogue.pid)).await.unwrap();
    let results = rogue.release();
    assert!(results[0] >= 0, "io_uring_setup: {results:?}");
    assert_eq!(results[1..3], [EPERM, 0], "IORING_OP_OPENAT refused, nothing read: {results:?}");
    assert_eq!(rogue.wait(), 0, "refused, not killed");
    let found = findings(&daemon, "cross_task_reuse", rogue_pid).await;
    assert_denied_in_kernel(&found[0]);

    let opens = recorded(&daemon, "secret_open", owner_pid);
    assert_eq!(opens.len(), 1, "{opens:#?}");
    assert_eq!(opens[0]["syscall"], "io_uring");
    assert_eq!(opens[0]["kernel_action"], "none");
    let refused = recorded(&daemon, "secret_open", rogue_pid);
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["syscall"], "io_uring");
    assert_eq!(refused[0]["kernel_action"], "denied");
    daemon.stop().await;
}

#[tokio::test]
async fn an_fd_opened_before_the_binding_cannot_be_read_sent_mapped_or_reopened() {
    let (daemon, secret) = daemon_with_secret().await;
    // Opened while the secret is bound to nobody (an untasked use: allowed and reported).
    let early = Forked::spawn(Op::EarlyFd(c_path(&secret)));
    let pid = early.pid;
    owner_reads(&daemon, &secret).await;
    daemon.client.start_task(&TaskRequest::new("rogue", pid)).await.unwrap();
    let results = early.release();
    // No permission event covers a mapping: on the base tier mmap is a known gap (README).
    let lsm = security_hooks();
    let mmap = if lsm { EPERM } else { 0 };
    assert_eq!(results[..5], [EPERM, EPERM, EPERM, mmap, EPERM], "read, pread, sendfile, mmap, /proc/self/fd reopen: {results:?}");
    assert_eq!(early.wait(), 0, "refused, not killed");
    let found = findings(&daemon, "cross_task_reuse", pid).await;
    assert_denied_in_kernel(&found[0]);
    let routes: Vec<String> = recorded(&daemon, "secret_open", pid)
        .iter()
        .filter(|open| open["kernel_action"] == "denied")
        .map(|open| open["syscall"].as_str().unwrap_or_default().to_owned())
        .collect();
    for route in ["read", "sendfile", "mmap", "openat"].into_iter().filter(|&route| lsm || route != "mmap") {
        assert!(routes.iter().any(|seen| seen == route), "{route} in {routes:?}");
    }
    daemon.stop().await;
}

#[tokio::test]
async fn a_connect_outside_the_allowlist_is_refused_before_the_syn() {
    let (daemon, secret) = daemon_with_secret().await;
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    allowed.set_nonblocking(true).unwrap();
    let address = |listener: &TcpListener| match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(address) => address,
        other => panic!("{other}"),
    };
    let (allowed_at, elsewhere_at): (SocketAddrV4, SocketAddrV4) = (address(&allowed), address(&elsewhere));
    let agent = Forked::spawn(Op::HoldThenConnect { secret: c_path(&secret), to: [elsewhere_at, allowed_at] });
    let agent_pid = agent.pid;
    let mut request = granted("fetcher", agent.pid, &secret);
    request.allow = Some(vec![allowed_at.to_string()]);
    daemon.client.start_task(&request).await.unwrap();
    let results = agent.release();
    assert!(results[0] >= 0 && results[1] > 0, "the task reads its own secret: {results:?}");
    assert_eq!(results[2], EPERM, "outside the allowlist: refused: {results:?}");
    assert_eq!(results[3], 0, "benign twin, the allowed destination: {results:?}");
    assert_eq!(agent.wait(), 0);
    match elsewhere.accept() {
        Err(error) if error.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the refused destination saw a connection: {other:?}"),
    }
    allowed.accept().expect("the allowed destination saw its connection");
    let found = findings(&daemon, "unexpected_destination", agent_pid).await;
    assert_eq!(found.len(), 1, "only the refused destination: {found:#?}");
    assert_eq!(found[0]["destination"], elsewhere_at.to_string());
    assert_denied_in_kernel(&found[0]);
    let connects = recorded(&daemon, "connect", agent_pid);
    assert_eq!(connects.len(), 2, "both connects reported once, by the LSM or cgroup hook: {connects:#?}");
    daemon.stop().await;
}

/// Beside the security hooks no syscall program runs for a holder: `file_open` reports the
/// owner's allowed open itself (with the path as named), and the `sendmsg` hooks see datagrams.
#[tokio::test]
#[ignore = "LSM and fmod_ret tiers: runs in the VM (cargo xtask vm-test)"]
async fn beside_the_security_hooks_a_holder_needs_no_syscall_program() {
    require_vm();
    let (daemon, secret) = daemon_with_secret().await;
    let holder = Forked::spawn(Op::HoldAndStay(c_path(&secret)));
    let pid = holder.pid;
    daemon.client.start_task(&granted("holder", pid, &secret)).await.unwrap();
    let held = holder.release();
    assert!(held[0] >= 0 && held[1] > 0, "the holder reads its secret: {held:?}");
    daemon.settle().await;
    let opens = recorded(&daemon, "secret_open", pid);
    assert_eq!(opens.len(), 1, "the open reported once, by the hook: {opens:#?}");
    assert_eq!(opens[0]["syscall"], "openat", "{opens:#?}");
    assert_eq!(opens[0]["kernel_action"], "none", "{opens:#?}");
    assert_eq!(opens[0]["path"], secret.display().to_string(), "{opens:#?}");
    let status = daemon.client.status().await.unwrap();
    assert_eq!(status["kernel"]["syscall_hooks_attached"], false, "a holder, and no syscall program: {status:#}");
    // The VM's initramfs holds no TLS library: the TLS uprobes have nothing to attach to.
    let gaps: Vec<_> = status["kernel"]["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|gap| gap["capability"].as_str())
        .filter(|capability| !capability.starts_with("tls:"))
        .collect();
    assert!(gaps.is_empty(), "cgroup v2 is mounted in the VM, so datagrams are refused too: {gaps:?}");
    holder.kill();
    daemon.stop().await;
}

/// On every tier where cgroup v2 is mounted (this host, the VM): the `sendmsg` hooks judge a
/// holder's datagrams sent from an unconnected socket, which no connect announces.
#[tokio::test]
async fn a_datagram_outside_the_allowlist_is_refused_before_it_leaves() {
    let (daemon, secret) = daemon_with_secret().await;
    let allowed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let address = |socket: &UdpSocket| match socket.local_addr().unwrap() {
        std::net::SocketAddr::V4(address) => address,
        other => panic!("{other}"),
    };
    let (allowed_at, elsewhere_at) = (address(&allowed), address(&elsewhere));
    let agent = Forked::spawn(Op::HoldThenSendTo { secret: c_path(&secret), to: [elsewhere_at, allowed_at] });
    let agent_pid = agent.pid;
    let mut request = granted("sender", agent.pid, &secret);
    request.allow = Some(vec![allowed_at.to_string()]);
    daemon.client.start_task(&request).await.unwrap();
    let results = agent.release();
    assert!(results[0] >= 0 && results[1] > 0, "the task reads its own secret: {results:?}");
    assert_eq!(results[2], EPERM, "outside the allowlist: refused: {results:?}");
    assert_eq!(results[3], 1, "benign twin, the allowed destination: {results:?}");
    assert_eq!(agent.wait(), 0);
    let mut byte = [0u8; 1];
    match elsewhere.recv(&mut byte) {
        Err(error) if error.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the refused destination received a datagram: {other:?}"),
    }
    assert_eq!(allowed.recv(&mut byte).expect("the allowed destination received its datagram"), 1);
    let found = findings(&daemon, "unexpected_destination", agent_pid).await;
    assert_eq!(found.len(), 1, "only the refused destination: {found:#?}");
    assert_eq!(found[0]["destination"], elsewhere_at.to_string());
    assert_denied_in_kernel(&found[0]);
    daemon.stop().await;
}

#[tokio::test]
#[ignore = "LSM and fmod_ret tiers: runs in the VM (cargo xtask vm-test)"]
async fn another_tasks_reach_into_a_holder_is_refused() {
    require_vm();
    let (daemon, secret) = daemon_with_secret().await;
    let holder = Forked::spawn(Op::HoldAndStay(c_path(&secret)));
    let target = holder.pid;
    daemon.client.start_task(&granted("holder", target, &secret)).await.unwrap();
    let held = holder.release();
    assert!(held[0] >= 0 && held[1] > 0, "the holder reads its secret: {held:?}");
    daemon.settle().await;
    let harvester = Forked::spawn(Op::Harvest {
        pid: target as i32,
        environ: CString::new(format!("/proc/{target}/environ")).unwrap(),
        mem: CString::new(format!("/proc/{target}/mem")).unwrap(),
    });
    let harvester_pid = harvester.pid;
    daemon.client.start_task(&TaskRequest::new("harvester", harvester_pid)).await.unwrap();
    let results = harvester.release();
    assert_eq!(results[..5], [EPERM, 0, EPERM, EPERM, EPERM], "environ, read, mem, ptrace, process_vm_readv: {results:?}");
    assert_eq!(harvester.wait(), 0);
    let found = findings(&daemon, "environ_harvest", harvester_pid).await;
    assert_eq!(found[0]["owner_task"], "holder");
    assert_denied_in_kernel(&found[0]);
    let kinds: Vec<String> = recorded(&daemon, "harvest", harvester_pid)
        .iter()
        .map(|harvest| harvest["harvest"].as_str().unwrap_or_default().to_owned())
        .collect();
    for kind in ["environ", "mem", "ptrace", "vm_readv"] {
        assert!(kinds.iter().any(|seen| seen == kind), "{kind} in {kinds:?}");
    }
    holder.kill();
    daemon.stop().await;
}

/// The daemon's pid, found by its API socket on its command line.
fn daemon_pid(daemon: &RunningDaemon) -> u32 {
    let socket = daemon.socket.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).split('\0').any(|arg| arg == socket))
        })
        .expect("the daemon's process")
}

#[tokio::test]
#[ignore = "LSM and fmod_ret tiers: runs in the VM (cargo xtask vm-test)"]
async fn a_tasks_process_cannot_kill_the_daemon() {
    require_vm();
    let daemon = RunningDaemon::start(DENY_ALL);
    let pid = daemon_pid(&daemon);
    let home = daemon.home.path().to_owned();
    let agent = Gated::spawn(
        &format!("for signal in KILL TERM STOP; do kill -$signal {pid}; echo \"$signal: kill exited $?\"; done"),
        &home,
        &[],
    );
    daemon.client.start_task(&TaskRequest::new("agent", agent.pid)).await.unwrap();
    let (status, output) = agent.release();
    assert!(status.success(), "{status}");
    for signal in ["KILL", "TERM", "STOP"] {
        assert!(output.contains(&format!("{signal}: kill exited 1")), "{output}");
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the daemon is alive");
    let state = stat.rsplit_once(')').unwrap().1.split_whitespace().next().unwrap();
    assert!(matches!(state, "S" | "R"), "not stopped: {state}");
    daemon.client.status().await.expect("the daemon still answers");
    let ino_before = std::fs::metadata(format!("/proc/{pid}")).unwrap().ino();
    // Benign twin: root outside every task stops it (systemctl stop does the same).
    daemon.stop().await;
    assert!(std::fs::metadata(format!("/proc/{pid}")).map_or(true, |meta| meta.ino() != ino_before), "stopped by root");
}
