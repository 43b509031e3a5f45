//! The tracepoint tier's sensors off the syscall path: the fanotify file guard, the cgroup socket
//! hooks and the memory hooks; and on every tier the TLS uprobes; each with the evidence that
//! `run` can use it.

use serde::Serialize;

use crate::sensors::{btf::Btf, cgroup, file_guard, kallsyms, memory_hooks, offsets, tls};

/// One of those sensors, as found on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseSensorCheck {
    /// `file_guard`, `socket_hooks`, `memory_hooks` or `tls_uprobes`.
    pub sensor: &'static str,
    pub available: bool,
    /// What was tried and what came of it.
    pub detail: String,
}

/// Marks a file with a fanotify permission mark, finds the cgroup v2 root, what the memory hooks
/// read and the TLS libraries.
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
    let unfit = Btf::from_sys_fs().map_err(|error| error.to_string()).and_then(|btf| {
        let offsets = offsets::resolve(&btf).map_err(|error| error.to_string())?;
        let symbols = kallsyms::resolve().map_err(|error| error.to_string())?;
        memory_hooks::unfit(&btf, &offsets, &symbols).map_or(Ok(()), Err)
    });
    let memory = match unfit {
        Ok(()) => BaseSensorCheck {
            sensor: "memory_hooks",
            available: true,
            detail: "mm_struct.owner in BTF, the tracepoints' arguments as read, and the functions that copy another \
                     process's memory in /proc/kallsyms: run attaches tp_btf mmap_lock_start_locking and sched_switch \
                     (where the tp_btf hook above works); with the socket hooks, no syscall program serves secret holders"
                .into(),
        },
        Err(reason) => BaseSensorCheck {
            sensor: "memory_hooks",
            available: false,
            detail: format!("{reason}: reaches into secret holders are watched at the syscalls, attached while any process holds a secret"),
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
    vec![guard, sockets, memory, tls]
}
