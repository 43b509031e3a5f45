//! Loading, attaching and reading the tracepoint-tier sensors.

use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, Lsm, ProgramError, RawTracePoint, SockOps},
    BtfError as AyaBtfError, Ebpf, EbpfError, EbpfLoader,
};
use monitor_common::{
    event::{exec::CaptureLimits, EventKind},
    listers::Listers,
    maps::{fail_closed, written, InodeKey, MapFailures},
};
use std::{os::fd::AsFd as _, path::PathBuf, sync::atomic::Ordering};

use tokio::io::unix::AsyncFd;

use super::{
    btf::{Btf, BtfError},
    cgroup,
    decode::{decode, DecodeError},
    file_guard::{FileGuard, GuardMaps},
    fmod_ret::{self, FmodRetError, Linked},
    known_gaps,
    listers::{self, Lister},
    syscall_hooks::{self, SyscallHooks},
    tls,
    loss::LossCounts,
    kallsyms,
    maps::{self, KernelMaps},
    memory_hooks,
    offsets::{resolve, OffsetError},
    sizes::MapSizes,
    tier::Tier,
};
use crate::event::{Event, InodeId};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/credwatch-sensors"));

/// Raw tracepoints of the tracepoint tier: each program is named after its tracepoint; the
/// second name labels it in metrics.
const RAW_TRACEPOINTS: [(&str, &str, &str); 6] = [
    ("sched_process_exec", "sched_process_exec", "raw_tracepoint/sched_process_exec"),
    ("lister_exec", "sched_process_exec", "raw_tracepoint/lister_exec"),
    ("sched_process_fork", "sched_process_fork", "raw_tracepoint/sched_process_fork"),
    ("sched_process_exit", "sched_process_exit", "raw_tracepoint/sched_process_exit"),
    ("sys_enter", "sys_enter", "raw_tracepoint/sys_enter"),
    ("sys_exit", "sys_exit", "raw_tracepoint/sys_exit"),
];

/// LSM hooks of the LSM tier (`monitor-ebpf/src/lsm.rs`): each program is named after its hook;
/// the second name labels it in metrics.
const LSM_HOOKS: [(&str, &str); 6] = [
    ("file_open", "lsm/file_open"),
    ("file_permission", "lsm/file_permission"),
    ("mmap_file", "lsm/mmap_file"),
    ("socket_connect", "lsm/socket_connect"),
    ("ptrace_access_check", "lsm/ptrace_access_check"),
    ("task_kill", "lsm/task_kill"),
];

/// The same hooks on the fmod_ret tier: (program, the kernel function it is attached to as
/// fmod_ret, its label in metrics). `security_mmap_file` has a program of its own (see lsm.rs).
const FMOD_RET_HOOKS: [(&str, &str, &str); 6] = [
    ("file_open", "security_file_open", "fmod_ret/security_file_open"),
    ("file_permission", "security_file_permission", "fmod_ret/security_file_permission"),
    ("security_mmap_file", "security_mmap_file", "fmod_ret/security_mmap_file"),
    ("socket_connect", "security_socket_connect", "fmod_ret/security_socket_connect"),
    ("ptrace_access_check", "security_ptrace_access_check", "fmod_ret/security_ptrace_access_check"),
    ("task_kill", "security_task_kill", "fmod_ret/security_task_kill"),
];

/// Cgroup socket-address hooks (`monitor-ebpf/src/sockets.rs`), attached at the cgroup v2 root
/// on every tier: each program is named after its attach point; the second name labels it. On
/// the security hooks' tiers the connect pair only routes proxied tasks' connects (see
/// `monitor-ebpf/src/egress.rs`); `socket_connect` judges holders' connects there.
const SOCKET_HOOKS: [(&str, &str); 4] = [
    ("connect4", "cgroup/connect4"),
    ("connect6", "cgroup/connect6"),
    ("sendmsg4", "cgroup/sendmsg4"),
    ("sendmsg6", "cgroup/sendmsg6"),
];

/// The socket-operations program that tells the egress proxy who made each connection.
const EGRESS_ESTABLISHED: (&str, &str) = ("egress_established", "cgroup/sock_ops");

/// The fanotify file guard, as a hook label.
const FILE_GUARD: &str = "fanotify/perm";

