//! `credwatch demo` as a newcomer runs it: every step happens and is printed, the reuse is killed,
//! the findings are listed, and the planted token never appears. Needs root.

use std::process::Command;

#[test]
fn the_demo_shows_reuse_killed_and_a_harvest_without_leaking_the_token() {
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_credwatch")).arg("demo").env("NO_COLOR", "1").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(started.elapsed().as_secs() < 60, "the demo takes under a minute");
    for line in [
        "1. Planted a fake GitHub token",
        "2. Started the daemon: kernel sensors attached",
        "3. Task agent-a was granted the token and read it: it ran.",
        "4. Task agent-b tried to reuse agent-a's token: SIGKILL",
        "5. A process outside any task read agent-c's /proc/",
        "2 findings.",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let findings: Vec<&str> = stdout.lines().filter(|line| line.starts_with("  ")).collect();
    assert!(findings[0].contains("cross_task_reuse") && findings[0].contains("agent-b") && findings[0].contains("kill_process=killed_in_kernel"), "{findings:?}");
    assert!(findings[1].contains("environ_harvest") && findings[1].contains("GITHUB_TOKEN"), "{findings:?}");
    // The fake token is `ghp_demo` followed by random hex: its prefix must never show.
    assert!(!stdout.contains("ghp_demo") && !stderr.contains("ghp_demo"), "the planted token leaked");
}
