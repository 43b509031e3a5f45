//! A generated stream of engine inputs shaped like a busy agent host: a population of long-lived
//! processes, half of them in one of a fixed number of active tasks that each hold their own
//! secret file and token, and short-lived children (tool runs) forked, exec'd and gone all the
//! time; a mix of fork, exec, exit, secret opens, connects by holders and the odd harvest. A
//! small share of the uses break a rule, so findings flow as well; tasks end and are replaced over
//! time, leaving their processes behind.

use monitor::{
    engine::{Destination, Grant, Input, SecretKind, SecretSpec, TaskId, TaskSpec},
    event::{
        Connect, ConnectSyscall, EnvScan, EnvSecret, Event, EventKind, Exec, ExecId, Exit, ExitStatus, Fingerprint,
        Fork, Harvest, HarvestKind, InodeId, KernelAction, OpenSyscall, SecretId, SecretOpen,
    },
};

/// Programs the generated processes exec, as agents' tool calls do.
const PROGRAMS: [&str; 8] = [
    "/usr/bin/git",
    "/usr/bin/python3",
    "/usr/bin/node",
    "/usr/bin/curl",
    "/usr/bin/bash",
    "/usr/bin/cargo",
    "/usr/bin/aws",
    "/usr/bin/kubectl",
];
/// Where a task's secret holders may connect; the generator stays inside it except on purpose.
const ALLOWED: &str = "10.0.0.0/8:443";
/// Simulated time between two inputs, and between two daemon ticks.
const STEP_NS: u64 = 1_000;
const TICK_NS: u64 = 1_000_000_000;
/// One input in this many ends the oldest task and starts a replacement.
const TASK_CHURN: u64 = 100_000;
/// Random picks tried to find a task member before settling for a process in no task.
const MEMBER_TRIES: usize = 8;
/// Short-lived processes alive at a time, on average, as a share of the long-lived ones.
const TRANSIENT_PER_STABLE: usize = 10;

/// Tiny deterministic generator (xorshift64*): the same seed gives the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Copy)]
struct Live {
    id: ExecId,
    /// The slot in `Stream::tasks` of the task whose tree it is in.
    task: Option<usize>,
}

struct Task {
    id: TaskId,
    secret: SecretId,
    /// Its token's fingerprint, as it appears in an exec'd environment.
    token: Fingerprint,
}

pub struct Stream {
    rng: Rng,
    clock_ns: u64,
    next_tick_ns: u64,
    next_pid: u32,
    /// Long-lived processes first (init, task roots, the host's population), which never exit;
    /// then short-lived ones, which do.
    live: Vec<Live>,
    stable: usize,
    tasks: Vec<Task>,
    /// Tasks started so far; names the next one.
    started: u32,
    inputs: u64,
}

impl Stream {
    /// The stream's opening: `tasks` watched secrets and tasks granted them, and `processes`
    /// long-lived processes, about half of them in tasks. Returned with the inputs that set it up.
    pub fn new(processes: usize, tasks: usize, seed: u64) -> (Self, Vec<Input>) {
        let init = Live { id: ExecId { tgid: 1, start_time: 0 }, task: None };
        let mut stream = Self {
            rng: Rng(seed | 1),
            clock_ns: 0,
            next_tick_ns: TICK_NS,
            next_pid: 2,
            live: vec![init],
            stable: 1,
            tasks: Vec::new(),
            started: 0,
            inputs: 0,
        };
        let mut setup = Vec::new();
        for slot in 0..tasks {
            stream.start_task(slot, &mut setup);
        }
        // The first `tasks + 1` slots are init and the roots.
        while stream.live.len() < processes {
            let parent = if stream.rng.chance(50) { 1 + stream.rng.below(tasks) } else { 0 };
            stream.fork(parent, &mut setup);
            stream.stabilise_last();
        }
        (stream, setup)
    }

    pub fn live_processes(&self) -> usize {
        self.live.len()
    }

    /// The next `count` inputs (at least) of the steady state.
    pub fn chunk(&mut self, count: usize) -> Vec<Input> {
        let mut out = Vec::with_capacity(count + 16);
        while out.len() < count {
            self.step(&mut out);
        }
        out
    }

