//! The peer: credwatch's in-kernel filtering written for bpftrace, on the per-syscall
//! tracepoints such tools attach to. Opens are matched against the watched inode the way the
//! sensors do it (fd → file → inode, device and number), holders' connects are reported, and so
//! are every exec, fork and exit.

use std::{os::unix::fs::MetadataExt as _, path::Path};

use super::error::BenchError;

/// The script for a secret file at `secret`.
pub fn script(secret: &Path) -> Result<String, BenchError> {
    let metadata = std::fs::metadata(secret)
        .map_err(BenchError::io(format!("reading {}", secret.display())))?;
    // `super_block::s_dev` uses the kernel's encoding of a device number, not stat's.
    let device = (libc::major(metadata.dev()) << 20) | libc::minor(metadata.dev());
    let inode = metadata.ino();
    Ok(format!(
        r#"BEGIN {{ @watched[(uint32){device}, (uint64){inode}] = 1; }}

tracepoint:syscalls:sys_exit_open, tracepoint:syscalls:sys_exit_openat,
tracepoint:syscalls:sys_exit_openat2, tracepoint:syscalls:sys_exit_creat,
tracepoint:syscalls:sys_exit_open_by_handle_at
/args->ret >= 0/
{{
    $inode = (*(curtask->files->fdt->fd + args->ret))->f_inode;
    if (@watched[(uint32)$inode->i_sb->s_dev, (uint64)$inode->i_ino]) {{
        @holders[pid] = 1;
        printf("secret_open %d %d\n", pid, args->ret);
    }}
}}

tracepoint:syscalls:sys_enter_connect /@holders[pid]/ {{ printf("connect %d\n", pid); }}

tracepoint:sched:sched_process_exec {{ printf("exec %d\n", pid); }}

tracepoint:sched:sched_process_fork
{{
    if (@holders[pid]) {{ @holders[args->child_pid] = 1; }}
    printf("fork %d %d\n", pid, args->child_pid);
}}

tracepoint:sched:sched_process_exit {{ delete(@holders[pid]); printf("exit %d\n", pid); }}
"#
    ))
}
