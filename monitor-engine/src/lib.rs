//! The correlation engine: a process table, tasks, secrets and their bindings, turned into
//! findings by the rules.
//!
//! It is pure: no I/O and no clock but the inputs' timestamps, so it runs the same on live
//! events, on a recording (`credwatch replay`), in tests and in benchmarks. The same inputs in
//! the same order give the same findings and effects. [`event`] is the model of what the kernel
//! reports, shared with the daemon that decodes it.

mod baseline;
mod destinations;
mod effect;
pub mod event;
mod finding;
mod input;
mod processes;
mod rules;
#[cfg(test)]
mod scenario;
mod secrets;
mod stats;
mod tasks;
#[cfg(test)]
mod tests;

pub use baseline::{Baseline, BaselineConfig};
pub use destinations::{Destination, DestinationError};
pub use effect::{Effect, Rejection};
pub use finding::{Ancestor, Finding, Rule, SecretLabel, Severity, Sprawl, UseVia};
pub use input::Input;
pub use secrets::{BindingKind, SecretKind, SecretSpec};
pub use stats::{InputCounts, Stats};
pub use tasks::{Grant, TaskCounts, TaskId, TaskSpec, TaskState};

use processes::Processes;
use rules::{SecretUse, Via};
use secrets::{SecretKey, Secrets};
use tasks::{Membership, NewTask, TaskRef, Tasks};

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use baseline::Baselines;

use monitor_common::maps::{policy, UNKNOWN_TASK};

use crate::event::{
    Connect, CredentialSeen, EnvScan, EnvSecret, Event, EventKind, Exec, ExecId, Exit, Fork, Harvest, KernelAction,
    RequestVia, SecretId, SecretOpen, TlsWrite, TokenSeen,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// A secret no task was granted is bound to the first active task that uses it, until that
    /// task ends; uses outside any task are then reported as `info` with sprawl counts.
    pub auto_mode: bool,
    pub baseline: BaselineConfig,
    /// Executables whose touches of a decoy outside any task are not reported (known scanners).
    pub decoy_ignore: Vec<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { auto_mode: true, baseline: BaselineConfig::default(), decoy_ignore: Vec::new() }
    }
}

/// A process used a secret, as the engine is told of it.
struct Used<'a> {
    key: SecretKey,
    via: Via<'a>,
    /// The process holds the secret now (a denied open gave it nothing).
    holds: bool,
    /// The kernel could not record the process's task.
    task_unknown: bool,
}

/// What one input produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub effects: Vec<Effect>,
    /// Rules that matched again where they had already fired (one finding per process and
    /// subject): nothing to report, but the egress proxy refuses such a request all the same.
    pub repeats: Vec<Repeat>,
}

/// A rule that matched again: the finding it gave the first time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeat {
    pub rule: Rule,
    pub process: ExecId,
    /// The `at_ns` of the first finding.
    pub first_at_ns: u64,
}

#[derive(Debug)]
pub struct Engine {
    state: State,
    /// The latest input time seen: inputs from several CPUs may arrive slightly out of order, and
    /// a task must not come back to life.
    now_ns: u64,
    stats: Stats,
    baselines: Baselines,
    /// Kernel maps whose writes failed, with the time of the latest failure: an episode of
    /// `monitor_blind` per map.
    blind: HashMap<String, u64>,
    /// What the kernel was last told of each watched secret's binding (`Effect::FileBinding`).
    kernel_bindings: HashMap<SecretId, (u32, Vec<u32>)>,
    /// An input may have changed who owns a secret.
    bindings_changed: bool,
}