    fn step(&mut self, out: &mut Vec<Input>) {
        self.inputs += 1;
        if self.inputs.is_multiple_of(TASK_CHURN) {
            self.replace_oldest_task(out);
        }
        if self.clock_ns >= self.next_tick_ns {
            self.next_tick_ns += TICK_NS;
            out.push(Input::Tick { at_ns: self.clock_ns });
        }
        // Weights per mille: fork or exit 400 (a steady population), exec 200, secret open 240,
        // connect 158, harvest 2.
        match self.rng.below(1000) {
            0..400 => self.fork_or_exit(out),
            400..600 => self.exec(out),
            600..840 => self.open(out),
            840..998 => self.connect(out),
            _ => self.harvest(out),
        }
    }

    fn now(&mut self) -> u64 {
        self.clock_ns += STEP_NS;
        self.clock_ns
    }

    fn event(&mut self, actor: usize, kind: EventKind) -> Input {
        let ktime_ns = self.now();
        let process = self.live[actor].id;
        Input::Event(Event { ktime_ns, process, thread: process.tgid, truncated: false, read_failed: false, kind })
    }

    /// A random task member if a few picks find one (secrets are used by agents), else whoever
    /// was picked last.
    fn pick_member(&mut self) -> usize {
        let mut actor = 0;
        for _ in 0..MEMBER_TRIES {
            actor = self.rng.below(self.live.len());
            if self.live[actor].task.is_some() {
                break;
            }
        }
        actor
    }

    fn fork(&mut self, parent: usize, out: &mut Vec<Input>) {
        let child = ExecId { tgid: self.next_pid, start_time: self.clock_ns + 1 };
        self.next_pid = self.next_pid.wrapping_add(1).max(2);
        let input = self.event(parent, EventKind::Fork(Fork { child }));
        out.push(input);
        let task = self.live[parent].task;
        self.live.push(Live { id: child, task });
    }

    /// Makes the process forked last a long-lived one.
    fn stabilise_last(&mut self) {
        let last = self.live.len() - 1;
        self.live.swap(self.stable, last);
        self.stable += 1;
    }

    /// Any process forks a short-lived child, or a short-lived process exits: the more of them
    /// alive, the likelier an exit, so that their number hovers around its target.
    fn fork_or_exit(&mut self, out: &mut Vec<Input>) {
        let transient = self.live.len() - self.stable;
        if self.rng.below(2 * self.stable / TRANSIENT_PER_STABLE) >= transient {
            let parent = self.rng.below(self.live.len());
            return self.fork(parent, out);
        }
        let actor = self.stable + self.rng.below(transient);
        let input = self.event(actor, EventKind::Exit(Exit { status: ExitStatus::Exited(0) }));
        out.push(input);
        self.live.swap_remove(actor);
    }

    /// An exec, one in fifty with a token in its environment: a member's own task's, or any
    /// task's for a process in no task (secret propagation).
    fn exec(&mut self, out: &mut Vec<Input>) {
        let actor = self.rng.below(self.live.len());
        let filename = PROGRAMS[self.rng.below(PROGRAMS.len())];
        let secrets = if self.rng.chance(2) {
            let task = self.live[actor].task.unwrap_or_else(|| self.rng.below(self.tasks.len()));
            vec![EnvSecret { name: "GITHUB_TOKEN".to_owned(), fingerprint: self.tasks[task].token }]
        } else {
            Vec::new()
        };
        let exec = Exec {
            parent: self.live[0].id,
            uid: 1000,
            filename: filename.to_owned(),
            argv0: filename.rsplit('/').next().unwrap_or(filename).to_owned(),
            env: EnvScan::Scanned { secrets },
            tokens: Vec::new(),
            captured: None,
        };
        let input = self.event(actor, EventKind::Exec(exec));
        out.push(input);
    }

