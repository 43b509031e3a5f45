//! Process listers on this host's tier: procps `ps` opens and reads every `/proc/PID/environ`
//! whatever its options, and prints an environment only when asked (`ps e`). With a task holding
//! a secret in its environment and environ_harvest killing, the tools that list processes run to
//! the end without a finding, in no task or in another task; `ps e`, a copy of `ps` under another
//! inode and a script named `ps` are harvesters, killed in the kernel before a byte.

mod common;

use std::{os::unix::process::ExitStatusExt as _, path::Path, process::Command};

use common::{
    daemon::{EnvHolder, RunningDaemon},
    Gated,
};
use monitor::daemon::control::TaskRequest;
use serde_json::Value;

const KILL_HARVESTERS: &str = "[actions]\nenviron_harvest = [\"kill_process\"]\n";

/// Runs `command` (a shell line) in no task, without the loader path cargo gives tests (a lister
/// run with a loader variable is judged as a harvester); its status and what it printed.
fn run(command: &str, home: &Path) -> (std::process::ExitStatus, String, u32) {
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .env_remove("LD_LIBRARY_PATH")
        .current_dir(home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    (output.status, String::from_utf8_lossy(&output.stdout).into_owned(), pid)
}

/// The environ_harvest findings about process `pid`.
async fn harvests_by(daemon: &RunningDaemon, pid: u32) -> Vec<Value> {
    let findings = daemon.findings().await;
    findings
        .into_iter()
        .filter(|finding| finding["rule"] == "environ_harvest" && finding["process"]["pid"] == pid)
        .collect()
}

#[tokio::test]
async fn tools_that_list_processes_are_no_harvesters_and_ps_e_is_one() {
    let mut daemon = RunningDaemon::start(KILL_HARVESTERS);
    let token = daemon.plant_value();
    let home = daemon.home.path().to_owned();
    let holder = EnvHolder::start(&daemon, &token).await;
    let holder_pid = holder.pid;

    let pid = holder_pid.to_string();
    let listing = [
        "ps aux".to_owned(),
        "ps -ef".to_owned(),
        format!("ps -p {pid}"),
        "top -b -n1".to_owned(),
        "pstree -pl".to_owned(),
        "pgrep -a sleep".to_owned(),
    ];
    // In no task: each runs to the end and lists the holder.
    let mut listers = Vec::new();
    for command in &listing {
        let (status, output, lister) = run(command, &home);
        assert!(
            status.success() && output.contains(&pid),
            "{command}: {status}, holder listed: {}",
            output.contains(&pid)
        );
        assert!(!output.contains(&token), "{command} printed no environment");
        listers.push(lister);
    }
    // In another task: the same.
    let script: String = listing
        .iter()
        .enumerate()
        .map(|(index, command)| format!("{command} > out-{index} 2>/dev/null; echo \"{index}: exited $?\"; "))
        .collect();
    let other = Gated::spawn(&format!("unset LD_LIBRARY_PATH; {script}"), &home, &[]);
    daemon.client.start_task(&TaskRequest::new("other", other.pid)).await.unwrap();
    let (status, output) = other.release();
    for (index, command) in listing.iter().enumerate() {
        let listed = std::fs::read_to_string(home.join(format!("out-{index}"))).unwrap_or_default();
        assert!(
            output.contains(&format!("{index}: exited 0")) && listed.contains(&pid) && !listed.contains(&token),
            "{command} in another task: {status}; {output}"
        );
    }
    daemon.settle().await;
    let harvests: Vec<Value> =
        daemon.findings().await.into_iter().filter(|finding| finding["rule"] == "environ_harvest").collect();
    assert!(harvests.is_empty(), "no lister is a harvester: {harvests:#?}");

    // Harvesters: `ps e`, a copy of the installed `ps` (another inode, so not the installed
    // lister, whatever it runs), a script named `ps` that reads the environment itself, and the
    // installed `ps` told to load a library of the caller's choosing.
    std::fs::copy("/usr/bin/ps", home.join("lister-copy")).unwrap();
    std::fs::create_dir(home.join("bin")).unwrap();
    std::fs::write(home.join("bin/ps"), "#!/bin/sh\nexec cat /proc/$1/environ\n").unwrap();
    std::fs::set_permissions(home.join("bin/ps"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The installed `ps` is a harvester too where procps would print environments after all:
    // options that fail the Unix parse (procps then reads `-e` as BSD's environment option), a
    // personality that does the same, or a tracer that sees what it reads.
    let harvesters = [
        format!("ps eww -p {pid}"),
        "ps e".to_owned(),
        "ps -ex".to_owned(),
        "ps -ef -x".to_owned(),
        "env PS_PERSONALITY=sunos ps -ef".to_owned(),
        "./lister-copy aux".to_owned(),
        format!("bin/ps {pid}"),
        "env LD_PRELOAD=/nonexistent.so ps aux".to_owned(),
        "strace -o /dev/null ps aux".to_owned(),
    ];
    for command in &harvesters {
        let (status, output, harvester) = run(command, &home);
        // strace passes on its tracee's death.
        assert!(status.signal() == Some(libc::SIGKILL) || status.code() == Some(137), "{command} is killed: {status}");
        assert!(!output.contains(&token), "{command}: not a byte of the secret reached its output");
        // The harvester itself, or strace's child.
        let by = |finding: &Value| finding["process"]["pid"] == harvester || finding["ancestry"][1]["pid"] == harvester;
        let finding = daemon.finding(|finding| finding["rule"] == "environ_harvest" && by(finding)).await;
        let killed = finding["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|action| action["action"] == "kill_process" && action["result"] == "killed_in_kernel");
        assert!(killed && finding["owner_task"] == "holder", "{command}: {finding:#}");
    }
    for lister in listers {
        assert!(harvests_by(&daemon, lister).await.is_empty());
    }
    let status = daemon.client.status().await.unwrap();
    assert_eq!(status["kernel"]["listers"][0]["path"], "/usr/bin/ps", "{status:#}");
    assert_eq!(status["kernel"]["listers"][0]["state"], "listed", "{status:#}");

    drop(holder);
    daemon.stop().await;
}
