//! Bypass routes that need the daemon (the sensor-level routes are in secret_sensors.rs):
//! a bound secret replaced by `mv`, or rewritten editor-style, stays watched and bound. Needs root.

mod common;

use std::os::unix::process::ExitStatusExt as _;

use common::{daemon::RunningDaemon, shared_read::SharedRead, Gated};
use monitor::daemon::control::TaskRequest;

fn task(id: &str, root: u32, secrets: Vec<String>) -> TaskRequest {
    TaskRequest { secrets, ..TaskRequest::new(id, root) }
}

#[tokio::test]
async fn a_secret_replaced_by_mv_or_an_editor_stays_bound() {
    let mut daemon = RunningDaemon::start("");
    let (secret, _) = daemon.plant(".git-credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let owner = Gated::spawn("exec sleep 30", &home, &[]);
    daemon.client.start_task(&task("owner", owner.pid, vec![secret.display().to_string()])).await.unwrap();

    for (route, replace) in [
        ("mv over", "printf x > new && mv new .git-credentials"),
        ("editor write-and-rename", "cp .git-credentials .git-credentials.swp && mv .git-credentials.swp .git-credentials"),
    ] {
        let before = std::fs::metadata(&secret).map(|meta| std::os::unix::fs::MetadataExt::ino(&meta)).unwrap();
        common::sh(replace, &home);
        let after = std::fs::metadata(&secret).map(|meta| std::os::unix::fs::MetadataExt::ino(&meta)).unwrap();
        assert_ne!(before, after, "{route}: a new inode");
        daemon.wait_for_log(&format!("ino={after}"));
        let read = SharedRead::new(&home, &format!("rogue-{after}"));
        let rogue = Gated::spawn(&format!("exec {}", read.command(".git-credentials")), &home, &[]);
        let rogue_pid = rogue.pid;
        daemon.client.start_task(&task(&format!("rogue-{after}"), rogue.pid, Vec::new())).await.unwrap();
        let (status, _) = rogue.release();
        assert_eq!(status.signal(), Some(9), "{route}: {status}");
        assert_eq!(read.received().len(), 0, "{route}: bytes of the secret reached the rogue");
        let finding = daemon
            .finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["pid"] == rogue_pid)
            .await;
        assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{route}: {finding:#}");
    }
    drop(owner);
    daemon.stop().await;
}