    /// A member opens its task's secret, or one time in fifty another task's (cross-task
    /// reuse); a process in no task opens any (untasked access).
    fn open(&mut self, out: &mut Vec<Input>) {
        let actor = self.pick_member();
        let task = match self.live[actor].task {
            Some(own) if !self.rng.chance(2) => own,
            _ => self.rng.below(self.tasks.len()),
        };
        let secret = self.tasks[task].secret;
        let open = SecretOpen {
            secret,
            inode: inode(secret),
            syscall: OpenSyscall::Openat,
            path: secret_path(secret),
            resolved_path: secret_path(secret),
            fd: 3,
            kernel_action: Default::default(),
            caller_task: 0,
        };
        let input = self.event(actor, EventKind::SecretOpen(open));
        out.push(input);
    }

    /// A member connects (the kernel reports holders' connects only), inside its task's allowed
    /// range except one time in a hundred (unexpected destination).
    fn connect(&mut self, out: &mut Vec<Input>) {
        let actor = self.pick_member();
        let last = self.rng.below(250) as u8 + 1;
        let address = if self.rng.chance(1) { [203, 0, 113, last] } else { [10, 1, 2, last] };
        let connect = Connect {
            syscall: ConnectSyscall::Connect,
            destination: (address, 443).into(),
            kernel_action: KernelAction::None,
        };
        let input = self.event(actor, EventKind::Connect(connect));
        out.push(input);
    }

    /// A process reads another's environment (a harvest when the target holds a secret).
    fn harvest(&mut self, out: &mut Vec<Input>) {
        let actor = self.rng.below(self.live.len());
        let target = self.live[self.rng.below(self.live.len())].id.tgid;
        let input = self.event(
            actor,
            EventKind::Harvest(Harvest { kind: HarvestKind::Environ, target, kernel_action: KernelAction::None }),
        );
        out.push(input);
    }

    /// Watches a new secret file and starts, in `slot`, a task granted it and a token, rooted at
    /// a new child of init.
    fn start_task(&mut self, slot: usize, out: &mut Vec<Input>) {
        self.started += 1;
        let secret = SecretId(self.started);
        let name = secret_path(secret);
        let kind = SecretKind::File { inode: inode(secret), path: name.clone() };
        let at_ns = self.now();
        out.push(Input::SecretWatched { at_ns, secret: SecretSpec { id: secret, name, kind, fingerprint: None, decoy: false } });
        self.fork(0, out);
        self.stabilise_last();
        let root = self.stable - 1;
        self.live[root].task = Some(slot);
        let mut token = [0; 16];
        token[..4].copy_from_slice(&self.started.to_le_bytes());
        let task = Task { id: TaskId(format!("task-{}", self.started)), secret, token: Fingerprint(token) };
        let allowed: Destination = ALLOWED.parse().expect("a valid destination");
        let spec = TaskSpec {
            id: task.id.clone(),
            owner: "bench".to_owned(),
            roots: vec![self.live[root].id.tgid],
            cgroup: None,
            granted: vec![
                Grant::File { secret },
                Grant::Token { fingerprint: task.token, label: "GITHUB_TOKEN".to_owned() },
            ],
            allowed: Some(vec![allowed]),
            allowed_hosts: Vec::new(),
            ttl_ns: None,
            egress: false,
        };
        let at_ns = self.now();
        out.push(Input::TaskStarted { at_ns, task: spec });
        match self.tasks.get_mut(slot) {
            Some(ended) => *ended = task,
            None => self.tasks.push(task),
        }
    }

    /// Ends the oldest task and starts a replacement in its slot. The ended task's processes
    /// stay and count as the replacement's in the generator only: to the engine, their uses of
    /// its secrets are post-task reuse.
    fn replace_oldest_task(&mut self, out: &mut Vec<Input>) {
        let oldest = (self.started as usize - self.tasks.len()) % self.tasks.len();
        let at_ns = self.now();
        out.push(Input::TaskEnded { at_ns, id: self.tasks[oldest].id.clone() });
        self.start_task(oldest, out);
    }
}

fn inode(secret: SecretId) -> InodeId {
    InodeId { dev: 0x803, ino: 1_000_000 + u64::from(secret.0) }
}

fn secret_path(secret: SecretId) -> String {
    format!("/home/agent{}/.aws/credentials", secret.0)
}
