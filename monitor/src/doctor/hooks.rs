//! Hook probes: each loads one program of the `credwatch-probes` object, attaches it, makes this
//! process trigger it, and reads how many times it ran.

use std::{fs::File, hint::black_box, io};

use aya::{
    maps::{Array, MapError},
    programs::{
        uprobe::UProbeScope, BtfTracePoint, FEntry, KProbe, Lsm, Program, ProgramError,
        RawTracePoint, TracePoint, UProbe,
    },
    Btf, Ebpf, EbpfError, EbpfLoader,
};
use serde::Serialize;

use super::{error_detail::ErrorDetail, send_signal};
use crate::sensors::{
    fmod_ret::{FmodRetError, Linked},
    phase::Phase,
};

static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/credwatch-probes"));

/// The global every probe program compares the current tgid with.
const TARGET_TGID: &str = "TARGET_TGID";
/// The `Array<u64>` of one entry that the loaded program increments.
const HITS: &str = "HITS";

const SYSCALL_TRACEPOINT: [&str; 2] = ["syscalls", "sys_enter_getppid"];
const SYS_ENTER: &str = "sys_enter";
const FILE_OPEN_FUNCTION: &str = "security_file_open";
const FILE_OPEN_LSM_HOOK: &str = "file_open";
const UPROBE_SYMBOL: &str = "credwatch_doctor_uprobe_target";
/// The running binary, even when its path was replaced or deleted since it started (a rebuild):
/// aya reads the symbol from it and the kernel puts the uprobe on its inode.
const OWN_EXECUTABLE: &str = "/proc/self/exe";
/// Opening it reaches `security_file_open` and the `file_open` LSM hook.
const OPENED_FILE: &str = "/dev/null";

/// The uprobe probe's attach point: a symbol of this binary that doctor calls.
#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn credwatch_doctor_uprobe_target() -> u32 {
    black_box(0)
}

/// A kind of kernel hook a sensor could use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    Tracepoint,
    RawTracepoint,
    TpBtf,
    Fentry,
    FmodRet,
    Lsm,
    Uprobe,
    Kprobe,
    /// Not a hook of its own: `bpf_send_signal` called from a raw tracepoint on a child.
    SendSignal,
}

