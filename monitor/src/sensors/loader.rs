//! Loading, attaching and reading the tracepoint-tier sensors.

use aya::{
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf},
    programs::{Lsm, ProgramError, RawTracePoint},
    BtfError as AyaBtfError, Ebpf, EbpfError, EbpfLoader,
};
use monitor_common::event::EventKind;
use tokio::io::unix::AsyncFd;

use super::{
    btf::{Btf, BtfError},
    decode::{decode, DecodeError},
    loss::LossCounts,
    kallsyms,
    maps::KernelMaps,
    offsets::{resolve, OffsetError},
};
use crate::{
    doctor::Tier,
    event::Event,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/credwatch-sensors"));

/// Raw tracepoints of the tracepoint tier: each program is named after its tracepoint; the
/// second name labels it in metrics.
const RAW_TRACEPOINTS: [(&str, &str); 5] = [
    ("sched_process_exec", "raw_tracepoint/sched_process_exec"),
    ("sched_process_fork", "raw_tracepoint/sched_process_fork"),
    ("sched_process_exit", "raw_tracepoint/sched_process_exit"),
    ("sys_enter", "raw_tracepoint/sys_enter"),
    ("sys_exit", "raw_tracepoint/sys_exit"),
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

/// How long events may gather after the ring buffer signals, before the batch is drained.
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("cannot read the kernel's BTF")]
    Btf(#[from] BtfError),
    #[error("cannot resolve kernel struct offsets")]
    Offsets(#[from] OffsetError),
    #[error("cannot read the kernel's BTF, which LSM programs are loaded against")]
    LsmBtf(#[source] AyaBtfError),
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
    #[error("cannot poll the ring buffer")]
    Poll(#[source] std::io::Error),
}

/// Tunables of the kernel side.
#[derive(Clone, Copy, Debug)]
pub struct SensorOptions {
    /// Ring buffer size in bytes: a power-of-two multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// A process whose opens are not reported: the daemon itself, which reads every new
    /// process's environment and holds O_PATH handles on secret files. On the LSM tier, only
    /// root outside every task may signal or ptrace it.
    pub ignored_tgid: Option<u32>,
    /// Which hooks to attach: the tracepoint tier's, or those plus the LSM hooks. The caller
    /// knows the tier from `doctor::inspect()`.
    pub tier: Tier,
}

impl Default for SensorOptions {
    fn default() -> Self {
        Self { ring_buffer_bytes: 4 << 20, ignored_tgid: None, tier: Tier::Tracepoint }
    }
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
    maps: KernelMaps,
    gaps: Vec<SensorGap>,
    lost: PerCpuArray<MapData, u64>,
    /// Records the decoder rejected; a layout mismatch shows up here, not as silence.
    decode_errors: u64,
    tier: Tier,
    /// Owns the programs and their links; declared last so the maps above are dropped first.
    _ebpf: Ebpf,
}

impl Sensors {
    /// Resolves kernel offsets from BTF, loads the programs and attaches them.
    ///
    /// Requires Linux 5.8+ with BTF at /sys/kernel/btf/vmlinux and root (CAP_BPF + CAP_PERFMON).
    /// Must be called inside a tokio runtime (the ring buffer is polled through epoll).
    pub fn load(options: SensorOptions) -> Result<Self, SensorError> {
        let offsets = resolve(&Btf::from_sys_fs()?)?;
        let mut gaps = Vec::new();
        let symbols = kallsyms::resolve().unwrap_or_else(|error| {
            gaps.push(SensorGap { capability: "harvest:proc_open", reason: error.to_string() });
            Default::default()
        });
        let SensorOptions { ring_buffer_bytes, ignored_tgid, tier } = options;
        let ignored_tgid = ignored_tgid.unwrap_or(0);
        let lsm_tier = u32::from(tier == Tier::Lsm);
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("SYMBOLS", &symbols, true)
            .override_global("IGNORED_TGID", &ignored_tgid, true)
            .override_global("LSM_TIER", &lsm_tier, true)
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .load(OBJECT)?;
        // The LSM hooks first: the tracepoint programs already leave connects and ptrace to them.
        if tier == Tier::Lsm {
            let btf = aya::Btf::from_sys_fs().map_err(SensorError::LsmBtf)?;
            for (name, _) in LSM_HOOKS {
                let program: &mut Lsm = ebpf
                    .program_mut(name)
                    .ok_or(SensorError::MissingProgram(name))?
                    .try_into()
                    .map_err(|source| SensorError::Attach { name, source })?;
                program.load(name, &btf).map_err(|source| SensorError::Attach { name, source })?;
                program.attach().map_err(|source| SensorError::Attach { name, source })?;
            }
        }
        for (name, _) in RAW_TRACEPOINTS {
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(SensorError::MissingProgram(name))?
                .try_into()
                .map_err(|source| SensorError::Attach { name, source })?;
            program.load().map_err(|source| SensorError::Attach { name, source })?;
            program.attach(name).map_err(|source| SensorError::Attach { name, source })?;
        }
        let events = take_map(&mut ebpf, "EVENTS", RingBuf::try_from)?;
        let lost = take_map(&mut ebpf, "LOST", PerCpuArray::try_from)?;
        let maps = KernelMaps {
            watched: take_map(&mut ebpf, "WATCHED", HashMap::try_from)?,
            grantees: take_map(&mut ebpf, "GRANTEES", HashMap::try_from)?,
            finished_tasks: take_map(&mut ebpf, "FINISHED_TASKS", HashMap::try_from)?,
            task_of: take_map(&mut ebpf, "TASK_OF", HashMap::try_from)?,
            holders: take_map(&mut ebpf, "HOLDERS", HashMap::try_from)?,
            verdicts: take_map(&mut ebpf, "VERDICTS", HashMap::try_from)?,
            verdict_count: take_map(&mut ebpf, "VERDICT_COUNT", Array::try_from)?,
            pending: Default::default(),
            enforce: take_map(&mut ebpf, "ENFORCE", Array::try_from)?,
            destinations: take_map(&mut ebpf, "ALLOWED_DESTINATIONS", LpmTrie::try_from)?,
            destination_keys: Default::default(),
        };
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd owns the ring buffer.
        let events = unsafe { AsyncFd::register(events) }
            .map_err(|error| SensorError::Poll(error.into()))?;
        Ok(Self { events, maps, gaps, lost, decode_errors: 0, tier, _ebpf: ebpf })
    }

    /// Waits until the kernel has submitted events, then appends every available one to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> Result<(), SensorError> {
        let mut guard = self.events.readable_mut().await.map_err(SensorError::Poll)?;
        // Let events gather before draining: the kernel wakes the reader only once it has caught
        // up, so producers pay the wake-up once per batch instead of once per event (measured:
        // tracked connects 1.55x -> 1.00x, storm loss 1.4 % -> 0, idle p99 0.1 -> 2.1 ms).
        tokio::time::sleep(BATCH_LINGER).await;
        let ring = guard.get_inner_mut();
        while let Some(record) = ring.next() {
            match decode(&record) {
                Ok(event) => out.push(event),
                Err(error) => {
                    self.decode_errors += 1;
                    log_decode_error(&error);
                }
            }
        }
        guard.clear_ready();
        Ok(())
    }

    /// Appends every event already in the ring buffer to `out`, without waiting: what the kernel
    /// submitted before a control input must be applied before it.
    pub fn drain_now(&mut self, out: &mut Vec<Event>) {
        let ring = self.events.get_mut();
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
        Ok(counts)
    }

    /// The maps the daemon writes.
    pub fn maps(&self) -> &KernelMaps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut KernelMaps {
        &mut self.maps
    }

    /// The tier these sensors were loaded for.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The attached hooks, as `raw_tracepoint/<name>` and, on the LSM tier, `lsm/<hook>`.
    pub fn hooks(&self) -> impl Iterator<Item = &'static str> {
        let lsm: &[(&str, &str)] = if self.tier == Tier::Lsm { &LSM_HOOKS } else { &[] };
        RAW_TRACEPOINTS.iter().chain(lsm).map(|&(_, label)| label)
    }

    /// What these sensors cannot see on this kernel.
    pub fn gaps(&self) -> &[SensorGap] {
        &self.gaps
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

fn log_decode_error(error: &DecodeError) {
    tracing::warn!(%error, "dropping undecodable ring buffer record");
}
