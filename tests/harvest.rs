//! Reaches into a secret holder on this host's tier, end to end: the memory hooks
//! (`monitor-ebpf/src/harvest.rs`) kill a harvester in the kernel before the copy, by every route,
//! when environ_harvest kills; a bystander reading the holder's command line or maps is left
//! alone. Each harvester reads into a shared file mapping that the test reads afterwards: not a
//! byte of the holder's memory reached it, while the same read of a process holding nothing
//! fills it.

mod common;

use std::{path::Path, process::Command, time::Instant};

use common::{
    daemon::{EnvHolder, RunningDaemon},
    patience,
};
use serde_json::Value;

const KILL_HARVESTERS: &str = "[actions]\nenviron_harvest = [\"kill_process\"]\n";

/// `python3 reach.py PID ROUTE OUT`: reads PID's memory by ROUTE into the first 4 KiB of file
/// OUT, mapped shared, then prints "survived".
const REACH: &str = r#"
import ctypes, mmap, os, sys
pid, route, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
env_start, env_len = int(stat[47]), min(int(stat[48]) - int(stat[47]), 1024)
out = open(out, "r+b")
buf = mmap.mmap(out.fileno(), 4096)
address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
def read(path, offset=0):
    fd = os.open(path, os.O_RDONLY)
    os.preadv(fd, [buf], offset)
if route in ("environ", "cmdline", "maps"):
    read(f"/proc/{pid}/{route}")
elif route == "task_environ":
    read(f"/proc/{pid}/task/{pid}/environ")
elif route == "mem":
    read(f"/proc/{pid}/mem", env_start)
elif route == "process_vm_readv":
    local = (ctypes.c_void_p * 2)(address, env_len)
    remote = (ctypes.c_void_p * 2)(env_start, env_len)
    assert libc.process_vm_readv(pid, local, 1, remote, 1, 0) == env_len, ctypes.get_errno()
elif route in ("ptrace_seize", "ptrace_attach"):
    if route == "ptrace_seize":
        assert libc.ptrace(0x4206, pid, None, None) == 0, ctypes.get_errno()  # PTRACE_SEIZE
        assert libc.ptrace(0x4207, pid, None, None) == 0, ctypes.get_errno()  # PTRACE_INTERRUPT
    else:
        assert libc.ptrace(16, pid, None, None) == 0, ctypes.get_errno()  # PTRACE_ATTACH: SIGSTOP
    status = ctypes.c_int()
    assert libc.waitpid(pid, ctypes.byref(status), 0x40000000) == pid, ctypes.get_errno()
    words = (ctypes.c_long * (env_len // 8)).from_buffer(buf)
    for i in range(env_len // 8):
        words[i] = libc.ptrace(2, pid, ctypes.c_void_p(env_start + 8 * i), None)  # PTRACE_PEEKDATA
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
buf.flush()
print("survived", flush=True)
"#;

const ROUTES: [&str; 6] = ["environ", "task_environ", "mem", "process_vm_readv", "ptrace_seize", "ptrace_attach"];

/// Runs the reach of `pid` by `route` in a fresh process in no task; returns its pid, whether it
/// survived, and what reached its buffer.
fn reach(home: &Path, pid: u32, route: &str) -> (u32, bool, Vec<u8>) {
    let out = home.join(format!("reach-{route}-{pid}.out"));
    std::fs::write(&out, vec![0u8; 4096]).unwrap();
    let mut child = Command::new("python3")
        .args(["reach.py", &pid.to_string(), route, &out.display().to_string()])
        .current_dir(home)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let harvester = child.id();
    let status = child.wait().unwrap();
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut printed).unwrap();
    let survived = status.success() && printed.contains("survived");
    assert!(survived || std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL), "{route}: {status}");
    (harvester, survived, std::fs::read(&out).unwrap())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

/// The process state letter of `pid` (`S` sleeping, `T` stopped, `t` traced).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()).unwrap()
}

#[tokio::test]
async fn a_harvester_is_killed_before_a_byte_by_every_route_and_bystanders_are_not() {
    let mut daemon = RunningDaemon::start(KILL_HARVESTERS);
    let token = daemon.plant_value();
    let home = daemon.home.path().to_owned();
    std::fs::write(home.join("reach.py"), REACH).unwrap();
    // A process holding nothing, with a plain marker where the holder has its token.
    let marker = format!("plain-{}", std::process::id());
    let mut plain = Command::new("/bin/sleep").arg("600").env_clear().env("PLAIN_MARKER", &marker).spawn().unwrap();
    // Task `holder`'s root: the token in its environment.
    let holder = EnvHolder::start(&daemon, &token).await;
    let holder_pid = holder.pid;

    for route in ROUTES {
        // The same read of a process holding nothing fills the buffer: the test can see a leak.
        let (_, survived, read) = reach(&home, plain.id(), route);
        assert!(survived && contains(&read, &marker), "{route} of a process holding nothing reads it");
        let (harvester, survived, read) = reach(&home, holder_pid, route);
        assert!(!survived, "{route}: the harvester of a holder is killed");
        assert!(read.iter().all(|&byte| byte == 0), "{route}: not a byte of the holder's memory reached the harvester");
        let finding = daemon
            .finding(|finding| finding["rule"] == "environ_harvest" && finding["process"]["pid"] == harvester)
            .await;
        assert_eq!(finding["owner_task"], "holder", "{finding:#}");
        let killed = finding["actions"].as_array().unwrap().iter().any(|action| {
            action["action"] == "kill_process" && (action["result"] == "killed_in_kernel" || route.starts_with("ptrace"))
        });
        assert!(killed, "{route}: {finding:#}");
    }

    // Bystanders read the holder's command line and maps: no harvest, nobody killed.
    for route in ["cmdline", "maps"] {
        let (bystander, survived, read) = reach(&home, holder_pid, route);
        assert!(survived && read.iter().any(|&byte| byte != 0), "{route}: a bystander reads it");
        daemon.settle().await;
        let about: Vec<Value> =
            daemon.findings().await.into_iter().filter(|finding| finding["process"]["pid"] == bystander).collect();
        assert!(about.is_empty(), "{route}: {about:#?}");
    }

    // The holder was never stopped for good nor harmed: its tracer's death let it run on.
    let deadline = Instant::now() + patience(10);
    while state(holder_pid) != 'S' {
        assert!(Instant::now() < deadline, "the holder stays in state {}", state(holder_pid));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(holder);
    plain.kill().unwrap();
    plain.wait().unwrap();
    daemon.stop().await;
}
