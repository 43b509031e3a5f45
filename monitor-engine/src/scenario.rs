//! Engine tests written as stories: processes by pid, secrets by id, tasks by name.

use std::collections::HashMap;

use super::{
    BaselineConfig, Effect, Engine, EngineConfig, Finding, Grant, Input, SecretKind, SecretSpec, TaskId, TaskSpec,
    TaskState,
};
use crate::event::{
    Connect, ConnectSyscall, CredentialSeen, EnvScan, EnvSecret, Event, EventKind, Exec, ExecId, Exit, ExitStatus,
    Fingerprint, Fork, Harvest, HarvestKind, InodeId, KernelAction, OpenSyscall, SecretId, SecretOpen, TlsWrite, RequestVia,
};

/// Secret ids used across the tests.
pub(super) const AWS: u32 = 1;
pub(super) const KUBE: u32 = 2;

/// A fingerprint made of one repeated byte.
pub(super) fn fingerprint(byte: u8) -> Fingerprint {
    Fingerprint([byte; 16])
}

pub(super) struct Scenario {
    engine: Engine,
    clock_ns: u64,
    live: HashMap<u32, ExecId>,
    findings: Vec<Finding>,
    effects: Vec<Effect>,
}

impl Scenario {
    /// Auto mode on, as the daemon runs with no configuration.
    pub(super) fn new() -> Self {
        Self::with(EngineConfig::default())
    }

    pub(super) fn without_auto_mode() -> Self {
        Self::with(EngineConfig { auto_mode: false, ..EngineConfig::default() })
    }

    /// Baselines learned after `learn_uses` uses over `learn_ns` (the scenario clock moves 10 ns
    /// an input).
    pub(super) fn learning(learn_ns: u64, learn_uses: u64) -> Self {
        let baseline = BaselineConfig { learn_ns, learn_uses, burst_factor: 10, burst_floor: 30 };
        Self::with(EngineConfig { baseline, ..EngineConfig::default() })
    }

