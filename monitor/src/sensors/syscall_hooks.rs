//! The raw `sys_enter`/`sys_exit` programs and the memory hooks, attached only while there is
//! something for them to protect, where the file guard runs or the security hooks are attached.
//!
//! The memory hooks (`harvest.rs`) matter only for a secret holder: they are attached before the
//! first holding is recorded and detached once no process holds a secret (where the syscall
//! programs are pinned, with them: the kernel then records holdings itself).
//!
//! They put every syscall of every process on the kernel's slow path. Once the file guard decides
//! secret files, the cgroup hooks see connects and the memory hooks (`harvest.rs`) see reaches
//! into holders, what they still do matters only for a pending kill verdict or a watched inode the
//! guard could not mark: they are attached before each verdict and detached on the daemon's tick
//! once none is pending. Without the memory hooks or the cgroup hooks, secret holders need them
//! too (a harvest of a holder's environment or memory by `/proc`, ptrace or `process_vm_readv`,
//! its connects): they are then also attached before the first holder is recorded (by the guard
//! before it lets the open through, by the daemon before its own write, both through
//! [`SyscallHooks::record_holding`]) and detached once no process holds a secret. A holder's
//! children inherit its holding in the kernel, so no holder appears while they are detached.
//! Without the guard, on the base tier, they stay attached.
//!
//! On the LSM and fmod_ret tiers the security hooks report every open themselves, so `sys_exit`
//! is never attached there; `sys_enter` is kept for pending kill verdicts (attached before each,
//! as here) and, where cgroup v2 is not mounted for the `sendmsg` hooks, for holders' datagrams
//! (attached for good then: the hooks record holders in the kernel, not through the daemon).

use std::sync::{Arc, Mutex, MutexGuard};

use aya::{
    programs::{
        raw_trace_point::RawTracePointLinkId, tp_btf::BtfTracePointLinkId, BtfTracePoint, ProgramError,
        RawTracePoint,
    },
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
    /// The memory hooks loaded (none where they cannot run; `memory_hooks::PROGRAMS`), with their
    /// links while attached.
    memory: &'static [(&'static str, &'static str, usize)],
    memory_links: Vec<(&'static str, BtfTracePointLinkId)>,
    /// Never detached: no guard, no socket hooks beside the security hooks, or an inode the guard
    /// could not mark.
    pinned: bool,
}

impl SyscallHooks {
    /// Takes the loaded sensors, every program here detached; `programs` are the syscall programs
    /// to attach, `memory` the memory hooks loaded.
    pub(super) fn new(
        ebpf: Ebpf,
        programs: &'static [&'static str],
        serves_holders: bool,
        memory: &'static [(&'static str, &'static str, usize)],
    ) -> Self {
        Self(Arc::new(Mutex::new(Hooks {
            ebpf,
            programs,
            serves_holders,
            links: Vec::new(),
            memory,
            memory_links: Vec::new(),
            pinned: false,
        })))
    }

    /// Whether secret holders need the syscall programs, or only pending verdicts do.
    pub fn serves_holders(&self) -> bool {
        self.lock().serves_holders
    }

    fn lock(&self) -> MutexGuard<'_, Hooks> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attaches the syscall programs if they are not: call before recording a verdict.
    pub fn ensure(&self) -> Result<(), (&'static str, ProgramError)> {
        self.lock().attach_syscall()
    }

    /// Records a holding with `record`, after attaching what sees reaches into holders (the
    /// memory hooks, and the syscall programs where holders need them), under the lock the tick
    /// detaches under: they cannot be detached between the two. Returns what `record` did, and
    /// whether attaching worked (a failure leaves the holding recorded all the same).
    pub fn record_holding<T>(&self, record: impl FnOnce() -> T) -> (T, Result<(), (&'static str, ProgramError)>) {
        let mut hooks = self.lock();
        let attached = if hooks.serves_holders { hooks.attach_syscall() } else { Ok(()) };
        let attached = attached.and_then(|()| hooks.attach_memory());
        (record(), attached)
    }

    /// Keeps every program here attached for good (an inode only the syscall programs watch,
    /// whose holders the kernel records itself).
    pub fn pin(&self) -> Result<(), (&'static str, ProgramError)> {
        let mut hooks = self.lock();
        hooks.attach_syscall()?;
        hooks.attach_memory()?;
        hooks.pinned = true;
        Ok(())
    }

    /// Detaches what nothing needs any more, unless pinned; `idle` (asked under the lock, so no
    /// holding is recorded meanwhile) says whether the syscall programs and the memory hooks are
    /// idle.
    pub fn relax(&self, idle: impl FnOnce() -> (bool, bool)) -> Result<(), (&'static str, ProgramError)> {
        let mut hooks = self.lock();
        if hooks.pinned || (hooks.links.is_empty() && hooks.memory_links.is_empty()) {
            return Ok(());
        }
        let (syscall_idle, memory_idle) = idle();
        let Hooks { ebpf, links, memory_links, .. } = &mut *hooks;
        if syscall_idle {
            for (name, link) in links.drain(..) {
                program::<RawTracePoint>(ebpf, name)?.detach(link).map_err(|error| (name, error))?;
            }
        }
        if memory_idle {
            for (name, link) in memory_links.drain(..) {
                program::<BtfTracePoint>(ebpf, name)?.detach(link).map_err(|error| (name, error))?;
            }
        }
        Ok(())
    }

    /// Each of [`PROGRAMS`] and of the memory hooks, labelled as in metrics, and whether it is
    /// attached.
    pub fn states(&self) -> Vec<(String, bool)> {
        let hooks = self.lock();
        let syscall = PROGRAMS
            .iter()
            .map(|&name| (format!("raw_tracepoint/{name}"), hooks.links.iter().any(|&(attached, _)| attached == name)));
        let memory = hooks
            .memory
            .iter()
            .map(|&(name, label, _)| (label.to_owned(), hooks.memory_links.iter().any(|&(attached, _)| attached == name)));
        syscall.chain(memory).collect()
    }

    /// The memory hooks loaded, as `memory_hooks::PROGRAMS`.
    pub fn memory_hooks(&self) -> &'static [(&'static str, &'static str, usize)] {
        self.lock().memory
    }

    /// Whether the syscall programs are attached.
    pub fn attached(&self) -> bool {
        let hooks = self.lock();
        hooks.links.len() == hooks.programs.len()
    }
}

impl Hooks {
    fn attach_syscall(&mut self) -> Result<(), (&'static str, ProgramError)> {
        for &name in self.programs {
            if self.links.iter().any(|&(attached, _)| attached == name) {
                continue;
            }
            let link = program::<RawTracePoint>(&mut self.ebpf, name)?.attach(name).map_err(|error| (name, error))?;
            self.links.push((name, link));
        }
        Ok(())
    }

    fn attach_memory(&mut self) -> Result<(), (&'static str, ProgramError)> {
        for &(name, _, _) in self.memory {
            if self.memory_links.iter().any(|&(attached, _)| attached == name) {
                continue;
            }
            let link = program::<BtfTracePoint>(&mut self.ebpf, name)?.attach().map_err(|error| (name, error))?;
            self.memory_links.push((name, link));
        }
        Ok(())
    }
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, (&'static str, ProgramError)>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or((name, ProgramError::NotLoaded))?
        .try_into()
        .map_err(|error| (name, error))
}
