//! `deploy/`: the example configs load, the systemd unit passes `systemd-analyze verify`, the
//! DaemonSet grants the unit's capabilities and mounts what the daemon reads, and the daemon
//! does its work with only the unit's capabilities: sensors and kernel kills, the environment
//! scan, a secret in another user's private home, kill_task of another user's process and
//! through a cgroup.kill that another user owns. Needs root.

mod common;

use std::{
    collections::BTreeSet,
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{daemon::RunningDaemon, Gated};
use monitor::{config::Config, daemon::control::TaskRequest};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(deploy().join(relative)).unwrap()
}

/// The unit's `CapabilityBoundingSet`, without the `CAP_` prefixes.
fn unit_capabilities() -> BTreeSet<String> {
    let unit = read("credwatch.service");
    let line = unit.lines().find_map(|line| line.strip_prefix("CapabilityBoundingSet=")).expect("a bounding set");
    line.split_whitespace().map(|cap| cap.strip_prefix("CAP_").expect("CAP_ names").to_owned()).collect()
}

/// Capability numbers (linux/capability.h) of the names the unit may use.
fn capability_bit(name: &str) -> u32 {
    match name {
        "DAC_OVERRIDE" => 1,
        "DAC_READ_SEARCH" => 2,
        "KILL" => 5,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYSLOG" => 34,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} has no number here; add it"),
    }
}

#[test]
fn the_example_configs_load() {
    let host = Config::load(&deploy().join("credwatch.toml")).unwrap();
    assert!(host.export.metrics.unwrap().listen.ip().is_loopback());
    let node = Config::load(&deploy().join("kubernetes/credwatch.toml")).unwrap();
    assert_eq!(node.export.metrics.unwrap().listen.port(), 9477);
    assert!(read("kubernetes/kustomization.yaml").contains("- credwatch.toml"));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("credwatch.service");
    let text = read("credwatch.service").replace("/usr/local/bin/credwatch", env!("CARGO_BIN_EXE_credwatch"));
    std::fs::write(&unit, text).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !stderr.contains("credwatch.service"), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn the_daemonset_grants_the_units_capabilities_and_mounts_the_kernel_filesystems() {
    let manifest = read("kubernetes/credwatch.yaml");
    let added = manifest.lines().find_map(|line| line.trim().strip_prefix("add: ")).expect("capabilities added");
    let added: BTreeSet<String> = serde_json::from_str::<Vec<String>>(added).unwrap().into_iter().collect();
    assert_eq!(added, unit_capabilities());
    assert!(manifest.contains("drop: [\"ALL\"]"));
    assert!(manifest.contains("hostPID: true"));
    for path in ["/sys/kernel/btf", "/sys/fs/bpf", "/sys/kernel/tracing", "/sys/kernel/security", "/sys/fs/cgroup"] {
        assert!(manifest.contains(&format!("mountPath: {path}")), "{path} is not mounted");
        assert!(manifest.contains(&format!("path: {path},")), "{path} is not a hostPath");
    }
    assert!(manifest.contains("prometheus.io/scrape: \"true\""));
    assert!(read("kubernetes/servicemonitor.yaml").contains("kind: ServiceMonitor"));
}

#[tokio::test]
async fn the_daemon_works_with_only_the_units_capabilities() {
    let capabilities = unit_capabilities();
    let bounding: Vec<String> = capabilities.iter().map(|cap| format!("+{}", cap.to_lowercase())).collect();
    let bounding = format!("--bounding-set=-all,{}", bounding.join(","));
    let mut daemon =
        RunningDaemon::start_wrapped(&["setpriv", &bounding, "--"], "[actions]\ncross_task_reuse = [\"kill_task\"]\n", &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let effective = status.lines().find_map(|line| line.strip_prefix("CapEff:")).unwrap().trim();
    let expected = capabilities.iter().fold(0u64, |mask, cap| mask | 1 << capability_bit(cap));
    assert_eq!(u64::from_str_radix(effective, 16).unwrap(), expected, "the daemon runs with exactly the unit's set");
    let home = daemon.home.path().to_owned();

    // The environment scan reads /proc/PID/environ of processes with every capability.
    let token = daemon.plant_value();
    let env = [("GITHUB_TOKEN", token.as_str())];
    let root = Gated::spawn("exec sleep 30", &home, &env);
    let mut request = TaskRequest::new("granted", root.pid);
    request.env = vec!["GITHUB_TOKEN".to_owned()];
    daemon.client.start_task(&request).await.unwrap();
    // It lives until it was judged: an environment is read from /proc after the exec.
    let outsider = Gated::spawn("exec env sleep 30", &home, &env);
    let outsider_pid = outsider.pid;
    let released = std::thread::spawn(move || outsider.release());
    daemon
        .finding(|finding| finding["rule"] == "secret_propagation" && finding["process"]["tgid"] == outsider_pid)
        .await;
    // SAFETY: signalling the test's own child.
    unsafe { libc::kill(outsider_pid as i32, libc::SIGKILL) };
    released.join().unwrap();
    drop(root);

    // The secret lives in a private home of another user.
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (secret, _) = daemon.plant(".kube/config");
    for path in [secret.parent().unwrap(), &secret] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    }
    daemon.wait_watched(&secret);

    // The kernel kills the rogue; kill_task then signals its child, which runs as nobody.
    let owner = Gated::spawn("exec sleep 30", &home, &[]);
    let mut request = TaskRequest::new("cluster-admin", owner.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();
    let rogue = Gated::spawn(
        // The pause lets the child settle in its sleep, where no hooked syscall (and so no kernel
        // verdict) can reach it: only a signal from the daemon can.
        "setsid setpriv --reuid=65534 --regid=65534 --clear-groups sleep 60 & echo $! > nobody.pid; sleep 0.5; exec cat .kube/config",
        &home,
        &[],
    );
    let rogue_pid = rogue.pid;
    daemon.client.start_task(&TaskRequest::new("rogue", rogue.pid)).await.unwrap();
    let (status, output) = rogue.release();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(output.is_empty());
    let finding = daemon
        .finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["tgid"] == rogue_pid)
        .await;
    assert_eq!(finding["actions"][0]["result"], "killed", "{finding:#}");
    let nobody: u32 = std::fs::read_to_string(home.join("nobody.pid")).unwrap().trim().parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{nobody}/stat")).is_ok_and(|stat| !stat.contains(") Z ")) {
        assert!(std::time::Instant::now() < deadline, "the rogue task's process running as nobody survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A task cgroup made by a non-root orchestrator: its cgroup.kill belongs to that user.
    let cgroup = TaskCgroup::new(65534);
    let rogue = Gated::spawn("exec cat .kube/config", &home, &[]);
    let rogue_pid = rogue.pid;
    cgroup.add(rogue_pid);
    let mut request = TaskRequest::new("cgroup-rogue", rogue_pid);
    request.cgroup = Some(cgroup.path.display().to_string());
    daemon.client.start_task(&request).await.unwrap();
    assert_eq!(rogue.release().0.signal(), Some(9));
    let finding = daemon
        .finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["tgid"] == rogue_pid)
        .await;
    assert_eq!(finding["actions"][0]["result"], "killed", "cgroup.kill: {finding:#}");
    drop(owner);
    daemon.stop().await;
}

