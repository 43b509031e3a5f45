//! The tracepoint tier's sensors off the syscall path: the fanotify file guard and the cgroup
//! socket hooks; and on every tier the TLS uprobes; each with the evidence that `run` can use it.

use serde::Serialize;

use crate::sensors::{cgroup, file_guard, tls};

/// One of those sensors, as found on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseSensorCheck {
    /// `file_guard`, `socket_hooks` or `tls_uprobes`.
    pub sensor: &'static str,
    pub available: bool,
    /// What was tried and what came of it.
    pub detail: String,
}

/// Marks a file with a fanotify permission mark, finds the cgroup v2 root and the TLS libraries.
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
    let libraries: Vec<String> = tls::LIBRARIES
        .iter()
        .filter_map(|&(file, _, functions)| {
            let path = tls::find(file)?;
            let names: Vec<&str> = functions.iter().map(|&(function, _, _)| function).collect();
            Some(format!("{} in {}", names.join(", "), path.display()))
        })
        .collect();
    let tls = BaseSensorCheck {
        sensor: "tls_uprobes",
        available: !libraries.is_empty(),
        detail: match libraries.is_empty() {
            false => format!("run attaches uprobes to {} (where the uprobe hook above works)", libraries.join("; ")),
            true => "no OpenSSL 3 or GnuTLS library in the dynamic linker's directories: no credential is seen in TLS requests".into(),
        },
    };
    vec![guard, sockets, tls]
}