/// How long events may gather after the ring buffer signals, before the batch is drained.
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("cannot read the kernel's BTF")]
    Btf(#[from] BtfError),
    #[error("cannot resolve kernel struct offsets")]
    Offsets(#[from] OffsetError),
    #[error("cannot read the kernel's BTF, which LSM and fmod_ret programs are loaded against")]
    LsmBtf(#[source] AyaBtfError),
    #[error("cannot load or attach the fmod_ret tier's programs")]
    FmodRet(#[from] FmodRetError),
    #[error("cannot load the sensors' eBPF object (root, or CAP_BPF and CAP_PERFMON, is needed)")]
    Load(#[from] EbpfError),
    #[error("eBPF object has no program {0}")]
    MissingProgram(&'static str),
    #[error("eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("cannot load or attach {name}")]
    Attach {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot use map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot count the possible CPUs ({path})")]
    Cpus {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot poll the ring buffer")]
    Poll(#[source] std::io::Error),
    #[error("cannot load or attach the memory hook {name}")]
    MemoryHooks {
        name: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot load or attach the cgroup socket hooks at {path} (CAP_SYS_ADMIN or CAP_NET_ADMIN is needed)")]
    SocketHooks {
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Tunables of the kernel side.
#[derive(Clone, Debug)]
pub struct SensorOptions {
    /// Ring buffer size in bytes: a power-of-two multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// A process whose opens are not reported: the daemon itself, which reads every new
    /// process's environment and holds O_PATH handles on secret files. On the LSM and fmod_ret tiers, only
    /// root outside every task may signal or ptrace it.
    pub ignored_tgid: Option<u32>,
    /// Which hooks to attach: the tracepoint tier's, or those plus the security hooks as LSM or
    /// fmod_ret programs. The caller knows the tier from `doctor::inspect()`.
    pub tier: Tier,
    pub map_sizes: MapSizes,
    /// How much of an exec's command line and environment is captured.
    pub capture: CaptureLimits,
    /// On the base tier, guard secret files with fanotify permission events where the kernel
    /// allows it (the daemon does; tests of the raw sensors do not).
    pub file_guard: bool,
    /// On the base tier, attach the cgroup socket hooks where cgroup v2 is mounted. A caller whose
    /// load failed with [`SensorError::SocketHooks`] loads again without them.
    pub socket_hooks: bool,
    /// Attach the uprobes on TLS libraries' write functions (`sensors::tls`).
    pub tls: bool,
    /// On the base tier, attach the memory hooks where the kernel has what they read. A caller
    /// whose load failed with [`SensorError::MemoryHooks`] loads again without them.
    pub memory_hooks: bool,
    /// Executables whose runs read environments only to list processes (`[harvest] listers`).
    pub listers: Vec<PathBuf>,
}

impl Default for SensorOptions {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: 4 << 20,
            ignored_tgid: None,
            tier: Tier::Tracepoint,
            map_sizes: MapSizes::for_host(),
            capture: CaptureLimits::MAX,
            file_guard: false,
            socket_hooks: true,
            tls: true,
            memory_hooks: true,
            listers: Vec::new(),
        }
    }
}

/// Failed writes to one kernel map, by the kernel and by the daemon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MapWriteFailures {
    pub map: &'static str,
    pub failures: u64,
    /// The process of the kernel's latest failed write (0: none, or only the daemon's failed).
    pub last_tgid: u32,
}

/// Something the sensors cannot see on this kernel; reported by `doctor`, `status` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SensorGap {
    /// What is not seen, e.g. `harvest:proc_open`.
    pub capability: &'static str,
    pub reason: String,
}

/// The loaded and attached sensors. Dropping this detaches every program.
pub struct Sensors {
    events: AsyncFd<RingBuf<MapData>>,
    /// What the kernel killed or refused, in a buffer of its own (see `DECISIONS`).
    decisions: AsyncFd<RingBuf<MapData>>,
    failures: PerCpuArray<MapData, MapFailures>,
    fail_closed: Array<MapData, u32>,
    maps: KernelMaps,
    gaps: Vec<SensorGap>,
    lost: PerCpuArray<MapData, u64>,
    /// Decides opens and reads of secret files on the base tier, where it could start.
    guard: Option<FileGuard>,
    /// Whether the cgroup socket-address hooks are attached.
    socket_hooks: bool,
    /// The TLS uprobes attached, by label.
    tls_hooks: Vec<&'static str>,
    /// The fmod_ret tier's programs, which aya does not own.
    _fmod_ret: Vec<fmod_ret::Attached>,
    /// Records the decoder rejected; a layout mismatch shows up here, not as silence.
    decode_errors: u64,
    tier: Tier,
    /// The lister executables, as resolved at load, and held open to keep their inodes.
    listers: Vec<Lister>,
    _lister_files: Vec<std::fs::File>,
    /// Owns the programs and their links; declared last so the maps above are dropped first.
    syscall_hooks: SyscallHooks,
}

impl Sensors {
    /// Resolves kernel offsets from BTF, loads the programs and attaches them.
    ///
    /// Requires Linux 5.8+ with BTF at /sys/kernel/btf/vmlinux and root (CAP_BPF + CAP_PERFMON).
    /// Must be called inside a tokio runtime (the ring buffer is polled through epoll).
    pub fn load(options: SensorOptions) -> Result<Self, SensorError> {
        let SensorOptions {
            ring_buffer_bytes,
            ignored_tgid,
            tier,
            map_sizes,
            capture,
            file_guard,
            socket_hooks,
            tls,
            memory_hooks,
            listers,
        } = options;
        let mut gaps = Vec::new();
        let btf = Btf::from_sys_fs()?;
        let offsets = resolve(&btf)?;
        let (memory_hooks, symbols) = memory_hooks_fit(&btf, &offsets, tier, memory_hooks, &mut gaps);
        drop(btf);
        let ignored_tgid = ignored_tgid.unwrap_or(0);
        // The cgroup hooks take connects and datagram sends off the syscall path where cgroup v2
        // is mounted; with the security hooks, which see connects, only the `sendmsg` pair.
        let cgroup_root = if socket_hooks { cgroup::v2_root() } else { None };
        if cgroup_root.is_none() {
            let reason = if socket_hooks { "cgroup v2 is not mounted" } else { "refused at load or attach (see the log)" };
            gaps.push(SensorGap { capability: "network:cgroup_hooks", reason: reason.into() });
        }
        let (lister_table, listers, lister_files) = listers::resolve(&listers);
        let socket_hooks = cgroup_root.is_some();
        let globals =
            Globals { offsets, symbols, ignored_tgid, tier, socket_hooks, memory_hooks, capture, listers: lister_table };
        let mut ebpf = load_object(&globals, ring_buffer_bytes, &map_sizes)?;
        // The security hooks first: the tracepoint programs already leave connects and ptrace to
        // them.
        let fmod_ret = attach_security_hooks(&mut ebpf, tier)?;
        load_tracepoints(&mut ebpf, memory_hooks)?;
        if let Some(root) = &cgroup_root {
            attach_socket_hooks(&mut ebpf, root)?;
        }
        let tls_hooks = if tls {
            let (hooks, tls_gaps) = tls::attach(&mut ebpf);
            gaps.extend(tls_gaps);
            hooks
        } else {
            Vec::new()
        };
        let guard_maps = if file_guard && !tier.has_security_hooks() { Some(guard_maps(&ebpf)?) } else { None };
        let events = take_map(&mut ebpf, "EVENTS", RingBuf::try_from)?;
        let decisions = take_map(&mut ebpf, "DECISIONS", RingBuf::try_from)?;
        let lost = take_map(&mut ebpf, "LOST", PerCpuArray::try_from)?;
        let failures = take_map(&mut ebpf, "MAP_FAILURES", PerCpuArray::try_from)?;
        let fail_closed = take_map(&mut ebpf, "FAIL_CLOSED", Array::try_from)?;
        let mut maps = kernel_maps(&mut ebpf)?;
        let (syscall_hooks, guard, marks) =
            on_demand(ebpf, tier, memory_hooks, cgroup_root.is_some(), guard_maps, ignored_tgid, &mut gaps)?;
        let running = known_gaps::Sensors {
            tier,
            file_guard: guard.is_some(),
            socket_hooks,
            tls: !tls_hooks.is_empty(),
        };
        gaps.extend(known_gaps::of(running).into_iter().map(|gap| SensorGap { capability: gap.capability, reason: gap.reason.into() }));
        maps.marks = marks;
        maps.syscall_hooks = Some(syscall_hooks.clone());
        // SAFETY: each ring buffer owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd owns the ring buffer.
        let (events, decisions) = unsafe { (AsyncFd::register(events), AsyncFd::register(decisions)) };
        let events = events.map_err(|error| SensorError::Poll(error.into()))?;
        let decisions = decisions.map_err(|error| SensorError::Poll(error.into()))?;
        // The kernel's BTF, parsed twice (offsets; aya's, for the tp_btf and LSM programs), is
        // freed by now, in holes glibc would keep resident (measured: 26 MiB). Hand them back.
        #[cfg(target_env = "gnu")]
        // SAFETY: no preconditions.
        unsafe {
            libc::malloc_trim(0)
        };
        Ok(Self {
            events,
            decisions,
            failures,
            fail_closed,
            maps,
            gaps,
            lost,
            guard,
            socket_hooks,
            tls_hooks,
            _fmod_ret: fmod_ret,
            decode_errors: 0,
            tier,
            listers,
            _lister_files: lister_files,
            syscall_hooks,
        })
    }

    /// Waits until the kernel has submitted events, then appends every available one to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> Result<(), SensorError> {
        let start = out.len();
        // Readiness is cleared before the drain: a record submitted during the drain wakes the
        // next call instead of waiting for another one.
        tokio::select! {
            guard = self.events.readable_mut() => guard.map_err(SensorError::Poll)?.clear_ready(),
            guard = self.decisions.readable_mut() => guard.map_err(SensorError::Poll)?.clear_ready(),
            Some(report) = next_report(&mut self.guard) => out.push(report),
        }
        // Let events gather before draining: the kernel wakes the reader only once it has caught
        // up, so producers pay the wake-up once per batch instead of once per event (measured:
        // tracked connects 1.55x -> 1.00x, storm loss 1.4 % -> 0, idle p99 0.1 -> 2.1 ms).
        tokio::time::sleep(BATCH_LINGER).await;
        self.drain_now(out);
        out[start..].sort_by_key(|event| event.ktime_ns);
        Ok(())
    }

    /// Appends every event already in the ring buffers to `out`, in kernel time order, without
    /// waiting: what the kernel submitted before a control input must be applied before it.
    pub fn drain_now(&mut self, out: &mut Vec<Event>) {
        let start = out.len();
        // The guard's reports first: every kernel event that came before a report's use (the
        // opener's fork and exec) was in the rings before the report was made, so it is drained
        // in this batch too. The other way round, an exec committed between the two drains
        // would reach the engine after the use it preceded.
        if let Some(guard) = &mut self.guard {
            guard.drain(out);
        }
        for ring in [self.decisions.get_mut(), self.events.get_mut()] {
            while let Some(record) = ring.next() {
                match decode(&record) {
                    Ok(event) => out.push(event),
                    Err(error) => {
                        self.decode_errors += 1;
                        log_decode_error(&error);
                    }
                }
            }
        }
        out[start..].sort_by_key(|event| event.ktime_ns);
    }

    /// Failed writes per kernel map since load, by the kernel and by the daemon.
    pub fn map_failures(&self) -> Result<Vec<MapWriteFailures>, SensorError> {
        let mut by_daemon = self.maps.write_failures();
        if let Some(guard) = &self.guard {
            by_daemon[written::HOLDERS as usize] += guard.counters().holder_writes_failed.load(Ordering::Relaxed);
        }
        (0..written::SLOTS)
            .map(|slot| {
                let per_cpu =
                    self.failures.get(&slot, 0).map_err(|source| SensorError::Map { name: "MAP_FAILURES", source })?;
                let in_kernel: u64 = per_cpu.iter().map(|cpu| cpu.count).sum();
                let last_tgid = per_cpu.iter().map(|cpu| cpu.last_tgid).find(|&tgid| tgid != 0).unwrap_or(0);
                let map = written::NAMES[slot as usize];
                Ok(MapWriteFailures { map, failures: in_kernel + by_daemon[slot as usize], last_tgid })
            })
            .collect()
    }

    /// The kernel's fail-closed flags that are set (`monitor_common::maps::fail_closed`): what it
    /// could not record and now judges conservatively.
    pub fn failed_closed(&self) -> Vec<&'static str> {
        let flag = |slot| self.fail_closed.get(&slot, 0).is_ok_and(|set| set != 0);
        [(fail_closed::MEMBERSHIP, "membership"), (fail_closed::HOLDINGS, "holdings")]
            .into_iter()
            .filter(|&(slot, _)| flag(slot))
            .map(|(_, name)| name)
            .collect()
    }

    /// Clears the kernel's membership fail-closed flag, once the daemon has found every task
    /// process recorded; sets it again if a membership write failed meanwhile (`failures`: the
    /// `TASK_OF` failures counted before that check). Returns whether it stays cleared.
    pub fn reopen_membership(&mut self, failures: u64) -> Result<bool, SensorError> {
        let flag = |flags: &mut Array<MapData, u32>, value| {
            flags.set(fail_closed::MEMBERSHIP, value, 0).map_err(|source| SensorError::Map { name: "FAIL_CLOSED", source })
        };
        flag(&mut self.fail_closed, 0)?;
        let now = self.map_failures()?;
        let task_of = now.iter().find(|map| map.map == written::NAMES[written::TASK_OF as usize]);
        if task_of.map_or(0, |map| map.failures) != failures {
            flag(&mut self.fail_closed, 1)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Events the kernel could not reserve space for, per kind.
    pub fn lost(&self) -> Result<LossCounts, SensorError> {
        let mut counts = LossCounts::default();
        for kind in EventKind::ALL {
            let per_cpu = self
                .lost
                .get(&(kind as u32), 0)
                .map_err(|source| SensorError::Map { name: "LOST", source })?;
            counts.set(kind, per_cpu.iter().sum());
        }
        // The guard's reports the daemon had no room for are lost uses, like the kernel's.
        if let Some(guard) = &self.guard {
            let dropped = guard.counters().reports_dropped.load(Ordering::Relaxed);
            counts.set(EventKind::SecretOpen, counts.get(EventKind::SecretOpen) + dropped);
        }
        Ok(counts)
    }

    /// The maps the daemon writes.
    pub fn maps(&self) -> &KernelMaps {
        &self.maps
    }

    /// Whether the cgroup socket hooks are attached: the egress proxy's redirect and identity
    /// need them.
    pub fn socket_hooks(&self) -> bool {
        self.socket_hooks
    }

    pub fn maps_mut(&mut self) -> &mut KernelMaps {
        &mut self.maps
    }

    /// The tier these sensors were loaded for.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The attached hooks, as `raw_tracepoint/<name>`, `tp_btf/<name>`, `cgroup/<attach point>`, `fanotify/perm`,
    /// `uprobe/<function>` and the security hooks: `lsm/<hook>` on the LSM tier,
    /// `fmod_ret/<function>` on the fmod_ret tier.
    pub fn hooks(&self) -> impl Iterator<Item = &'static str> + '_ {
        let lsm: &[(&str, &str)] = if self.tier == Tier::Lsm { &LSM_HOOKS } else { &[] };
        let fmod_ret: &[(&str, &str, &str)] = if self.tier == Tier::FmodRet { &FMOD_RET_HOOKS } else { &[] };
        let sockets: &[(&str, &str)] = if self.socket_hooks { &SOCKET_HOOKS } else { &[] };
        let sock_ops = self.socket_hooks.then_some(&EGRESS_ESTABLISHED);
        let guard = self.guard.as_ref().map(|_| FILE_GUARD);
        RAW_TRACEPOINTS
            .iter()
            .map(|&(_, _, label)| label)
            .chain(sockets.iter().chain(sock_ops).chain(lsm).map(|&(_, label)| label))
            .chain(fmod_ret.iter().map(|&(_, _, label)| label))
            .chain(self.syscall_hooks.memory_hooks().iter().map(|&(_, label, _)| label))
            .chain(guard)
            .chain(self.tls_hooks.iter().copied())
    }

    /// Detaches the syscall programs and the memory hooks if nothing needs them any more (see
    /// `syscall_hooks`); returns whether each is attached, by its label in metrics.
    pub fn relax_syscall_hooks(&self) -> Vec<(String, bool)> {
        let serves_holders = self.syscall_hooks.serves_holders();
        let idle = || {
            let holds_no_secret = self.maps.holds_no_secret();
            let verdicts_pending = self.maps.verdicts_pending();
            let syscall_idle = !verdicts_pending && (holds_no_secret || !serves_holders);
            (syscall_idle, holds_no_secret)
        };
        if let Err((name, error)) = self.syscall_hooks.relax(idle) {
            tracing::warn!(program = name, %error, "cannot detach a syscall program");
        }
        self.syscall_hooks.states()
    }

    pub fn syscall_hooks_attached(&self) -> bool {
        self.syscall_hooks.attached()
    }

    /// The file guard's counters, when it runs.
    pub fn guard(&self) -> Option<&super::file_guard::GuardCounters> {
        self.guard.as_ref().map(FileGuard::counters)
    }

    /// What these sensors cannot see on this kernel.
    pub fn gaps(&self) -> &[SensorGap] {
        &self.gaps
    }

    /// The lister executables, as resolved at load.
    pub fn listers(&self) -> &[Lister] {
        &self.listers
    }

    /// Records that could not be decoded since load.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }
}

fn take_map<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, MapError>,
) -> Result<T, SensorError> {
    let map = ebpf.take_map(name).ok_or(SensorError::MissingMap(name))?;
    convert(map).map_err(|source| SensorError::Map { name, source })
}

/// Program `name` of the object, as the type it is.
pub(super) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, SensorError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(SensorError::MissingProgram(name))?;
    program.try_into().map_err(|source| SensorError::Attach { name, source })
}

/// A handle of the daemon's own on map `name`, for a thread that reads it while the daemon writes
/// through the first.
fn second_handle<T>(
    ebpf: &Ebpf,
    name: &'static str,
    convert: impl FnOnce(Map) -> Result<T, MapError>,
) -> Result<T, SensorError> {
    let map = ebpf.map(name).ok_or(SensorError::MissingMap(name))?;
    let data = match map {
        Map::HashMap(data) | Map::LruHashMap(data) | Map::Array(data) => data,
        _ => return Err(SensorError::MissingMap(name)),
    };
    let duplicated = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|error| SensorError::Map { name, source: MapError::IoError(error) })?;
    let shared = MapData::from_fd(duplicated).and_then(Map::from_map_data);
    convert(shared.map_err(|source| SensorError::Map { name, source })?).map_err(|source| SensorError::Map { name, source })
}

/// The guard's next report, or never without a guard.
async fn next_report(guard: &mut Option<FileGuard>) -> Option<Event> {
    match guard {
        Some(guard) => guard.next().await,
        None => std::future::pending().await,
    }
}

fn log_decode_error(error: &DecodeError) {
    tracing::warn!(%error, "dropping undecodable ring buffer record");
}

/// What the programs read as globals, set before load.
struct Globals {
    offsets: monitor_common::offsets::KernelOffsets,
    symbols: monitor_common::offsets::KernelSymbols,
    ignored_tgid: u32,
    tier: Tier,
    socket_hooks: bool,
    memory_hooks: bool,
    capture: CaptureLimits,
    listers: Listers,
}

/// Whether the memory hooks run (the kernel has what they read, and the caller wants them), with
/// the kernel functions they tell routes apart by; the reason is a gap when they do not.
fn memory_hooks_fit(
    btf: &Btf,
    offsets: &monitor_common::offsets::KernelOffsets,
    tier: Tier,
    wanted: bool,
    gaps: &mut Vec<SensorGap>,
) -> (bool, monitor_common::offsets::KernelSymbols) {
    let resolved = kallsyms::resolve();
    // Off the syscall path where the kernel has what they read; else the syscall programs
    // see reaches into holders, attached while any process holds a secret.
    let unfit = match &resolved {
        Err(error) => {
            gaps.push(SensorGap { capability: "harvest:proc_open", reason: error.to_string() });
            Some(error.to_string())
        }
        Ok(resolved) => memory_hooks::unfit(btf, offsets, resolved),
    };
    let fit = match (unfit, wanted) {
        _ if tier.has_security_hooks() => false,
        (_, false) => {
            let reason = "refused at load or attach (see the log)".into();
            gaps.push(SensorGap { capability: "harvest:memory_hooks", reason });
            false
        }
        (Some(reason), true) => {
            gaps.push(SensorGap { capability: "harvest:memory_hooks", reason });
            false
        }
        (None, true) => true,
    };
    (fit, resolved.map(|resolved| resolved.symbols).unwrap_or_default())
}

/// Loads the object with its globals and map sizes; no program is loaded in the kernel yet.
fn load_object(globals: &Globals, ring_buffer_bytes: u32, map_sizes: &MapSizes) -> Result<Ebpf, SensorError> {
    let Globals { offsets, symbols, ignored_tgid, tier, socket_hooks, memory_hooks, capture, listers } = globals;
    let security_hooks = u32::from(tier.has_security_hooks());
    let socket_hooks = u32::from(*socket_hooks);
    let memory_hooks = u32::from(*memory_hooks);
    // Unknown, no credwatch is told apart in the kernel: the daemon still is, by its tgid.
    let credwatch_exe = crate::procfs::own_executable()
        .map_or(InodeKey { dev: 0, _pad: 0, ino: 0 }, |(dev, ino)| maps::inode_key(InodeId { dev, ino }));
    let mut loader = EbpfLoader::new();
    loader
        .override_global("OFFSETS", offsets, true)
        .override_global("SYMBOLS", symbols, true)
        .override_global("IGNORED_TGID", ignored_tgid, true)
        .override_global("SECURITY_HOOKS", &security_hooks, true)
        .override_global("SOCKET_HOOKS", &socket_hooks, true)
        .override_global("MEMORY_HOOKS", &memory_hooks, true)
        .override_global("CREDWATCH_EXE", &credwatch_exe, true)
        .override_global("CAPTURE_LIMITS", capture, true)
        .override_global("LISTERS", listers, true)
        .map_max_entries("EVENTS", ring_buffer_bytes);
    for (map, entries) in map_sizes.by_map() {
        loader.map_max_entries(map, entries);
    }
    // One exec scratch record per possible CPU: a program indexes it by its CPU's number.
    let cpus = aya::util::nr_cpus().map_err(|(path, source)| SensorError::Cpus { path, source })?;
    loader.map_max_entries("EXEC_SCRATCH", cpus as u32);
    Ok(loader.load(OBJECT)?)
}

/// The LSM tier's programs, or the same as fmod_ret (which aya does not own: returned).
fn attach_security_hooks(ebpf: &mut Ebpf, tier: Tier) -> Result<Vec<fmod_ret::Attached>, SensorError> {
    let mut fmod_ret = Vec::new();
    if !tier.has_security_hooks() {
        return Ok(fmod_ret);
    }
    let btf = aya::Btf::from_sys_fs().map_err(SensorError::LsmBtf)?;
    if tier == Tier::Lsm {
        for (name, _) in LSM_HOOKS {
            let program: &mut Lsm = program_mut(ebpf, name)?;
            program.load(name, &btf).map_err(|source| SensorError::Attach { name, source })?;
            program.attach().map_err(|source| SensorError::Attach { name, source })?;
        }
    } else {
        let linked = Linked::new(OBJECT, ebpf)?;
        for (program, function, _) in FMOD_RET_HOOKS {
            fmod_ret.push(linked.attach(program, function, &btf)?);
        }
    }
    Ok(fmod_ret)
}

/// Loads the raw tracepoint programs, attaching those that run always, and loads the memory
/// hooks; `SyscallHooks` attaches the rest when they are needed.
fn load_tracepoints(ebpf: &mut Ebpf, memory_hooks: bool) -> Result<(), SensorError> {
    for (name, tracepoint, _) in RAW_TRACEPOINTS {
        let program: &mut RawTracePoint = program_mut(ebpf, name)?;
        program.load().map_err(|source| SensorError::Attach { name, source })?;
        if !syscall_hooks::PROGRAMS.contains(&name) {
            program.attach(tracepoint).map_err(|source| SensorError::Attach { name, source })?;
        }
    }
    if memory_hooks {
        let btf = aya::Btf::from_sys_fs().map_err(|error| SensorError::MemoryHooks { name: "btf", source: error.into() })?;
        for (name, _, _) in memory_hooks::PROGRAMS {
            let program: &mut BtfTracePoint = program_mut(ebpf, name)?;
            let refused = |source: ProgramError| SensorError::MemoryHooks { name, source: source.into() };
            program.load(name, &btf).map_err(refused)?;
        }
    }
    Ok(())
}

/// Attaches the cgroup socket-address programs and the egress proxy's socket-operations program
/// at the cgroup v2 `root`.
fn attach_socket_hooks(ebpf: &mut Ebpf, root: &std::path::Path) -> Result<(), SensorError> {
    let refused = |source: Box<dyn std::error::Error + Send + Sync>| SensorError::SocketHooks { path: root.to_owned(), source };
    let cgroup = std::fs::File::open(root).map_err(|error| refused(error.into()))?;
    let sock_ops: &mut SockOps = program_mut(ebpf, EGRESS_ESTABLISHED.0)?;
    sock_ops.load().map_err(|error| refused(error.into()))?;
    sock_ops.attach(&cgroup, CgroupAttachMode::Single).map_err(|error| refused(error.into()))?;
    for &(name, _) in &SOCKET_HOOKS {
        let program: &mut CgroupSockAddr = program_mut(ebpf, name)?;
        // Networking programs: loading them needs CAP_NET_ADMIN (or CAP_SYS_ADMIN) too.
        program.load().map_err(|error| refused(error.into()))?;
        // Through a BPF link (Linux 5.7), which sits beside the host's own programs there; the
        // kernel refuses a link with the multi flag, which links imply.
        program.attach(&cgroup, CgroupAttachMode::Single).map_err(|error| refused(error.into()))?;
    }
    Ok(())
}

/// The file guard's own handles on the maps it decides from (second fds: the daemon keeps its
/// own).
fn guard_maps(ebpf: &Ebpf) -> Result<GuardMaps, SensorError> {
    Ok(GuardMaps {
        watched: second_handle(ebpf, "WATCHED", HashMap::try_from)?,
        task_of: second_handle(ebpf, "TASK_OF", HashMap::try_from)?,
        finished_tasks: second_handle(ebpf, "FINISHED_TASKS", HashMap::try_from)?,
        grantees: second_handle(ebpf, "GRANTEES", HashMap::try_from)?,
        holders: second_handle(ebpf, "HOLDERS", HashMap::try_from)?,
        enforce: second_handle(ebpf, "ENFORCE", Array::try_from)?,
        fail_closed: second_handle(ebpf, "FAIL_CLOSED", Array::try_from)?,
    })
}

/// The maps the daemon writes, taken out of the object.
fn kernel_maps(ebpf: &mut Ebpf) -> Result<KernelMaps, SensorError> {
    Ok(KernelMaps {
        watched: take_map(ebpf, "WATCHED", HashMap::try_from)?,
        grantees: take_map(ebpf, "GRANTEES", HashMap::try_from)?,
        finished_tasks: take_map(ebpf, "FINISHED_TASKS", HashMap::try_from)?,
        task_of: take_map(ebpf, "TASK_OF", HashMap::try_from)?,
        holders: take_map(ebpf, "HOLDERS", HashMap::try_from)?,
        verdicts: take_map(ebpf, "VERDICTS", HashMap::try_from)?,
        verdict_count: take_map(ebpf, "VERDICT_COUNT", Array::try_from)?,
        pending: Default::default(),
        enforce: take_map(ebpf, "ENFORCE", Array::try_from)?,
        destinations: take_map(ebpf, "ALLOWED_DESTINATIONS", LpmTrie::try_from)?,
        destination_keys: Default::default(),
        failures: Default::default(),
        marks: None,
        syscall_hooks: None,
        egress: super::egress::EgressMaps {
            proxy: take_map(ebpf, "EGRESS_PROXY", Array::try_from)?,
            tasks: take_map(ebpf, "EGRESS_TASKS", HashMap::try_from)?,
            ports: take_map(ebpf, "EGRESS_PORTS", Array::try_from)?,
            peers: take_map(ebpf, "EGRESS_PEERS", HashMap::try_from)?,
        },
    })
}

/// Hands the programs to `SyscallHooks`, which attaches the on-demand ones when something needs
/// them, and starts the file guard (its failure is a stated gap); pins the syscall programs where
/// nothing else does their work.
fn on_demand(
    ebpf: Ebpf,
    tier: Tier,
    memory_hooks: bool,
    socket_hooks: bool,
    guard_maps: Option<GuardMaps>,
    ignored_tgid: u32,
    gaps: &mut Vec<SensorGap>,
) -> Result<(SyscallHooks, Option<FileGuard>, Option<super::file_guard::Marks>), SensorError> {
    let syscall_programs: &[&str] =
        if tier.has_security_hooks() { &syscall_hooks::BESIDE_SECURITY_HOOKS } else { &syscall_hooks::PROGRAMS };
    // On the base tier, holders need them for their connects without the cgroup hooks and for
    // reaches into them without the memory hooks.
    let holders_watched_elsewhere = memory_hooks && socket_hooks;
    let serves_holders = !(tier.has_security_hooks() || holders_watched_elsewhere);
    let memory_programs: &[(&str, &str, usize)] = if memory_hooks { &memory_hooks::PROGRAMS } else { &[] };
    let syscall_hooks = SyscallHooks::new(ebpf, syscall_programs, serves_holders, memory_programs);
    let guard = guard_maps.and_then(|maps| match FileGuard::start(maps, ignored_tgid, syscall_hooks.clone()) {
        Ok(started) => Some(started),
        Err(error) => {
            gaps.push(SensorGap { capability: "files:fanotify_guard", reason: error.to_string() });
            None
        }
    });
    let (guard, marks) = guard.map_or((None, None), |(guard, marks)| (Some(guard), Some(marks)));
    // Attached for good: on the base tier without the guard, where they watch secret files;
    // beside the security hooks without the `sendmsg` hooks, where `sys_enter` sees holders'
    // datagrams.
    let pinned = if tier.has_security_hooks() { !socket_hooks } else { guard.is_none() };
    if pinned {
        syscall_hooks.pin().map_err(|(name, source)| SensorError::Attach { name, source })?;
    }
    Ok((syscall_hooks, guard, marks))
}