impl HookKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoint",
            Self::RawTracepoint => "raw_tracepoint",
            Self::TpBtf => "tp_btf",
            Self::Fentry => "fentry",
            Self::FmodRet => "fmod_ret",
            Self::Lsm => "lsm",
            Self::Uprobe => "uprobe",
            Self::Kprobe => "kprobe",
            Self::SendSignal => "send_signal",
        }
    }

    /// The program of `credwatch-probes` that probes this kind.
    pub(super) const fn program(self) -> &'static str {
        match self {
            Self::Tracepoint => "probe_tracepoint",
            Self::RawTracepoint => "probe_raw_tracepoint",
            Self::TpBtf => "probe_tp_btf",
            Self::Fentry => "probe_fentry",
            Self::FmodRet => "probe_fmod_ret",
            Self::Lsm => "probe_lsm",
            Self::Uprobe => "probe_uprobe",
            Self::Kprobe => "probe_kprobe",
            Self::SendSignal => "probe_send_signal",
        }
    }

    /// Where the probe attaches.
    pub fn target(self) -> String {
        match self {
            Self::Tracepoint => SYSCALL_TRACEPOINT.join("/"),
            Self::RawTracepoint | Self::TpBtf | Self::SendSignal => SYS_ENTER.to_owned(),
            Self::Fentry | Self::FmodRet | Self::Kprobe => FILE_OPEN_FUNCTION.to_owned(),
            Self::Lsm => FILE_OPEN_LSM_HOOK.to_owned(),
            Self::Uprobe => UPROBE_SYMBOL.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("loading the probe object")]
    Object(#[source] EbpfError),
    #[error("program `{0}` is not in the probe object")]
    MissingProgram(&'static str),
    #[error("program `{program}` is not of the expected type")]
    ProgramType {
        program: &'static str,
        source: ProgramError,
    },
    #[error("kernel BTF is unavailable, and `{0}` is loaded against it")]
    NoBtf(&'static str),
    #[error("loading `{program}` for {target}")]
    Load {
        program: &'static str,
        target: String,
        source: ProgramError,
    },
    #[error("attaching `{program}` to {target}")]
    Attach {
        program: &'static str,
        target: String,
        source: ProgramError,
    },
    #[error(transparent)]
    FmodRet(FmodRetError),
    #[error("triggering the hook")]
    Trigger(#[source] io::Error),
    #[error("spawning {0}")]
    Spawn(&'static str, #[source] io::Error),
    #[error("waiting for {0} to exit")]
    Wait(&'static str, #[source] io::Error),
    #[error("{victim} ran the hook {hits} time(s) but was still alive after {waited:?}")]
    Survived {
        victim: &'static str,
        hits: u64,
        waited: std::time::Duration,
    },
    #[error("{victim} ended otherwise than by SIGKILL from the hook: {status} (hook ran {hits} time(s))")]
    UnexpectedExit {
        victim: &'static str,
        status: std::process::ExitStatus,
        hits: u64,
    },
    #[error("map `{HITS}` is not in the probe object")]
    MissingCounter,
    #[error("reading map `{HITS}`")]
    Readback(#[source] MapError),
}

impl ProbeError {
    pub const fn phase(&self) -> Phase {
        match self {
            Self::Object(_) | Self::MissingProgram(_) | Self::ProgramType { .. } => Phase::Object,
            Self::NoBtf(_) | Self::Load { .. } => Phase::Load,
            Self::FmodRet(error) => error.phase(),
            Self::Attach { .. } => Phase::Attach,
            Self::Trigger(_)
            | Self::Spawn(..)
            | Self::Wait(..)
            | Self::Survived { .. }
            | Self::UnexpectedExit { .. } => Phase::Trigger,
            Self::MissingCounter | Self::Readback(_) => Phase::Readback,
        }
    }
}

/// What a probe found out about one hook kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HookOutcome {
    /// Loaded, attached, and ran `hits` times when doctor triggered it.
    Available { hits: u64 },
    /// Loaded and attached, but did not run when doctor triggered it.
    Silent,
    /// The kernel returned an error (`error.errno` is set).
    Refused { phase: Phase, error: ErrorDetail },
    /// The probe could not be completed for a reason other than a kernel error.
    Failed { phase: Phase, error: ErrorDetail },
}

impl HookOutcome {
    /// Whether sensors can rely on this hook.
    pub const fn is_available(&self) -> bool {
        matches!(self, Self::Available { .. })
    }

    /// `Ok(0)` means the program never ran.
    pub(super) fn from_result(result: Result<u64, ProbeError>) -> Self {
        match result {
            Ok(0) => Self::Silent,
            Ok(hits) => Self::Available { hits },
            Err(error) => {
                let phase = error.phase();
                let error = ErrorDetail::new(&error);
                match &error.errno {
                    Some(_) => Self::Refused { phase, error },
                    None => Self::Failed { phase, error },
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookCheck {
    pub hook: HookKind,
    pub target: String,
    #[serde(flatten)]
    pub outcome: HookOutcome,
}

/// One check per hook kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookChecks {
    /// Linux 4.7, `CONFIG_FTRACE_SYSCALLS`, tracefs mounted.
    pub tracepoint: HookCheck,
    /// Linux 4.17.
    pub raw_tracepoint: HookCheck,
    /// Linux 5.5, `CONFIG_DEBUG_INFO_BTF`.
    pub tp_btf: HookCheck,
    /// Linux 5.5, `CONFIG_DEBUG_INFO_BTF`, BPF trampolines (`CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS`).
    pub fentry: HookCheck,
    /// Linux 5.7, `CONFIG_DEBUG_INFO_BTF`, BPF trampolines.
    pub fmod_ret: HookCheck,
    /// Linux 5.7, `CONFIG_BPF_LSM`, BPF trampolines.
    pub lsm: HookCheck,
    /// `CONFIG_UPROBE_EVENTS`.
    pub uprobe: HookCheck,
    /// `CONFIG_KPROBE_EVENTS`.
    pub kprobe: HookCheck,
    /// Linux 5.3 for `bpf_send_signal`.
    pub send_signal: HookCheck,
}

impl HookChecks {
    /// Runs every probe, one after the other; each one's programs are gone when it returns.
    pub fn probe(btf: Option<&Btf>) -> Self {
        let check = |hook: HookKind, result| HookCheck {
            hook,
            target: hook.target(),
            outcome: HookOutcome::from_result(result),
        };
        Self {
            tracepoint: check(HookKind::Tracepoint, probe_tracepoint(btf)),
            raw_tracepoint: check(HookKind::RawTracepoint, probe_raw_tracepoint(btf)),
            tp_btf: check(HookKind::TpBtf, probe_tp_btf(btf)),
            fentry: check(HookKind::Fentry, probe_fentry(btf)),
            fmod_ret: check(HookKind::FmodRet, probe_fmod_ret(btf)),
            lsm: check(HookKind::Lsm, probe_lsm(btf)),
            uprobe: check(HookKind::Uprobe, probe_uprobe(btf)),
            kprobe: check(HookKind::Kprobe, probe_kprobe(btf)),
            send_signal: check(HookKind::SendSignal, send_signal::probe(btf)),
        }
    }

    /// The checks in report order.
    pub fn iter(&self) -> impl Iterator<Item = &HookCheck> {
        let Self {
            tracepoint,
            raw_tracepoint,
            tp_btf,
            fentry,
            fmod_ret,
            lsm,
            uprobe,
            kprobe,
            send_signal,
        } = self;
        [
            tracepoint,
            raw_tracepoint,
            tp_btf,
            fentry,
            fmod_ret,
            lsm,
            uprobe,
            kprobe,
            send_signal,
        ]
        .into_iter()
    }
}

/// Loads the probe object with `TARGET_TGID` set; no program is loaded into the kernel yet.
pub(crate) fn load_object(btf: Option<&Btf>, target_tgid: u32) -> Result<Ebpf, ProbeError> {
    EbpfLoader::new()
        .btf(btf)
        .override_global(TARGET_TGID, &target_tgid, true)
        .load(PROBES)
        .map_err(ProbeError::Object)
}

/// The program that probes `hook`, as its concrete type.
pub(super) fn program<'a, P>(ebpf: &'a mut Ebpf, hook: HookKind) -> Result<&'a mut P, ProbeError>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let name = hook.program();
    let program = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?;
    program
        .try_into()
        .map_err(|source| ProbeError::ProgramType {
            program: name,
            source,
        })
}

pub(super) fn read_hits(ebpf: &Ebpf) -> Result<u64, ProbeError> {
    let map = ebpf.map(HITS).ok_or(ProbeError::MissingCounter)?;
    let hits = Array::<_, u64>::try_from(map).map_err(ProbeError::Readback)?;
    hits.get(&0, 0).map_err(ProbeError::Readback)
}

pub(super) fn load_error(hook: HookKind) -> impl FnOnce(ProgramError) -> ProbeError {
    move |source| ProbeError::Load {
        program: hook.program(),
        target: hook.target(),
        source,
    }
}

pub(super) fn attach_error(hook: HookKind) -> impl FnOnce(ProgramError) -> ProbeError {
    move |source| ProbeError::Attach {
        program: hook.program(),
        target: hook.target(),
        source,
    }
}

/// How doctor makes a hook run in its own process.
enum Trigger {
    Getppid,
    OpenFile,
    CallUprobeTarget,
}

impl Trigger {
    fn fire(self) -> Result<(), ProbeError> {
        match self {
            Self::Getppid => {
                black_box(std::os::unix::process::parent_id());
            }
            Self::OpenFile => {
                File::open(OPENED_FILE).map_err(ProbeError::Trigger)?;
            }
            Self::CallUprobeTarget => {
                black_box(credwatch_doctor_uprobe_target());
            }
        }
        Ok(())
    }
}

/// Probes a hook that this process can trigger itself: `attach` loads and attaches the hook's
/// program and says how to make it run. Dropping the `Ebpf` detaches and unloads the program.
fn probe_in_self(
    btf: Option<&Btf>,
    attach: impl FnOnce(&mut Ebpf) -> Result<Trigger, ProbeError>,
) -> Result<u64, ProbeError> {
    let mut ebpf = load_object(btf, std::process::id())?;
    attach(&mut ebpf)?.fire()?;
    read_hits(&ebpf)
}

fn needs_btf(btf: Option<&Btf>, hook: HookKind) -> Result<&Btf, ProbeError> {
    btf.ok_or(ProbeError::NoBtf(hook.program()))
}

fn probe_tracepoint(btf: Option<&Btf>) -> Result<u64, ProbeError> {
    let hook = HookKind::Tracepoint;
    probe_in_self(btf, |ebpf| {
        let program: &mut TracePoint = program(ebpf, hook)?;
        program.load().map_err(load_error(hook))?;
        let [category, name] = SYSCALL_TRACEPOINT;
        program.attach(category, name).map_err(attach_error(hook))?;
        Ok(Trigger::Getppid)
    })
}

fn probe_raw_tracepoint(btf: Option<&Btf>) -> Result<u64, ProbeError> {
    let hook = HookKind::RawTracepoint;
    probe_in_self(btf, |ebpf| {
        let program: &mut RawTracePoint = program(ebpf, hook)?;
        program.load().map_err(load_error(hook))?;
        program.attach(SYS_ENTER).map_err(attach_error(hook))?;
        Ok(Trigger::Getppid)
    })
}

fn probe_tp_btf(btf: Option<&Btf>) -> Result<u64, ProbeError> {
    let hook = HookKind::TpBtf;
    let vmlinux = needs_btf(btf, hook)?;
    probe_in_self(btf, |ebpf| {
        let program: &mut BtfTracePoint = program(ebpf, hook)?;
        program.load(SYS_ENTER, vmlinux).map_err(load_error(hook))?;
        program.attach().map_err(attach_error(hook))?;
        Ok(Trigger::Getppid)
    })
}

fn probe_fentry(btf: Option<&Btf>) -> Result<u64, ProbeError> {
    let hook = HookKind::Fentry;
    let vmlinux = needs_btf(btf, hook)?;
    probe_in_self(btf, |ebpf| {
        let program: &mut FEntry = program(ebpf, hook)?;
        program
            .load(FILE_OPEN_FUNCTION, vmlinux)
            .map_err(load_error(hook))?;
        program.attach().map_err(attach_error(hook))?;
        Ok(Trigger::OpenFile)
    })
}

fn probe_fmod_ret(btf: Option<&Btf>) -> Result<u64, ProbeError> {
    let hook = HookKind::FmodRet;
    let vmlinux = needs_btf(btf, hook)?;
    let ebpf = load_object(btf, std::process::id())?;
    let linked = Linked::new(PROBES, &ebpf).map_err(ProbeError::FmodRet)?;
    let attached = linked.attach(hook.program(), FILE_OPEN_FUNCTION, vmlinux).map_err(ProbeError::FmodRet)?;
    Trigger::OpenFile.fire()?;
    drop(attached);
    read_hits(&ebpf)
}

fn probe_lsm(btf: Option<&Btf>) -> Result<u64, ProbeError> {
    let hook = HookKind::Lsm;
    let vmlinux = needs_btf(btf, hook)?;
    probe_in_self(btf, |ebpf| {
        let program: &mut Lsm = program(ebpf, hook)?;
        program
            .load(FILE_OPEN_LSM_HOOK, vmlinux)
            .map_err(load_error(hook))?;
        program.attach().map_err(attach_error(hook))?;
        Ok(Trigger::OpenFile)
    })
}

fn probe_uprobe(btf: Option<&Btf>) -> Result<u64, ProbeError> {
    let hook = HookKind::Uprobe;
    probe_in_self(btf, |ebpf| {
        let program: &mut UProbe = program(ebpf, hook)?;
        program.load().map_err(load_error(hook))?;
        program
            .attach(UPROBE_SYMBOL, OWN_EXECUTABLE, UProbeScope::CallingProcess)
            .map_err(attach_error(hook))?;
        Ok(Trigger::CallUprobeTarget)
    })
}

fn probe_kprobe(btf: Option<&Btf>) -> Result<u64, ProbeError> {
    let hook = HookKind::Kprobe;
    probe_in_self(btf, |ebpf| {
        let program: &mut KProbe = program(ebpf, hook)?;
        program.load().map_err(load_error(hook))?;
        program
            .attach(FILE_OPEN_FUNCTION, 0)
            .map_err(attach_error(hook))?;
        Ok(Trigger::OpenFile)
    })
}
