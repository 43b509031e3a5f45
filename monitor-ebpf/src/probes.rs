//! Feature probes for `credwatch doctor`: one tiny program per hook kind.
//!
//! Doctor loads this object once per probe and loads exactly one program from it, so the single
//! counter in [`HITS`] belongs to that program. Every program counts only the calls made by
//! `TARGET_TGID`, which doctor sets to its own tgid (or to its victim child's, for the signal probe).
//!
//! The `floor_*` programs are not probes: the hidden `credwatch bench-floor` holds them attached
//! while `cargo xtask bench` measures what an empty program on a hook costs.

#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal},
    macros::{btf_tracepoint, fentry, kprobe, lsm, map, raw_tracepoint, tracepoint, uprobe},
    maps::Array,
    programs::{
        BtfTracePointContext, FEntryContext, LsmContext, ProbeContext, RawTracePointContext,
        TracePointContext,
    },
};

/// The tgid whose calls count; set by the loader.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

/// Number of times the loaded program ran in `TARGET_TGID`.
#[map]
static HITS: Array<u64> = Array::with_max_entries(1, 0);

const SIGKILL: u32 = 9;

fn is_target() -> bool {
    // The upper half of pid_tgid is the tgid, i.e. the userspace pid.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Volatile: otherwise the compiler folds the `0` the loader overwrites.
    tgid == unsafe { core::ptr::read_volatile(&TARGET_TGID) }
}

fn count_hit() {
    if let Some(hits) = HITS.get_ptr_mut(0) {
        // Not atomic (the BPF target has no atomic read-modify-write in core): concurrent hits
        // may be lost, which only lowers a count doctor compares with zero.
        unsafe { *hits += 1 };
    }
}

fn count_if_target() {
    if is_target() {
        count_hit();
    }
}

/// Classic tracepoint on the `getppid` syscall entry. Linux 4.7, `CONFIG_FTRACE_SYSCALLS`.
#[tracepoint(category = "syscalls", name = "sys_enter_getppid")]
pub fn probe_tracepoint(_ctx: TracePointContext) {
    count_if_target();
}

/// Raw tracepoint on every syscall entry. Linux 4.17.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_raw_tracepoint(_ctx: RawTracePointContext) {
    count_if_target();
}

/// BTF-typed raw tracepoint on every syscall entry. Linux 5.5, `CONFIG_DEBUG_INFO_BTF`.
#[btf_tracepoint(function = "sys_enter")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) {
    count_if_target();
}

/// fentry trampoline on `security_file_open`. Linux 5.5, `CONFIG_DEBUG_INFO_BTF`,
/// `CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS`.
#[fentry(function = "security_file_open")]
pub fn probe_fentry(_ctx: FEntryContext) {
    count_if_target();
}

/// BPF LSM program on `file_open`; it allows every open. Linux 5.7, `CONFIG_BPF_LSM`, and `bpf`
/// in the active LSM list (`lsm=` boot parameter).
#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    count_if_target();
    0
}

/// fmod_ret on `security_file_open`; it allows every open (0 leaves the function to run). Linux
/// 5.7, `CONFIG_DEBUG_INFO_BTF`, BPF trampolines. aya parses no `fmod_ret` section, so it is named
/// as an fentry program and loaded as fmod_ret by `monitor/src/sensors/fmod_ret.rs`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fentry/security_file_open")]
pub fn probe_fmod_ret(_ctx: *mut core::ffi::c_void) -> i32 {
    count_if_target();
    0
}

/// uprobe; doctor attaches it to a function of its own binary. Linux 4.17 for the perf-event
/// attach, `CONFIG_UPROBE_EVENTS`.
#[uprobe]
pub fn probe_uprobe(_ctx: ProbeContext) {
    count_if_target();
}

/// kprobe on `security_file_open`. Linux 4.17 for the perf-event attach, `CONFIG_KPROBE_EVENTS`.
#[kprobe(function = "security_file_open")]
pub fn probe_kprobe(_ctx: ProbeContext) {
    count_if_target();
}

/// Kills `TARGET_TGID` with SIGKILL at its next syscall. Linux 5.3 for `bpf_send_signal`; the
/// object's licence must be GPL-compatible.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_send_signal(_ctx: RawTracePointContext) {
    if is_target() {
        count_hit();
        // The return value is not checked here: doctor observes the signal from outside.
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

/// The benchmark's floor: empty programs on the sensors' own hooks, so that `cargo xtask bench`
/// tells what attaching to `sys_enter` and `sys_exit` costs every syscall from what the sensors
/// do there. Linux 4.17.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_sys_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_sys_exit(_ctx: RawTracePointContext) -> i32 {
    0
}

/// An empty per-syscall tracepoint, the hook tools such as bpftrace use, for comparison with the
/// floor. Linux 4.7, `CONFIG_FTRACE_SYSCALLS`.
#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn floor_sys_exit_openat(_ctx: TracePointContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
