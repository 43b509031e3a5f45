//! The pseudo-filesystems the sensors depend on, mounted where missing.

use std::{ffi::CString, io, mem::MaybeUninit};

use serde::Serialize;

use super::error_detail::ErrorDetail;

/// A kernel pseudo-filesystem at its standard mount point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filesystem {
    /// Tracepoint ids for `tracepoint` programs; kprobe and uprobe events on kernels without the
    /// perf PMUs. `CONFIG_TRACING`.
    Tracefs,
    /// Pinned maps and programs. `CONFIG_BPF_SYSCALL`.
    Bpffs,
    /// The active LSM list (`lsm`). `CONFIG_SECURITYFS`.
    Securityfs,
}

impl Filesystem {
    pub const ALL: [Self; 3] = [Self::Tracefs, Self::Bpffs, Self::Securityfs];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Tracefs => "tracefs",
            Self::Bpffs => "bpffs",
            Self::Securityfs => "securityfs",
        }
    }

    pub const fn mount_point(self) -> &'static str {
        match self {
            Self::Tracefs => "/sys/kernel/tracing",
            Self::Bpffs => "/sys/fs/bpf",
            Self::Securityfs => "/sys/kernel/security",
        }
    }

    /// The type name `mount(2)` takes.
    const fn fs_type(self) -> &'static str {
        match self {
            Self::Tracefs => "tracefs",
            Self::Bpffs => "bpf",
            Self::Securityfs => "securityfs",
        }
    }

    /// `statfs.f_type`, from include/uapi/linux/magic.h.
    const fn magic(self) -> u32 {
        match self {
            Self::Tracefs => 0x7472_6163,
            Self::Bpffs => 0xcafe_4a11,
            Self::Securityfs => 0x7363_6673,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("statfs {path}")]
    Statfs {
        path: &'static str,
        source: io::Error,
    },
    #[error("mount {fs_type} on {path}")]
    Mount {
        fs_type: &'static str,
        path: &'static str,
        source: io::Error,
    },
}

/// Whether a filesystem is mounted, and whether doctor had to mount it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MountState {
    Mounted,
    MountedNow,
    Failed { error: ErrorDetail },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilesystemCheck {
    pub filesystem: Filesystem,
    pub path: &'static str,
    #[serde(flatten)]
    pub state: MountState,
}

/// Checks each filesystem and mounts it where missing. The mounts stay: `run` needs them too.
pub fn ensure_mounted() -> Vec<FilesystemCheck> {
    Filesystem::ALL
        .into_iter()
        .map(|filesystem| {
            let state = match mount_if_missing(filesystem) {
                Ok(Mount::Existing) => MountState::Mounted,
                Ok(Mount::New) => MountState::MountedNow,
                Err(error) => MountState::Failed {
                    error: ErrorDetail::new(&error),
                },
            };
            FilesystemCheck {
                filesystem,
                path: filesystem.mount_point(),
                state,
            }
        })
        .collect()
}

enum Mount {
    Existing,
    New,
}

fn mount_if_missing(filesystem: Filesystem) -> Result<Mount, MountError> {
    let path = filesystem.mount_point();
    let c_path = c_string(path);
    if is_mounted(filesystem, &c_path).map_err(|source| MountError::Statfs { path, source })? {
        return Ok(Mount::Existing);
    }
    let fs_type = filesystem.fs_type();
    let c_type = c_string(fs_type);
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; no mount data.
    let ret = unsafe {
        libc::mount(
            c_type.as_ptr(),
            c_path.as_ptr(),
            c_type.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        let source = io::Error::last_os_error();
        return Err(MountError::Mount {
            fs_type,
            path,
            source,
        });
    }
    Ok(Mount::New)
}

fn is_mounted(filesystem: Filesystem, path: &CString) -> io::Result<bool> {
    let mut stat = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is large enough for the kernel to fill.
    if unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // f_type is a signed word of either width; the magic numbers are 32-bit, so compare the low
    // 32 bits, which a negative 32-bit f_type keeps intact.
    Ok(stat.f_type as u32 == filesystem.magic())
}

fn c_string(text: &'static str) -> CString {
    CString::new(text).expect("static paths and type names have no NUL byte")
}
