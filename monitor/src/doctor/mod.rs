//! What the running kernel allows, found out by loading and attaching a tiny program of each
//! kind, and the sensor [`Tier`] that follows from it.
//!
//! `credwatch doctor` prints the [`KernelReport`]; `credwatch run` calls [`inspect`] at start and
//! loads the sensors of [`KernelReport::tier`].

mod base_sensors;
mod btf;
mod error_detail;
mod filesystems;
pub(crate) mod hooks;
mod lsm_list;
pub mod report;
mod ring_buffer;
mod send_signal;

use serde::Serialize;

use crate::sensors::{
    sizes::MapSizes,
    tier::{Requirement, Tier, TierError, Unmet},
};

pub use self::{
    base_sensors::BaseSensorCheck,
    btf::BtfCheck,
    error_detail::{Errno, ErrorDetail},
    filesystems::{Filesystem, FilesystemCheck, MountState},
    hooks::{HookCheck, HookChecks, HookKind, HookOutcome, ProbeError},
    lsm_list::LsmListCheck,
    ring_buffer::RingBufferCheck,
};

/// Everything doctor checked, in the order it checked it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelReport {
    /// `/proc/sys/kernel/osrelease`, empty if unreadable.
    pub kernel: String,
    pub filesystems: Vec<FilesystemCheck>,
    pub btf: BtfCheck,
    pub lsm_list: LsmListCheck,
    pub ring_buffer: RingBufferCheck,
    pub hooks: HookChecks,
    /// The tracepoint tier's file guard and socket hooks, and the TLS uprobes: whether `run` attaches them here.
    pub base_sensors: Vec<BaseSensorCheck>,
    /// Entries of each kernel map `run` loads, on this host's defaults (the config's `[maps]`
    /// section may change them).
    pub maps: Vec<MapSize>,
}

/// A kernel map and its entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapSize {
    pub map: &'static str,
    pub entries: u32,
}

/// Mounts missing pseudo-filesystems, then probes BTF, the LSM list, ring buffers and every hook
/// kind. Needs root (`CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_ADMIN` for the mounts). Every program it
/// loads is detached and unloaded, and its child reaped, before it returns.
pub fn inspect() -> KernelReport {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_default();
    // Mount first: aya looks for tracefs once per process, and the LSM list is on securityfs.
    let filesystems = filesystems::ensure_mounted();
    let (btf, vmlinux) = btf::load();
    let lsm_list = lsm_list::read();
    let ring_buffer = ring_buffer::probe();
    let hooks = HookChecks::probe(vmlinux.as_ref());
    let base_sensors = base_sensors::probe();
    let maps = MapSizes::for_host().by_map().into_iter().map(|(map, entries)| MapSize { map, entries }).collect();
    KernelReport {
        kernel,
        filesystems,
        btf,
        lsm_list,
        ring_buffer,
        hooks,
        base_sensors,
        maps,
    }
}

impl KernelReport {
    /// The best tier this kernel supports.
    pub fn tier(&self) -> Result<Tier, TierError> {
        Tier::PREFERENCE
            .into_iter()
            .find(|&tier| self.unmet(tier).is_empty())
            .ok_or_else(|| TierError::MinimumUnavailable {
                unmet: self.unmet(Tier::Tracepoint),
            })
    }

    /// The requirements of `tier` this kernel does not meet, with the checks that show it.
    pub fn unmet(&self, tier: Tier) -> Vec<Unmet> {
        tier.requirements()
            .iter()
            .filter_map(|&requirement| {
                self.unmet_reason(requirement).map(|reason| Unmet {
                    requirement,
                    reason,
                })
            })
            .collect()
    }

    fn unmet_reason(&self, requirement: Requirement) -> Option<String> {
        let Self {
            kernel: _,
            filesystems: _,
            btf,
            lsm_list,
            ring_buffer,
            hooks,
            base_sensors: _,
            maps: _,
        } = self;
        match requirement {
            Requirement::Btf => match btf {
                BtfCheck::Parsed { path: _ } => None,
                BtfCheck::Failed { path: _, error } => Some(format!("btf failed: {error}")),
            },
            Requirement::RingBuffer => match ring_buffer {
                RingBufferCheck::Supported => None,
                RingBufferCheck::Unsupported => Some("ring buffer maps unsupported".to_owned()),
                RingBufferCheck::Failed { error } => {
                    Some(format!("ring buffer probe failed: {error}"))
                }
            },
            Requirement::SyscallTracepoint => {
                if hooks.raw_tracepoint.outcome.is_available()
                    || hooks.tp_btf.outcome.is_available()
                {
                    None
                } else {
                    Some(format!(
                        "{}; {}",
                        hook_reason(&hooks.raw_tracepoint),
                        hook_reason(&hooks.tp_btf)
                    ))
                }
            }
            Requirement::SendSignal => {
                (!hooks.send_signal.outcome.is_available()).then(|| hook_reason(&hooks.send_signal))
            }
            Requirement::FmodRetHook => {
                (!hooks.fmod_ret.outcome.is_available()).then(|| hook_reason(&hooks.fmod_ret))
            }
            Requirement::LsmHook => {
                (!hooks.lsm.outcome.is_available()).then(|| hook_reason(&hooks.lsm))
            }
            Requirement::BpfLsmActive => match lsm_list {
                _ if lsm_list.bpf_active() => None,
                LsmListCheck::Read { lsms } => {
                    Some(format!("bpf not in the active LSMs {}", lsms.join(",")))
                }
                LsmListCheck::Failed { error } => Some(format!("lsm list unreadable: {error}")),
            },
        }
    }
}

/// "hook:lsm refused at load: EPERM: Operation not permitted"; the hook's own row has the rest.
fn hook_reason(check: &HookCheck) -> String {
    let HookCheck {
        hook,
        target: _,
        outcome,
    } = check;
    let name = hook.name();
    match outcome {
        HookOutcome::Available { hits: _ } => format!("hook:{name} available"),
        HookOutcome::Silent => format!("hook:{name} attached but did not run"),
        HookOutcome::Refused { phase, error } => {
            let cause = error
                .errno
                .as_ref()
                .map_or_else(|| error.message.clone(), Errno::to_string);
            format!("hook:{name} refused at {}: {cause}", phase.name())
        }
        HookOutcome::Failed { phase, error } => {
            format!("hook:{name} failed at {}: {error}", phase.name())
        }
    }
}
