//! The raw `sys_enter`/`sys_exit` programs, attached only while there is something for them to
//! protect, where the file guard runs.
//!
//! They put every syscall of every process on the kernel's slow path. Once the file guard decides
//! secret files and the cgroup hooks see connects, what they still do matters only for a secret
//! holder (a harvest of its environment or memory by `/proc`, ptrace or `process_vm_readv`), for a
//! pending kill verdict, or for a watched inode the guard could not mark. So they are attached
//! before the first holder is recorded (by the guard before it lets the open through, by the
//! daemon before its own write, both through [`SyscallHooks::ensure`]) and detached on the daemon's
//! tick once no process holds a secret, no verdict is pending and every watched inode is guarded.
//! A holder's children inherit its holding in the kernel, so no holder appears while they are
//! detached. On the LSM and fmod_ret tiers, or without the guard, they stay attached.

use std::sync::{Arc, Mutex, MutexGuard};

use aya::{
    programs::{raw_trace_point::RawTracePointLinkId, ProgramError, RawTracePoint},
    Ebpf,
};

/// The programs, named after their tracepoints.
pub const PROGRAMS: [&str; 2] = ["sys_enter", "sys_exit"];

/// Shared by the daemon's maps and the file guard's thread; one lock orders every attach and
/// detach against every first holding.
#[derive(Clone)]
pub struct SyscallHooks(Arc<Mutex<Hooks>>);

struct Hooks {
    /// Owns every program and link of the sensors.
    ebpf: Ebpf,
    /// The programs' links while attached.
    links: Vec<(&'static str, RawTracePointLinkId)>,
    /// Never detached: no guard, the security hooks, or an inode the guard could not mark.
    pinned: bool,
}

impl SyscallHooks {
    /// Takes the loaded sensors, the syscall programs detached.
    pub(super) fn new(ebpf: Ebpf) -> Self {
        Self(Arc::new(Mutex::new(Hooks { ebpf, links: Vec::new(), pinned: false })))
    }

    fn lock(&self) -> MutexGuard<'_, Hooks> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attaches the programs if they are not: call before recording a holder or a verdict.
    pub fn ensure(&self) -> Result<(), (&'static str, ProgramError)> {
        let mut hooks = self.lock();
        for name in PROGRAMS {
            if hooks.links.iter().any(|&(attached, _)| attached == name) {
                continue;
            }
            let link = program(&mut hooks.ebpf, name)?.attach(name).map_err(|error| (name, error))?;
            hooks.links.push((name, link));
        }
        Ok(())
    }

    /// Keeps the programs attached for good (an inode only they watch).
    pub fn pin(&self) -> Result<(), (&'static str, ProgramError)> {
        self.ensure()?;
        self.lock().pinned = true;
        Ok(())
    }

    /// Detaches the programs if they may be and `idle` (asked under the lock, so no holding is
    /// recorded meanwhile) says nothing needs them. Returns whether they are attached after.
    pub fn relax(&self, idle: impl FnOnce() -> bool) -> Result<bool, (&'static str, ProgramError)> {
        let mut hooks = self.lock();
        if hooks.links.is_empty() || hooks.pinned || !idle() {
            return Ok(!hooks.links.is_empty());
        }
        let Hooks { ebpf, links, .. } = &mut *hooks;
        for (name, link) in links.drain(..) {
            program(ebpf, name)?.detach(link).map_err(|error| (name, error))?;
        }
        Ok(false)
    }

    pub fn attached(&self) -> bool {
        self.lock().links.len() == PROGRAMS.len()
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut RawTracePoint, (&'static str, ProgramError)> {
    ebpf.program_mut(name)
        .ok_or((name, ProgramError::NotLoaded))?
        .try_into()
        .map_err(|error| (name, error))
}
