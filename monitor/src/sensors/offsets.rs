//! Resolves [`KernelOffsets`] from the running kernel's BTF, so one build runs on any kernel.

use monitor_common::offsets::KernelOffsets;

use super::btf::{Btf, BtfError};

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("kernel BTF has no usable {type_name}.{member}")]
    Missing {
        type_name: &'static str,
        member: &'static str,
        #[source]
        source: BtfError,
    },
    #[error("kernel BTF gives {type_name}.{member} {actual} bytes; the sensors read {expected}")]
    Size { type_name: &'static str, member: &'static str, expected: u32, actual: u32 },
}

/// For members whose offset is used but that are never read whole (an embedded struct, an
/// array): only their presence is checked.
const ANY_SIZE: u32 = 0;

/// Offset of `type_name.member`, checked to have the size the eBPF side reads.
fn field(btf: &Btf, type_name: &'static str, member: &'static str, size: u32) -> Result<u32, OffsetError> {
    let missing = |source| OffsetError::Missing { type_name, member, source };
    let actual = btf.member_size(type_name, member).map_err(missing)?;
    if size != ANY_SIZE && actual != size {
        return Err(OffsetError::Size { type_name, member, expected: size, actual });
    }
    btf.member_offset(type_name, member).map_err(missing)
}

const POINTER: u32 = 8;

pub fn resolve(btf: &Btf) -> Result<KernelOffsets, OffsetError> {
    let regs = |member| field(btf, "pt_regs", member, 8);
    Ok(KernelOffsets {
        task_pid: field(btf, "task_struct", "pid", 4)?,
        task_tgid: field(btf, "task_struct", "tgid", 4)?,
        task_real_parent: field(btf, "task_struct", "real_parent", POINTER)?,
        task_group_leader: field(btf, "task_struct", "group_leader", POINTER)?,
        task_start_boottime: field(btf, "task_struct", "start_boottime", 8)?,
        task_exit_code: field(btf, "task_struct", "exit_code", 4)?,
        task_signal: field(btf, "task_struct", "signal", POINTER)?,
        task_mm: field(btf, "task_struct", "mm", POINTER)?,
        task_files: field(btf, "task_struct", "files", POINTER)?,
        task_flags: field(btf, "task_struct", "flags", 4)?,
        task_ptrace: field(btf, "task_struct", "ptrace", 4)?,
        task_parent: field(btf, "task_struct", "parent", POINTER)?,
        signal_live: field(btf, "signal_struct", "live", 4)?,
        mm_arg_start: field(btf, "mm_struct", "arg_start", 8)?,
        mm_arg_end: field(btf, "mm_struct", "arg_end", 8)?,
        mm_env_start: field(btf, "mm_struct", "env_start", 8)?,
        mm_env_end: field(btf, "mm_struct", "env_end", 8)?,
        // Only the memory hooks read it, and they stay unloaded without it (see the loader).
        mm_owner: field(btf, "mm_struct", "owner", POINTER).unwrap_or(0),
        mm_exe_file: field(btf, "mm_struct", "exe_file", POINTER)?,
        binprm_filename: field(btf, "linux_binprm", "filename", POINTER)?,
        files_fdt: field(btf, "files_struct", "fdt", POINTER)?,
        fdtable_max_fds: field(btf, "fdtable", "max_fds", 4)?,
        fdtable_fd: field(btf, "fdtable", "fd", POINTER)?,
        file_inode: field(btf, "file", "f_inode", POINTER)?,
        file_flags: field(btf, "file", "f_flags", 4)?,
        file_op: field(btf, "file", "f_op", POINTER)?,
        fop_open: field(btf, "file_operations", "open", POINTER)?,
        inode_ino: field(btf, "inode", "i_ino", 8)?,
        inode_sb: field(btf, "inode", "i_sb", POINTER)?,
        sb_dev: field(btf, "super_block", "s_dev", 4)?,
        proc_inode_pid_from_inode: field(btf, "proc_inode", "vfs_inode", ANY_SIZE)?
            - field(btf, "proc_inode", "pid", POINTER)?,
        pid_nr: field(btf, "pid", "numbers", ANY_SIZE)? + field(btf, "upid", "nr", 4)?,
        regs_syscall_nr: regs("orig_ax")?,
        regs_arg: [regs("di")?, regs("si")?, regs("dx")?, regs("r10")?, regs("r8")?, regs("r9")?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_offsets_resolve_and_are_distinct() {
        let btf = Btf::from_sys_fs().expect("this suite needs /sys/kernel/btf/vmlinux");
        let KernelOffsets {
            task_pid,
            task_tgid,
            task_real_parent,
            task_group_leader,
            task_start_boottime,
            task_exit_code,
            task_signal,
            task_mm,
            signal_live,
            mm_arg_start,
            mm_arg_end,
            mm_env_start,
            mm_env_end,
            task_files,
            task_flags,
            task_ptrace,
            task_parent,
            mm_owner,
            mm_exe_file,
            binprm_filename: _,
            files_fdt: _,
            fdtable_max_fds: _,
            fdtable_fd,
            file_inode: _,
            file_flags: _,
            file_op: _,
            fop_open: _,
            inode_ino: _,
            inode_sb: _,
            sb_dev: _,
            proc_inode_pid_from_inode,
            pid_nr: _,
            regs_syscall_nr,
            regs_arg,
        } = resolve(&btf).unwrap();
        let mut task_fields = [
            task_pid,
            task_tgid,
            task_real_parent,
            task_group_leader,
            task_start_boottime,
            task_exit_code,
            task_signal,
            task_mm,
            task_files,
            task_flags,
            task_ptrace,
            task_parent,
        ];
        task_fields.sort_unstable();
        assert!(task_fields.windows(2).all(|pair| pair[0] < pair[1]), "{task_fields:?}");
        // tgid follows pid in every kernel since 2.6.
        assert_eq!(task_tgid, task_pid + 4);
        assert!(signal_live > 0 && mm_arg_start > 0 && fdtable_fd > 0);
        // Debian's kernels have CONFIG_MEMCG, so the memory hooks run here.
        assert!(mm_owner > 0 && mm_exe_file > 0);
        // The blocks' bounds follow each other in mm_struct.
        assert!(mm_arg_start < mm_arg_end && mm_arg_end < mm_env_start && mm_env_start < mm_env_end);
        // The inode is embedded after the pid pointer in proc_inode.
        assert!(proc_inode_pid_from_inode > 0);
        // x86_64 keeps the syscall number after the argument registers in pt_regs.
        assert!(regs_arg.iter().all(|&arg| arg < regs_syscall_nr), "{regs_arg:?}");
    }
}