    pub(super) fn with(config: EngineConfig) -> Self {
        Self {
            engine: Engine::new(config),
            clock_ns: 0,
            live: HashMap::new(),
            findings: Vec::new(),
            effects: Vec::new(),
        }
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The exec id of live process `pid`; a pid not seen yet gets a new one.
    pub(super) fn id(&mut self, pid: u32) -> ExecId {
        let start_time = self.clock_ns;
        *self.live.entry(pid).or_insert(ExecId { tgid: pid, start_time })
    }

    pub(super) fn apply(&mut self, input: Input) -> &mut Self {
        let outcome = self.engine.apply(&input);
        self.findings.extend(outcome.findings);
        self.effects.extend(outcome.effects);
        self
    }

    fn now(&mut self) -> u64 {
        self.clock_ns += 10;
        self.clock_ns
    }

    fn event(&mut self, pid: u32, kind: EventKind) -> &mut Self {
        let ktime_ns = self.now();
        let process = self.id(pid);
        self.apply(Input::Event(Event { ktime_ns, process, thread: pid, truncated: false, read_failed: false, kind }))
    }

    pub(super) fn watch_file(&mut self, id: u32, path: &str) -> &mut Self {
        self.watch(id, path, None, false)
    }

    /// A decoy file the daemon planted.
    pub(super) fn watch_decoy(&mut self, id: u32, path: &str) -> &mut Self {
        self.watch(id, path, None, true)
    }

    /// A small secret file whose content the daemon fingerprinted.
    pub(super) fn watch_file_holding(&mut self, id: u32, path: &str, value: Fingerprint) -> &mut Self {
        self.watch(id, path, Some(value), false)
    }

    fn watch(&mut self, id: u32, path: &str, fingerprint: Option<Fingerprint>, decoy: bool) -> &mut Self {
        let kind = SecretKind::File { inode: InodeId { dev: 8, ino: u64::from(id) + 1000 }, path: path.to_owned() };
        let secret = SecretSpec { id: SecretId(id), name: path.to_owned(), kind, fingerprint, decoy };
        let at_ns = self.now();
        self.apply(Input::SecretWatched { at_ns, secret })
    }

    /// `parent` forks `child`.
    pub(super) fn spawn(&mut self, parent: u32, child: u32) -> &mut Self {
        self.live.remove(&child);
        let child = self.id(child);
        self.event(parent, EventKind::Fork(Fork { child }))
    }

    /// `pid` execs `filename` with these secret-looking variables in its environment.
    pub(super) fn exec(&mut self, pid: u32, filename: &str, env: &[(&str, Fingerprint)]) -> &mut Self {
        let secrets = env.iter().map(|&(name, fingerprint)| EnvSecret { name: name.to_owned(), fingerprint }).collect();
        let parent = ExecId { tgid: 1, start_time: 0 };
        let exec = Exec {
            parent,
            uid: 1000,
            filename: filename.to_owned(),
            argv0: filename.rsplit('/').next().unwrap_or(filename).to_owned(),
            env: EnvScan::Scanned { secrets },
            tokens: Vec::new(),
            captured: None,
        };
        self.event(pid, EventKind::Exec(exec))
    }

    pub(super) fn open(&mut self, pid: u32, secret: u32) -> &mut Self {
        self.open_with(pid, secret, KernelAction::None)
    }

    pub(super) fn open_with(&mut self, pid: u32, secret: u32, kernel_action: KernelAction) -> &mut Self {
        self.open_as(pid, secret, kernel_action, 0)
    }

    /// `pid` opens `secret`, the kernel counting it a member of the task with handle `handle`.
    pub(super) fn open_by_member(&mut self, pid: u32, secret: u32, handle: u32) -> &mut Self {
        self.open_as(pid, secret, KernelAction::None, handle)
    }

    fn open_as(&mut self, pid: u32, secret: u32, kernel_action: KernelAction, caller_task: u32) -> &mut Self {
        let open = SecretOpen {
            secret: SecretId(secret),
            inode: InodeId { dev: 8, ino: u64::from(secret) + 1000 },
            syscall: OpenSyscall::Openat,
            path: format!("secret-{secret}"),
            resolved_path: format!("/home/agent/secret-{secret}"),
            fd: 3,
            kernel_action,
            caller_task,
        };
        self.event(pid, EventKind::SecretOpen(open))
    }

    pub(super) fn connect(&mut self, pid: u32, destination: &str) -> &mut Self {
        let destination = destination.parse().expect("a socket address");
        self.event(pid, EventKind::Connect(Connect { syscall: ConnectSyscall::Connect, destination, kernel_action: KernelAction::None }))
    }

    /// `pid` sends `value` in the Authorization header of a TLS request with `Host: server`.
    pub(super) fn tls(&mut self, pid: u32, server: &str, value: Fingerprint) -> &mut Self {
        let credentials = vec![CredentialSeen { header: "authorization".to_owned(), fingerprint: value }];
        let write = TlsWrite { server: Some(server.to_owned()), credentials, ..TlsWrite::default() };
        self.event(pid, EventKind::TlsWrite(write))
    }

    /// `pid` sends `value` in the Authorization header of a request through the egress proxy for
    /// `server`, which the proxy resolved to 127.0.0.1:443.
    pub(super) fn egress(&mut self, pid: u32, server: &str, value: Fingerprint) -> &mut Self {
        let credentials = vec![CredentialSeen { header: "authorization".to_owned(), fingerprint: value }];
        let address = Some("127.0.0.1:443".parse().expect("an address"));
        let write = TlsWrite { server: Some(server.to_owned()), credentials, via: RequestVia::Egress, address, ..TlsWrite::default() };
        self.event(pid, EventKind::TlsWrite(write))
    }

    /// `pid` reaches the environment or memory of `target`.
    pub(super) fn harvest(&mut self, pid: u32, kind: HarvestKind, target: u32) -> &mut Self {
        self.event(pid, EventKind::Harvest(Harvest { kind, target, kernel_action: KernelAction::None }))
    }

    pub(super) fn exit(&mut self, pid: u32) -> &mut Self {
        self.event(pid, EventKind::Exit(Exit { status: ExitStatus::Exited(0) }));
        self.live.remove(&pid);
        self
    }

    pub(super) fn start(&mut self, task: TaskBuilder) -> &mut Self {
        let at_ns = self.now();
        self.apply(Input::TaskStarted { at_ns, task: task.0 })
    }

    /// A task of an earlier run of the daemon, under `handle`, in `state`.
    pub(super) fn restore(&mut self, task: TaskBuilder, handle: u32, state: TaskState) -> &mut Self {
        let at_ns = self.now();
        self.apply(Input::TaskRestored { at_ns, task: task.0, handle, state })
    }

    /// An earlier run of the daemon issued every handle below `next_handle`.
    pub(super) fn handles_issued(&mut self, next_handle: u32) -> &mut Self {
        let at_ns = self.now();
        self.apply(Input::HandlesIssued { at_ns, next_handle })
    }

    pub(super) fn end(&mut self, id: &str) -> &mut Self {
        let at_ns = self.now();
        self.apply(Input::TaskEnded { at_ns, id: TaskId(id.to_owned()) })
    }

    /// Lets `ns` nanoseconds pass with nothing else happening.
    pub(super) fn tick(&mut self, ns: u64) -> &mut Self {
        self.clock_ns += ns;
        let at_ns = self.clock_ns;
        self.apply(Input::Tick { at_ns })
    }

    /// The findings so far, forgetting them.
    pub(super) fn findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// The effects so far, forgetting them.
    pub(super) fn effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    #[track_caller]
    pub(super) fn only_finding(&mut self) -> Finding {
        let mut findings = self.findings();
        assert_eq!(findings.len(), 1, "expected one finding, got {findings:#?}");
        findings.remove(0)
    }

    #[track_caller]
    pub(super) fn assert_silent(&mut self) {
        let findings = self.findings();
        assert!(findings.is_empty(), "expected no finding, got {findings:#?}");
    }
}

/// A task to start, built up one grant at a time.
pub(super) struct TaskBuilder(TaskSpec);

pub(super) fn task(id: &str) -> TaskBuilder {
    TaskBuilder(TaskSpec {
        id: TaskId(id.to_owned()),
        owner: "tests".to_owned(),
        roots: Vec::new(),
        cgroup: None,
        granted: Vec::new(),
        allowed: None,
        allowed_hosts: Vec::new(),
        ttl_ns: None,
        egress: false,
    })
}

impl TaskBuilder {
    pub(super) fn root(mut self, pid: u32) -> Self {
        self.0.roots.push(pid);
        self
    }

