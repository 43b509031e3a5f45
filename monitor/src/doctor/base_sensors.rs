//! The tracepoint tier's sensors off the syscall path: the fanotify file guard and the cgroup
//! socket hooks, each with the evidence that `run` can use it.

use serde::Serialize;

use crate::sensors::{cgroup, file_guard};

/// One of those sensors, as found on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseSensorCheck {
    /// `file_guard` or `socket_hooks`.
    pub sensor: &'static str,
    pub available: bool,
    /// What was tried and what came of it.
    pub detail: String,
}

/// Marks a file with a fanotify permission mark, and finds the cgroup v2 root.
pub fn probe() -> Vec<BaseSensorCheck> {
    let guard = match file_guard::probe(&std::env::temp_dir()) {
        Ok(()) => BaseSensorCheck {
            sensor: "file_guard",
            available: true,
            detail: "fanotify FAN_CLASS_CONTENT group with an open/access permission mark on a file".into(),
        },
        Err(error) => BaseSensorCheck {
            sensor: "file_guard",
            available: false,
            detail: format!("fanotify permission events refused ({error}): secret files are watched by sys_exit only"),
        },
    };
    let sockets = match cgroup::v2_root() {
        Some(root) => BaseSensorCheck {
            sensor: "socket_hooks",
            available: true,
            detail: format!(
                "cgroup v2 mounted at {}: run attaches connect4/6 and sendmsg4/6 at its root (if the kernel refuses them, it logs why and watches connects at sys_enter)",
                root.display()
            ),
        },
        None => BaseSensorCheck {
            sensor: "socket_hooks",
            available: false,
            detail: "cgroup v2 is not mounted: connects are watched at sys_enter, and not refused".into(),
        },
    };
    vec![guard, sockets]
}
