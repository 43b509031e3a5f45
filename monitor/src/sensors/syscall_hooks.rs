//! The raw `sys_enter`/`sys_exit` programs, attached only while there is something for them to
//! protect, where the file guard runs or the security hooks are attached.
//!
//! They put every syscall of every process on the kernel's slow path. Once the file guard decides
//! secret files, the cgroup hooks see connects and the memory hooks (`harvest.rs`) see reaches
//! into holders, what they still do matters only for a pending kill verdict or a watched inode the
//! guard could not mark: they are attached before each verdict and detached on the daemon's tick
//! once none is pending. Without the memory hooks or the cgroup hooks, secret holders need them
//! too (a harvest of a holder's environment or memory by `/proc`, ptrace or `process_vm_readv`,
//! its connects): they are then also attached before the first holder is recorded (by the guard
//! before it lets the open through, by the daemon before its own write, both through
//! [`SyscallHooks::before_holding`]) and detached once no process holds a secret. A holder's
//! children inherit its holding in the kernel, so no holder appears while they are detached.
//! Without the guard, on the base tier, they stay attached.
//!
//! On the LSM and fmod_ret tiers the security hooks report every open themselves, so `sys_exit`
//! is never attached there; `sys_enter` is kept for pending kill verdicts (attached before each,
//! as here) and, where cgroup v2 is not mounted for the `sendmsg` hooks, for holders' datagrams
//! (attached for good then: the hooks record holders in the kernel, not through the daemon).

use std::sync::{Arc, Mutex, MutexGuard};

use aya::{
    programs::{raw_trace_point::RawTracePointLinkId, ProgramError, RawTracePoint},
    Ebpf,
};

/// The programs, named after their tracepoints.
pub const PROGRAMS: [&str; 2] = ["sys_enter", "sys_exit"];
/// Those the security hooks leave something to.
pub const BESIDE_SECURITY_HOOKS: [&str; 1] = ["sys_enter"];

/// Shared by the daemon's maps and the file guard's thread; one lock orders every attach and
/// detach against every first holding.
#[derive(Clone)]
pub struct SyscallHooks(Arc<Mutex<Hooks>>);

struct Hooks {
    /// Owns every program and link of the sensors.
    ebpf: Ebpf,
    /// Those of [`PROGRAMS`] this tier attaches.
    programs: &'static [&'static str],
    /// Whether secret holders need them (see the module doc).
    serves_holders: bool,
    /// The programs' links while attached.
    links: Vec<(&'static str, RawTracePointLinkId)>,
    /// Never detached: no guard, no socket hooks beside the security hooks, or an inode the guard
    /// could not mark.
    pinned: bool,
}

impl SyscallHooks {
    /// Takes the loaded sensors, the syscall programs detached; `programs` are those to attach.
    pub(super) fn new(ebpf: Ebpf, programs: &'static [&'static str], serves_holders: bool) -> Self {
        Self(Arc::new(Mutex::new(Hooks { ebpf, programs, serves_holders, links: Vec::new(), pinned: false })))
    }

    /// Whether secret holders need the programs, or only pending verdicts do.
    pub fn serves_holders(&self) -> bool {
        self.lock().serves_holders
    }

    fn lock(&self) -> MutexGuard<'_, Hooks> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attaches the programs if they are not: call before recording a holder or a verdict.
    pub fn ensure(&self) -> Result<(), (&'static str, ProgramError)> {
        let mut hooks = self.lock();
        for &name in hooks.programs {
            if hooks.links.iter().any(|&(attached, _)| attached == name) {
                continue;
            }
            let link = program(&mut hooks.ebpf, name)?.attach(name).map_err(|error| (name, error))?;
            hooks.links.push((name, link));
        }
        Ok(())
    }

    /// Attaches the programs before a holding is recorded, if holders need them.
    pub fn before_holding(&self) -> Result<(), (&'static str, ProgramError)> {
        if self.serves_holders() {
            self.ensure()
        } else {
            Ok(())
        }
    }

    /// Keeps the programs attached for good (an inode only they watch).
    pub fn pin(&self) -> Result<(), (&'static str, ProgramError)> {
        self.ensure()?;
        self.lock().pinned = true;
        Ok(())
    }

    /// Detaches the programs if they may be and `idle` (asked under the lock, so no holding is
    /// recorded meanwhile) says nothing needs them.
    pub fn relax(&self, idle: impl FnOnce() -> bool) -> Result<(), (&'static str, ProgramError)> {
        let mut hooks = self.lock();
        if hooks.links.is_empty() || hooks.pinned || !idle() {
            return Ok(());
        }
        let Hooks { ebpf, links, .. } = &mut *hooks;
        for (name, link) in links.drain(..) {
            program(ebpf, name)?.detach(link).map_err(|error| (name, error))?;
        }
        Ok(())
    }

    /// Each of [`PROGRAMS`], and whether it is attached.
    pub fn states(&self) -> [(&'static str, bool); PROGRAMS.len()] {
        let hooks = self.lock();
        PROGRAMS.map(|name| (name, hooks.links.iter().any(|&(attached, _)| attached == name)))
    }

    pub fn attached(&self) -> bool {
        let hooks = self.lock();
        hooks.links.len() == hooks.programs.len()
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut RawTracePoint, (&'static str, ProgramError)> {
    ebpf.program_mut(name)
        .ok_or((name, ProgramError::NotLoaded))?
        .try_into()
        .map_err(|error| (name, error))
}