/// Everything the rules read.
#[derive(Debug)]
struct State {
    config: EngineConfig,
    processes: Processes,
    tasks: Tasks,
    secrets: Secrets,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        let baselines = Baselines::new(config.baseline);
        let state =
            State { config, processes: Processes::default(), tasks: Tasks::default(), secrets: Secrets::default() };
        Self {
            state,
            now_ns: 0,
            stats: Stats::default(),
            baselines,
            blind: HashMap::new(),
            kernel_bindings: HashMap::new(),
            bindings_changed: false,
        }
    }

    pub fn apply(&mut self, input: &Input) -> Outcome {
        let mut out = Outcome::default();
        self.stats.inputs.count(input);
        self.now_ns = self.now_ns.max(input.at_ns());
        self.expire(&mut out);
        match input {
            Input::Event(event) => self.event(event, &mut out),
            Input::TaskStarted { at_ns, task } => {
                self.start_task(*at_ns, task, None, &mut out);
            }
            Input::TaskEnded { at_ns: _, id } => self.end_task(id, &mut out),
            Input::TaskRestored { at_ns, task, handle, state } => self.restore_task(*at_ns, task, *handle, *state, &mut out),
            Input::HandlesIssued { at_ns: _, next_handle } => self.state.tasks.issued(*next_handle),
            Input::GrantAdded { at_ns: _, task, grant } => self.add_grant(task, grant, &mut out),
            Input::SecretWatched { at_ns: _, secret } => {
                self.state.secrets.watch(secret);
                if let SecretKind::File { inode, path } = &secret.kind {
                    out.effects.push(Effect::InodeWatched { secret: secret.id, inode: *inode, path: path.clone() });
                }
                self.bindings_changed = true;
            }
            Input::InodeUnwatched { at_ns: _, secret, inode } => {
                out.effects.push(Effect::InodeUnwatched { secret: *secret, inode: *inode });
            }
            Input::MapWriteFailed { at_ns, map, failures, process } => {
                self.map_write_failed(*at_ns, map, *failures, *process, &mut out);
            }
            Input::BaselinesRestored { at_ns: _, baselines } => self.baselines.restore(baselines),
            Input::BaselineReset { at_ns: _, secret } => self.baselines.reset(secret.as_deref()),
            Input::Tick { at_ns: _ } => {}
        }
        if std::mem::take(&mut self.bindings_changed) {
            self.sync_file_bindings(&mut out);
        }
        for finding in &out.findings {
            *self.stats.findings.entry(finding.rule).or_default() += 1;
        }
        self.stats.rejected += out.effects.iter().filter(|effect| matches!(effect, Effect::Rejected(_))).count() as u64;
        out
    }

    /// The task of a process the engine knows, and the task's state.
    pub fn task_of(&self, process: ExecId) -> Option<(&TaskId, TaskState)> {
        let task = self.state.tasks.get(self.state.processes.task_of(process)?);
        Some((&task.id, task.state))
    }

    /// Every secret's learned baseline, by the key `baseline show` names it with.
    pub fn baselines(&self) -> &BTreeMap<String, Baseline> {
        self.baselines.all()
    }

    /// Whether a baseline changed since the last call (the daemon persists them then).
    pub fn take_baselines_changed(&mut self) -> bool {
        self.baselines.take_changed()
    }

    /// The handle the next task will get: every lower one was issued (persisted across restarts).
    pub fn next_handle(&self) -> u32 {
        self.state.tasks.next_handle()
    }

    /// The task of the live process with this pid.
    pub fn task_of_pid(&self, pid: u32) -> Option<(&TaskId, TaskState)> {
        self.task_of(self.state.processes.live_by_pid(pid)?)
    }

    /// Processes in the table: live ones, and exited ones kept as ancestors of live ones.
    pub fn processes_tracked(&self) -> usize {
        self.state.processes.len()
    }

    /// Every live process of a task, with the task's kernel handle: what the kernel's membership
    /// map holds when no write to it failed.
    pub fn memberships(&self) -> impl Iterator<Item = (ExecId, u32)> + '_ {
        self.state.processes.members().map(|(id, task)| (id, self.state.tasks.get(task).handle))
    }

    pub fn task_counts(&self) -> TaskCounts {
        self.state.tasks.counts()
    }

    /// Secrets the engine knows: watched, granted, or seen in an environment.
    pub fn secrets_known(&self) -> usize {
        self.state.secrets.len()
    }

    /// Secrets bound to a task.
    pub fn bindings(&self) -> usize {
        self.state.secrets.bound()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn expire(&mut self, out: &mut Outcome) {
        for task in self.state.tasks.expire_due(self.now_ns) {
            self.finished(task, out);
        }
    }

    /// A task is over: the kernel must judge its left-over processes, and its auto bindings end.
    fn finished(&mut self, task: TaskRef, out: &mut Outcome) {
        let record = self.state.tasks.get(task);
        out.effects.push(Effect::TaskFinished { task: record.id.clone(), handle: record.handle, state: record.state });
        self.release(task, out);
        self.bindings_changed = true;
    }

    /// Starts a task, under `handle` when it is restored; `None` if the engine rejected it.
    fn start_task(&mut self, at_ns: u64, spec: &TaskSpec, handle: Option<u32>, out: &mut Outcome) -> Option<TaskRef> {
        // The task API checks the owner; the cgroup is for the kill_task action.
        let TaskSpec { id, owner, roots, cgroup: _, granted, allowed, allowed_hosts, ttl_ns, egress } = spec;
        let env_grants = granted
            .iter()
            .filter_map(|grant| match grant {
                Grant::Env { name, fingerprint: None } => Some(name.clone()),
                Grant::Env { name: _, fingerprint: Some(_) }
                | Grant::File { .. }
                | Grant::Token { .. }
                | Grant::Decoy { .. } => None,
            })
            .collect();
        let allowed_hosts = allowed_hosts.clone();
        let new = NewTask { id, owner, at_ns, ttl_ns: *ttl_ns, allowed: allowed.clone(), allowed_hosts, env_grants };
        let task = match self.state.tasks.start(new, handle) {
            Ok(task) => task,
            Err(rejection) => {
                out.effects.push(Effect::Rejected(rejection));
                return None;
            }
        };
        let handle = self.state.tasks.get(task).handle;
        out.effects.push(Effect::TaskStarted { task: id.clone(), handle, allowed: allowed.clone(), egress: *egress });
        self.bindings_changed = true;
        for grant in granted {
            self.grant_to(grant, task, out);
        }
        for &pid in roots {
            match self.state.processes.live_by_pid(pid) {
                Some(root) => self.join(task, root, out),
                None => match self.state.tasks.add_pending_root(pid, task) {
                    Ok(()) => out.effects.push(Effect::TaskRootPending { task: id.clone(), handle, pid }),
                    Err(rejection) => out.effects.push(Effect::Rejected(rejection)),
                },
            }
        }
        Some(task)
    }

    /// A task of an earlier run, under the handle it had; an ended or expired one keeps its grants
    /// so that reuse after it is still post-task reuse.
    fn restore_task(&mut self, at_ns: u64, spec: &TaskSpec, handle: u32, state: TaskState, out: &mut Outcome) {
        let Some(task) = self.start_task(at_ns, spec, Some(handle), out) else {
            return;
        };
        if state != TaskState::Active {
            self.state.tasks.restore_finished(task, state);
            self.finished(task, out);
        }
    }

    /// Grants one more secret to an active task (a broker's token registered after the start).
    fn add_grant(&mut self, id: &TaskId, grant: &Grant, out: &mut Outcome) {
        match self.state.tasks.find(id).filter(|&task| self.state.tasks.is_active(task)) {
            Some(task) => self.grant_to(grant, task, out),
            None => out.effects.push(Effect::Rejected(Rejection::UnknownTask { task: id.clone() })),
        }
    }

    fn grant_to(&mut self, grant: &Grant, task: TaskRef, out: &mut Outcome) {
        let (key, name) = match grant {
            Grant::File { secret } => (SecretKey::Watched(*secret), ""),
            Grant::Env { name, fingerprint: Some(fingerprint) } => (self.state.secrets.key_of(*fingerprint), name.as_str()),
            // Bound later, to the first value a member of the task is seen with.
            Grant::Env { name: _, fingerprint: None } => return,
            Grant::Token { fingerprint, label } => (self.state.secrets.key_of(*fingerprint), label.as_str()),
            // Planted, not granted: the task may carry it, no one may use it.
            Grant::Decoy { fingerprint, label } => {
                let key = self.state.secrets.key_of(*fingerprint);
                self.state.secrets.ensure(key, label);
                return self.state.secrets.plant_decoy(key, task);
            }
        };
        self.state.secrets.ensure(key, name);
        self.grant(key, task, out);
    }

    fn end_task(&mut self, id: &TaskId, out: &mut Outcome) {
        match self.state.tasks.end(id) {
            Ok(Some(task)) => self.finished(task, out),
            Ok(None) => {}
            Err(rejection) => out.effects.push(Effect::Rejected(rejection)),
        }
    }

    /// Makes `root` and its live descendants not in an active task members of `task`.
    fn join(&mut self, task: TaskRef, root: ExecId, out: &mut Outcome) {
        let State { processes, tasks, .. } = &self.state;
        if let Some(other) = processes.task_of(root).filter(|&other| other != task && tasks.is_active(other)) {
            let rejection =
                Rejection::RootInOtherTask { task: self.task_id(task), pid: root.tgid, other: self.task_id(other) };
            return out.effects.push(Effect::Rejected(rejection));
        }
        let joining = processes.descendants(root).into_iter().filter(|&descendant| {
            processes.task_of(descendant).is_none_or(|current| current != task && !tasks.is_active(current))
        });
        let joining: Vec<ExecId> = std::iter::once(root).chain(joining).collect();
        let handle = self.state.tasks.get(task).handle;
        for process in joining {
            self.state.processes.set_task(process, task);
            out.effects.push(Effect::TaskJoined { task: self.task_id(task), handle, process });
        }
    }

    fn grant(&mut self, key: SecretKey, task: TaskRef, out: &mut Outcome) {
        self.bindings_changed = true;
        let displaced = self.state.secrets.grant(key, task, &self.state.tasks);
        let secret = self.state.secrets.label(key);
        if let Some(previous) = displaced.filter(|&previous| previous != task) {
            out.effects.push(Effect::SecretReleased { secret: secret.clone(), task: self.task_id(previous) });
        }
        out.effects.push(Effect::SecretBound { secret, task: self.task_id(task), binding: BindingKind::Granted });
    }

    fn release(&mut self, task: TaskRef, out: &mut Outcome) {
        for key in self.state.secrets.release(task) {
            out.effects
                .push(Effect::SecretReleased { secret: self.state.secrets.label(key), task: self.task_id(task) });
        }
    }

    fn event(&mut self, event: &Event, out: &mut Outcome) {
        // Truncated strings and failed reads only degrade labels; the engine uses what arrived.
        let Event { ktime_ns, process, thread: _, truncated: _, read_failed: _, kind } = event;
        let (at_ns, process) = (*ktime_ns, *process);
        match kind {
            // `captured` is the daemon's to scan and wipe; the engine gets fingerprints only.
            EventKind::Exec(Exec { parent, uid: _, filename, argv0: _, env, tokens, captured: _ }) => {
                if self.state.processes.get(process).is_none() {
                    self.stats.unknown_processes += 1;
                    self.admit(process, Some(*parent), out);
                }
                self.state.processes.set_filename(process, filename);
                match env {
                    EnvScan::Scanned { secrets } => {
                        for EnvSecret { name, fingerprint } in secrets {
                            let key = self.state.secrets.key_of(*fingerprint);
                            let used = Used { key, via: Via::Env { name }, holds: true, task_unknown: false };
                            self.use_secret(at_ns, process, used, out);
                        }
                    }
                    EnvScan::NotScanned | EnvScan::Unreadable => {}
                }
                // A known value passed another way: on the command line, or under another name.
                for TokenSeen { env, fingerprint } in tokens {
                    let Some(key) = self.state.secrets.known(*fingerprint) else { continue };
                    let via = match env.as_deref() {
                        Some(name) => Via::Env { name },
                        None => Via::Argv,
                    };
                    self.use_secret(at_ns, process, Used { key, via, holds: true, task_unknown: false }, out);
                }
            }
            EventKind::Fork(Fork { child }) => {
                self.see(process, out);
                if self.state.processes.get(*child).is_none() {
                    self.admit(*child, Some(process), out);
                }
            }
            // A process unknown at exit never mattered: there is nothing to forget.
            EventKind::Exit(Exit { status: _ }) => self.state.processes.exit(process),
            EventKind::SecretOpen(SecretOpen {
                secret,
                inode: _,
                syscall: _,
                path,
                resolved_path: _,
                fd: _,
                kernel_action,
                caller_task,
            }) => {
                self.see(process, out);
                let task_unknown = self.adopt_kernel_membership(process, *caller_task);
                // A denied open gave the process nothing to hold; the attempt is still judged.
                let holds = match kernel_action {
                    KernelAction::None | KernelAction::Killed => true,
                    KernelAction::Denied => false,
                };
                let used = Used { key: SecretKey::Watched(*secret), via: Via::Open { path }, holds, task_unknown };
                self.use_secret(at_ns, process, used, out);
            }
            EventKind::Harvest(Harvest { kind, target, kernel_action: _ }) => {
                self.see(process, out);
                match self.state.processes.live_by_pid(*target) {
                    Some(target) => {
                        let draft = rules::harvest(&self.state, process, target, *kind);
                        self.emit(at_ns, process, draft, out);
                    }
                    None => self.stats.unknown_harvest_targets += 1,
                }
            }
            EventKind::Connect(Connect { syscall: _, destination, kernel_action: _ }) => {
                self.see(process, out);
                match rules::connect(&self.state, process, *destination) {
                    Some(draft) => self.emit(at_ns, process, Some(draft), out),
                    None => self.learn_destination(at_ns, process, *destination, out),
                }
            }
            // `captured` is the daemon's to scan and wipe; the engine gets fingerprints only.
            EventKind::TlsWrite(TlsWrite { server, credentials, via, address, caller_task, captured: _ }) => {
                self.see(process, out);
                let task_unknown = self.adopt_kernel_membership(process, *caller_task);
                let egress = *via == RequestVia::Egress;
                let request = server.as_deref().map(|server| rules::RequestSeen { server, address: *address, egress });
                let mut spent = false;
                for CredentialSeen { header, fingerprint } in credentials {
                    let Some(key) = self.state.secrets.known(*fingerprint) else { continue };
                    spent = true;
                    let via = Via::Tls { header, server: server.as_deref(), egress };
                    self.use_secret(at_ns, process, Used { key, via, holds: true, task_unknown }, out);
                    // A decoy's use is decoy_touched whatever the destination.
                    if let (Some(request), None) = (&request, self.state.secrets.decoy(key)) {
                        let draft = rules::request(&self.state, process, key, request);
                        self.emit(at_ns, process, draft, out);
                    }
                }
                // Through the proxy, a holder's request is judged by its destination even when it
                // carries no known credential, as its connect would be.
                let held = self.state.processes.get(process).and_then(|holder| holder.held_secret());
                if let (false, true, Some(request), Some(held)) = (spent, egress, &request, held) {
                    let draft = rules::request(&self.state, process, held, request);
                    self.emit(at_ns, process, draft, out);
                }
            }
        }
    }

    /// The kernel counted the process as a member of the task with handle `caller_task` at the
    /// use: a process whose fork the engine missed (lost event, started before the daemon) is
    /// judged as the member it is, not as a process in no task. Returns whether the kernel could
    /// not record its task (`UNKNOWN_TASK`): it judged the use as another task's, and so does
    /// the engine, so that the finding matches what the kernel did.
    fn adopt_kernel_membership(&mut self, process: ExecId, caller_task: u32) -> bool {
        if caller_task == UNKNOWN_TASK {
            return true;
        }
        if caller_task == 0 || self.state.processes.task_of(process).is_some() {
            return false;
        }
        if let Some(task) = self.state.tasks.by_handle(caller_task) {
            self.state.processes.set_task(process, task);
            self.stats.kernel_memberships_adopted += 1;
        }
        false
    }

    /// Adds a process first seen acting, with its parent unknown.
    fn see(&mut self, process: ExecId, out: &mut Outcome) {
        if self.state.processes.get(process).is_none() {
            self.stats.unknown_processes += 1;
            self.admit(process, None, out);
        }
    }

    fn admit(&mut self, process: ExecId, parent: Option<ExecId>, out: &mut Outcome) {
        if self.state.processes.insert(process, parent) {
            out.effects.push(Effect::ProcessHolds { process });
        }
        if let Some(task) = self.state.tasks.take_pending_root(process.tgid) {
            self.join(task, process, out);
        }
    }

    /// A process opened a secret or started with it in its environment: update bindings, held
    /// secrets and sprawl, then let the rules judge the use; the findings say whether the
    /// kernel could record the process's task.
    fn use_secret(&mut self, at_ns: u64, process: ExecId, used: Used<'_>, out: &mut Outcome) {
        let before = out.findings.len();
        // Spared only where the engine cannot tell either: a process it knows in a task that
        // does not own the secret, or no longer runs, is no owner's work.
        let spared = used.task_unknown
            && match self.state.processes.task_of(process) {
                None => true,
                Some(task) => {
                    let key = self.state.secrets.canonical(used.key);
                    self.state.tasks.is_active(task)
                        && self.state.secrets.binding(key).is_some_and(|binding| binding.is_owner(task))
                }
            };
        self.judge_use(at_ns, process, used, out);
        for finding in &mut out.findings[before..] {
            finding.task_unrecorded = spared;
        }
    }

    fn judge_use(&mut self, at_ns: u64, process: ExecId, used: Used<'_>, out: &mut Outcome) {
        let Used { key, via, holds, task_unknown } = used;
        let name = match via {
            Via::Open { path } => path,
            Via::Env { name } => name,
            Via::Argv => "a command-line argument",
            Via::Tls { .. } => "a TLS request",
        };
        self.state.secrets.ensure(key, name);
        let key = self.state.secrets.canonical(key);
        let task = self.state.processes.task_of(process);
        let membership = if task_unknown { Membership::Unknown } else { self.state.tasks.membership(task) };
        if let Some(decoy) = self.state.secrets.decoy(key) {
            let observed = SecretUse { membership, key, via };
            let draft = rules::decoy_touched::check(&self.state, process, &observed, decoy);
            return self.emit(at_ns, process, draft, out);
        }
        if let Membership::Active(task) = membership {
            self.claim(key, task, &via, out);
        }
        if holds {
            let change = self.state.processes.hold(process, key);
            if change.first_hold {
                out.effects.push(Effect::ProcessHolds { process });
            }
            self.state.secrets.record_use(key, task, change.first_use);
        }
        match rules::secret_use(&self.state, &SecretUse { membership, key, via }) {
            Some(draft) => self.emit(at_ns, process, Some(draft), out),
            None => self.learn_use(at_ns, process, key, out),
        }
    }

    /// A use no policy rule objected to: it teaches the secret's baseline, or stands out from it.
    fn learn_use(&mut self, at_ns: u64, process: ExecId, key: SecretKey, out: &mut Outcome) {
        let State { processes, tasks, secrets, .. } = &self.state;
        let Some(record) = processes.get(process) else { return };
        let parent = record.parent.and_then(|parent| processes.get(parent)).and_then(|parent| parent.filename.as_deref());
        let user = baseline::User {
            executable: record.filename.as_deref(),
            parent,
            owner: record.task.map(|task| tasks.get(task).owner.as_str()),
        };
        let Some(name) = secrets.baseline_name(key) else { return };
        let (novel, summary) = self.baselines.used(name, at_ns, user);
        if let Some(summary) = summary {
            let draft = rules::anomalous_use::check(&self.state, process, key, &novel, &summary);
            self.emit(at_ns, process, draft, out);
        }
    }

    /// A holder's connect no policy rule objected to: it teaches the baselines of what it holds.
    fn learn_destination(&mut self, at_ns: u64, process: ExecId, destination: SocketAddr, out: &mut Outcome) {
        let held: Vec<SecretKey> =
            self.state.processes.get(process).map(|record| record.held.keys().copied().collect()).unwrap_or_default();
        for key in held {
            let Some(name) = self.state.secrets.baseline_name(key) else { continue };
            if let Some((novelty, summary)) = self.baselines.reached(name, destination) {
                let draft = rules::anomalous_use::check(&self.state, process, key, &[novelty], &summary);
                self.emit(at_ns, process, draft, out);
            }
        }
    }

    /// Binds the secret to the active task using it, when a grant by name or auto mode says so.
    fn claim(&mut self, key: SecretKey, task: TaskRef, via: &Via<'_>, out: &mut Outcome) {
        let State { config, tasks, secrets, .. } = &mut self.state;
        if let Via::Env { name } = via {
            if tasks.has_env_grant(task, name) && secrets.grantable_to(key, task, tasks) {
                tasks.remove_env_grant(task, name);
                return self.grant(key, task, out);
            }
        }
        if config.auto_mode && secrets.claim(key, task) {
            self.bindings_changed = true;
            let secret = secrets.label(key);
            out.effects.push(Effect::SecretBound { secret, task: self.task_id(task), binding: BindingKind::Auto });
        }
    }

    /// Completes a rule's draft into a finding, unless the same one fired before for the process.
    fn emit(&mut self, at_ns: u64, process: ExecId, draft: Option<rules::Draft>, out: &mut Outcome) {
        let Some(rules::Draft {
            rule,
            severity,
            secret,
            owner_task,
            subject,
            destination,
            via,
            server,
            target,
            detail,
            sprawl,
        }) = draft
        else {
            return;
        };
        if let Err(first_at_ns) = self.state.processes.first_firing(process, rule, subject, at_ns) {
            self.stats.suppressed_repeats += 1;
            out.repeats.push(Repeat { rule, process, first_at_ns });
            return;
        }
        out.findings.push(Finding {
            rule,
            severity,
            at_ns,
            process,
            ancestry: self.state.processes.ancestry(process),
            task: self.state.processes.task_of(process).map(|task| self.task_id(task)),
            task_handle: self.state.processes.task_of(process).map(|task| self.state.tasks.get(task).handle),
            task_unrecorded: false,
            owner_task: owner_task.map(|task| self.task_id(task)),
            secret: self.state.secrets.label(secret),
            destination,
            via,
            server,
            target,
            detail,
            sprawl: sprawl.then(|| self.state.secrets.sprawl(secret)).flatten(),
        });
    }

    /// A kernel map is full: a critical finding, once per episode.
    fn map_write_failed(&mut self, at_ns: u64, map: &str, failures: u64, process: Option<ExecId>, out: &mut Outcome) {
        let previous = self.blind.insert(map.to_owned(), at_ns);
        if previous.is_some_and(|last| at_ns.saturating_sub(last) < rules::monitor_blind::QUIET_NS) {
            self.stats.suppressed_repeats += 1;
            return;
        }
        // No process when only the daemon's own writes failed.
        let process = process.unwrap_or(ExecId { tgid: 0, start_time: 0 });
        let task = self.state.processes.task_of(process);
        out.findings.push(Finding {
            rule: Rule::MonitorBlind,
            severity: Severity::Critical,
            at_ns,
            process,
            ancestry: self.state.processes.ancestry(process),
            task: task.map(|task| self.task_id(task)),
            task_handle: task.map(|task| self.state.tasks.get(task).handle),
            task_unrecorded: false,
            owner_task: None,
            secret: SecretLabel { id: None, name: format!("kernel map {map}"), fingerprint_prefix: None },
            destination: None,
            via: None,
            server: None,
            target: None,
            detail: rules::monitor_blind::detail(map, failures),
            sprawl: None,
        });
    }

    /// Tells the kernel the binding of every watched secret file whose owners changed since it
    /// was last told, in secret id order.
    fn sync_file_bindings(&mut self, out: &mut Outcome) {
        let State { secrets, tasks, .. } = &self.state;
        let mut changed: Vec<(SecretId, (u32, Vec<u32>))> = secrets
            .watched()
            .map(|(id, secret)| {
                if secret.decoy.is_some() {
                    return (id, (policy::DECOY, Vec::new()));
                }
                let binding = &secret.binding;
                let owners: Vec<u32> = binding.active_owners(tasks).map(|task| tasks.get(task).handle).collect();
                let state = match (owners.is_empty(), binding.is_granted()) {
                    (false, _) => policy::ACTIVE,
                    (true, true) => policy::FINISHED,
                    (true, false) => policy::UNBOUND,
                };
                (id, (state, owners))
            })
            .filter(|(id, now)| self.kernel_bindings.get(id).map_or(now.0 != policy::UNBOUND, |before| before != now))
            .collect();
        changed.sort_unstable_by_key(|(id, _)| *id);
        for (secret, (binding, grantees)) in changed {
            out.effects.push(Effect::FileBinding { secret, binding, grantees: grantees.clone() });
            self.kernel_bindings.insert(secret, (binding, grantees));
        }
    }

    fn task_id(&self, task: TaskRef) -> TaskId {
        self.state.tasks.get(task).id.clone()
    }
}
