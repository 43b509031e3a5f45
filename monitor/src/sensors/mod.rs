//! Kernel sensors: load and attach the eBPF programs, decode what they report.

pub mod btf;
pub mod cgroup;
pub mod decode;
pub mod destinations;
pub mod egress;
pub mod file_guard;
pub mod fmod_ret;
pub mod kallsyms;
pub mod known_gaps;
pub mod listers;
mod loader;
pub mod loss;
pub mod maps;
pub mod memory_hooks;
mod named_path;
pub mod offsets;
pub mod phase;
pub mod sizes;
pub mod syscall_hooks;
pub mod tier;
pub mod tls;

pub use loader::{MapWriteFailures, SensorError, SensorGap, SensorOptions, Sensors};
