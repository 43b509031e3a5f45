//! Types shared by the eBPF programs (`monitor-ebpf`) and the daemon (`monitor`).
//!
//! Every type here is `#[repr(C)]` and is read by both sides, so a layout lives in exactly one
//! place. Kernel-only helpers sit behind `cfg(target_arch = "bpf")`, userspace decoding behind the
//! `user` feature.
#![no_std]

pub mod egress;
pub mod event;
pub mod listers;
pub mod loss;
pub mod maps;
pub mod offsets;
pub mod syscalls;