    pub(super) fn file(mut self, secret: u32) -> Self {
        self.0.granted.push(Grant::File { secret: SecretId(secret) });
        self
    }

    pub(super) fn env(mut self, name: &str, fingerprint: Option<Fingerprint>) -> Self {
        self.0.granted.push(Grant::Env { name: name.to_owned(), fingerprint });
        self
    }

    pub(super) fn decoy(mut self, fingerprint: Fingerprint, label: &str) -> Self {
        self.0.granted.push(Grant::Decoy { fingerprint, label: label.to_owned() });
        self
    }

    pub(super) fn token(mut self, fingerprint: Fingerprint, label: &str) -> Self {
        self.0.granted.push(Grant::Token { fingerprint, label: label.to_owned() });
        self
    }

    /// Restricts where its processes may connect while holding a secret; `&[]` is nowhere.
    /// `HOST:PORT` entries are kept by name, as the task API does once it has resolved them.
    pub(super) fn allow(mut self, destinations: &[&str]) -> Self {
        let (addresses, hosts): (Vec<&str>, Vec<&str>) =
            destinations.iter().partition(|text| text.parse::<crate::Destination>().is_ok());
        self.0.allowed = Some(addresses.iter().map(|text| text.parse().expect("a destination")).collect());
        self.0.allowed_hosts = hosts.iter().map(|&host| host.to_owned()).collect();
        self
    }

    pub(super) fn ttl(mut self, ns: u64) -> Self {
        self.0.ttl_ns = Some(ns);
        self
    }
}