/// A cgroup v2 directory whose `cgroup.kill` belongs to `owner`; removed when dropped.
struct TaskCgroup {
    path: PathBuf,
}

impl TaskCgroup {
    fn new(owner: u32) -> Self {
        // The unified hierarchy, on its own or beside the v1 controllers.
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .find(|root| Path::new(root).join("cgroup.controllers").exists())
            .expect("a cgroup v2 hierarchy");
        let path = Path::new(root).join(format!("credwatch-deploy-{}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        std::os::unix::fs::chown(path.join("cgroup.kill"), Some(owner), Some(owner)).unwrap();
        Self { path }
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for TaskCgroup {
    fn drop(&mut self) {
        // Its processes were killed; the directory can go once they are reaped.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.path).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A unit stripped of `CAP_SYS_ADMIN` (an older unit file, a cautious operator): fanotify and the
/// cgroup hooks are refused, and the daemon runs on the syscall programs instead, saying so.
#[tokio::test]
async fn without_cap_sys_admin_the_daemon_falls_back_to_the_syscall_programs_and_says_so() {
    let bounding: Vec<String> = unit_capabilities()
        .iter()
        .filter(|&cap| cap != "SYS_ADMIN")
        .map(|cap| format!("+{}", cap.to_lowercase()))
        .collect();
    let bounding = format!("--bounding-set=-all,{}", bounding.join(","));
    let mut daemon = RunningDaemon::start_wrapped(&["setpriv", &bounding, "--"], "", &[]);
    let gaps = daemon.gaps().await;
    for gap in ["files:fanotify_guard", "network:cgroup_hooks", "files:io_uring_open", "network:deny"] {
        assert!(gaps.iter().any(|known| known == gap), "{gap} in {gaps:?}");
    }
    let status = daemon.client.status().await.unwrap();
    assert_eq!(status["kernel"]["syscall_hooks_attached"], true, "they watch the secret files now");

    // A bound secret read by another task is still killed, at `sys_exit`.
    let home = daemon.home.path().to_owned();
    let (secret, value) = daemon.plant(".kube/config");
    daemon.wait_watched(&secret);
    let owner = Gated::spawn("exec cat .kube/config", &home, &[]);
    let mut request = TaskRequest::new("owner", owner.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();
    let rogue = Gated::spawn("exec cat .kube/config", &home, &[]);
    let rogue_pid = rogue.pid;
    daemon.client.start_task(&TaskRequest::new("rogue", rogue.pid)).await.unwrap();
    let (status, output) = rogue.release();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(output.is_empty());
    let finding =
        daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["tgid"] == rogue_pid).await;
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
    let (status, output) = owner.release();
    assert!(status.success() && output == value, "the owner reads it: {status}");
    daemon.stop().await;
}
