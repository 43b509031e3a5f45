//! Sensor tiers and what each needs from the kernel.

use std::fmt;

use serde::Serialize;

/// The set of kernel hooks `credwatch run` loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Syscall tracepoints, killing with `bpf_send_signal`; blind to io_uring opens.
    Tracepoint,
    /// The LSM tier's programs as `fmod_ret` on the kernel's `security_*` functions, where BPF LSM
    /// is built but not active: the same sight and denial.
    FmodRet,
    /// BPF LSM hooks on top: every path to a file, and denial.
    Lsm,
}

impl Tier {
    /// Best first.
    pub const PREFERENCE: [Self; 3] = [Self::Lsm, Self::FmodRet, Self::Tracepoint];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoint",
            Self::FmodRet => "fmod_ret",
            Self::Lsm => "lsm",
        }
    }

    /// Whether the tier attaches the security hooks (`monitor-ebpf/src/lsm.rs`), which see every
    /// route to a file, a socket or a process and refuse with EPERM.
    pub const fn has_security_hooks(self) -> bool {
        matches!(self, Self::FmodRet | Self::Lsm)
    }

    pub const fn requirements(self) -> &'static [Requirement] {
        const TRACEPOINT: &[Requirement] = &[
            Requirement::Btf,
            Requirement::RingBuffer,
            Requirement::SyscallTracepoint,
            Requirement::SendSignal,
        ];
        const FMOD_RET: &[Requirement] = &[
            Requirement::Btf,
            Requirement::RingBuffer,
            Requirement::SyscallTracepoint,
            Requirement::SendSignal,
            Requirement::FmodRetHook,
        ];
        const LSM: &[Requirement] = &[
            Requirement::Btf,
            Requirement::RingBuffer,
            Requirement::SyscallTracepoint,
            Requirement::SendSignal,
            Requirement::LsmHook,
            Requirement::BpfLsmActive,
        ];
        match self {
            Self::Tracepoint => TRACEPOINT,
            Self::FmodRet => FMOD_RET,
            Self::Lsm => LSM,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing a tier needs from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// Parseable `/sys/kernel/btf/vmlinux`.
    Btf,
    /// `BPF_MAP_TYPE_RINGBUF` maps.
    RingBuffer,
    /// A raw tracepoint or tp_btf program on `sys_enter` that runs.
    SyscallTracepoint,
    /// `bpf_send_signal` kills a process from a syscall hook.
    SendSignal,
    /// An fmod_ret program on `security_file_open` that loads, attaches and runs.
    FmodRetHook,
    /// An LSM program on `file_open` that loads, attaches and runs.
    LsmHook,
    /// `bpf` in the active LSM list.
    BpfLsmActive,
}

impl Requirement {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Btf => "btf",
            Self::RingBuffer => "ring_buffer",
            Self::SyscallTracepoint => "syscall_tracepoint",
            Self::SendSignal => "send_signal",
            Self::FmodRetHook => "fmod_ret_hook",
            Self::LsmHook => "lsm_hook",
            Self::BpfLsmActive => "bpf_lsm_active",
        }
    }
}

/// A requirement the kernel does not meet, and the failed check that shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unmet {
    pub requirement: Requirement,
    pub reason: String,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            requirement,
            reason,
        } = self;
        write!(f, "{}: {reason}", requirement.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("no sensor tier is available; the {} tier needs: {}", Tier::Tracepoint, join(.unmet))]
    MinimumUnavailable { unmet: Vec<Unmet> },
}

pub(crate) fn join(unmet: &[Unmet]) -> String {
    unmet
        .iter()
        .map(Unmet::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
