//! The running daemon: sensors → engine → actions and exports, and the control requests that
//! register and end tasks. One loop owns every piece of state, so nothing is shared mutably.

pub mod control;
mod egress;
pub mod feed;
pub mod instance;
mod handlers;
mod kernel_sync;
pub mod latency;
pub mod metrics;
pub mod outputs;
pub mod record;
mod registry;
pub mod respond;
pub mod schema;
pub mod tasks;
pub mod wallclock;

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use monitor_common::event::exec::CaptureLimits;
use prometheus::IntCounter;
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use self::{
    control::ControlMessage,
    metrics::Metrics,
    outputs::{ExportSender, Record, TaskChange},
    feed::FindingsFeed,
    kernel_sync::WatchedFiles,
    record::{RecordError, Recorder},
    registry::{Registry, RegistryError},
    respond::{respond, Responders},
    tasks::TaskTable,
};
use self::latency::LatencyHistogram;
use crate::{
    actions::plan::ActionPlan,
    clock,
    catalogue::{
        self,
        pattern::{EnvPatterns, PathPattern},
        Catalogue, CatalogueConfig,
    },
    doctor,
    engine::{Effect, Engine, EngineConfig, Input, Rejection, Rule, SecretKind, SecretSpec, TaskState},
    event::{Captured, EnvScan, Event, EventKind, Exec, ExecId, KernelAction, SecretId, TlsWrite},
    fingerprint::{FingerprintKey, KeyError},
    procfs,
    secrets::{
        decoys::{self, DecoyConfig},
        environ::{self, scan_environ_bytes},
        http::{self, TlsConfig},
        tokens,
        files::{Change, FilesError, SecretFiles},
    },
    sensors::{
        loss::LossCounts,
        sizes::{MapSizeOverrides, MapSizes},
        tier::{Tier, TierError},
        MapWriteFailures, SensorError, SensorOptions, Sensors,
    },
};

/// How often time passes for the engine with no other input (TTL expiry).
const TICK: Duration = Duration::from_secs(1);
/// How often gauges and the kernel's loss counters are brought up to date.
const REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error("cannot load the fingerprint key")]
    Key(#[from] KeyError),
    #[error("cannot start the sensors")]
    Sensors(#[from] SensorError),
    #[error("cannot find the users' home directories")]
    Homes(#[from] catalogue::homes::HomesError),
    #[error("cannot watch the secret files")]
    Files(#[from] FilesError),
    #[error("cannot start a state file's writer")]
    RegistryWriter(#[source] std::io::Error),
    #[error("cannot use the task registry")]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot identify credwatch's own executable (/proc/self/exe)")]
    OwnExecutable(#[source] std::io::Error),
}

/// What the daemon is configured with: the config's sections it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub engine: EngineConfig,
    /// Where the daemon keeps its state: the task registry, the host key.
    pub state_dir: PathBuf,
    /// A fleet-wide fingerprint key instead of the host key.
    pub key_file: Option<PathBuf>,
    pub catalogue: CatalogueConfig,
    pub actions: ActionPlan,
    /// Kernel map sizes replacing the host's defaults.
    pub maps: MapSizeOverrides,
    pub decoys: DecoyConfig,
    /// How much of an exec's command line and environment the kernel captures.
    pub capture: CaptureLimits,
    /// Credentials in HTTP requests sent over TLS.
    pub tls: TlsConfig,
    /// The egress proxy that tasks' HTTP(S) requests go through.
    pub egress: crate::egress::EgressConfig,
    /// The executables that read environments only to list processes.
    pub harvest: crate::sensors::listers::HarvestConfig,
    /// This machine's name in the findings the API serves, as in the exported records.
    pub host: String,
}

pub struct DaemonOptions {
    pub config: DaemonConfig,
    pub ring_buffer_bytes: u32,
    pub record: Option<PathBuf>,
    /// Updated in place; served by the metrics endpoint.
    pub metrics: Arc<Metrics>,
    /// Findings, task changes and revocations for the exporters.
    pub exports: ExportSender,
}

/// Counters of what the daemon did and could not do; reported by `status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DaemonCounters {
    pub execs_env_scanned: u64,
    /// Execs of credwatch's own executable (`task exec` carries the granted environment by
    /// design) whose environment was not judged.
    pub execs_own: u64,
    /// Reads of another process's environment or memory by a process running credwatch's own
    /// executable (another daemon's environment scans), not judged.
    pub harvests_by_credwatch: u64,
    /// Execs whose captured command line, environment or words were cut (see
    /// `credwatch_exec_cut_total`).
    pub exec_cut: u64,
    /// HTTP/1.x requests seen in TLS writes and scanned for credentials.
    pub tls_requests_scanned: u64,
    /// Of those, requests whose head did not end inside what the kernel captured: scanned up to
    /// the cut (see `credwatch_tls_requests_total`).
    pub tls_requests_cut: u64,
    /// TLS writes that looked like a request but could not be copied or parsed: not scanned.
    pub tls_requests_unreadable: u64,
    pub findings: u64,
    pub control_requests: u64,
    /// Decoy files that could not be planted (each logged).
    pub decoys_unplanted: u64,
}

/// What one input to the engine came to.
#[derive(Debug, Default)]
struct Decided {
    rejections: Vec<Rejection>,
    /// The rule and finding id for which the egress proxy refuses the request.
    refused: Option<(Rule, String)>,
}

pub struct Daemon {
    tier: Tier,
    sensors: Sensors,
    engine: Engine,
    secret_files: SecretFiles,
    env_patterns: EnvPatterns,
    /// Cookies that carry credentials, by name.
    tls_cookies: Vec<String>,
    /// Shared with the egress proxy, which fingerprints what it finds in requests.
    key: Arc<FingerprintKey>,
    egress: egress::Egress,
    /// Decoy files: watched like secrets, announced to the engine as decoys.
    decoy_files: Vec<PathBuf>,
    /// credwatch's executable: its processes are never the subject of a finding.
    own_executable: procfs::FileIdentity,
    /// Its file name, to test execs cheaply before looking at what they run.
    own_name: Option<std::ffi::OsString>,
    watched: WatchedFiles,
    tasks: TaskTable,
    registry: registry::Writer,
    /// Learned baselines, persisted when they change.
    baselines: registry::Writer,
    recorder: Option<Recorder>,
    feed: FindingsFeed,
    /// This machine's name in the feed's findings.
    host: String,
    plan: ActionPlan,
    counters: DaemonCounters,
    reported_loss: LossCounts,
    /// Entries of each kernel map, as loaded.
    map_sizes: MapSizes,
    /// Failed map writes as last reported, by map.
    reported_map_failures: Vec<MapWriteFailures>,
    reported_decode_errors: u64,
    reported_export_drops: u64,
    latency: LatencyHistogram,
    metrics: Arc<Metrics>,
    /// `credwatch_events_total` per kind, in `EventKind::NAMES` order: looked up once, not per
    /// event.
    events_received: [IntCounter; EventKind::NAMES.len()],
    exports: ExportSender,
    batch: Vec<Event>,
}

impl Daemon {
    /// Probes the kernel, loads the sensors, resolves the catalogue and restores persisted tasks.
    /// Must run inside a tokio runtime.
    pub fn start(options: DaemonOptions) -> Result<Self, DaemonError> {
        let DaemonOptions { config, ring_buffer_bytes, record, metrics, exports } = options;
        raise_open_files_limit();
        let plan = config.actions.clone();
        let key = Arc::new(FingerprintKey::for_host(&config.state_dir, config.key_file.as_deref())?);
        let map_sizes = MapSizes::for_host().with(&config.maps);
        let mut egress = egress::start(&config.egress, &config.state_dir, &key, &metrics.registry);
        let probed = doctor::inspect().tier()?;
        let options = SensorOptions {
            ring_buffer_bytes,
            ignored_tgid: Some(std::process::id()),
            tier: probed,
            map_sizes,
            capture: config.capture,
            file_guard: true,
            socket_hooks: true,
            tls: config.tls.enabled,
            memory_hooks: true,
            listers: config.harvest.listers.clone(),
        };
        let mut sensors = load_sensors(options)?;
        // What loaded: a tier whose security hooks failed to load falls back to the tracepoint tier.
        let tier = sensors.tier();
        kernel_sync::set_enforcement(sensors.maps_mut(), &plan);
        for gap in sensors.gaps() {
            warn!(capability = gap.capability, reason = %gap.reason, "sensor gap");
        }
        egress.attach(&config.egress.ports, &mut sensors);
        let mut catalogue = Catalogue::from_config(&config.catalogue);
        let homes = catalogue::homes::resolve(config.catalogue.homes.as_deref())?;
        let decoy_files = decoys::paths(&config.decoys, &homes);
        let (planted, failures) = decoys::plant(&decoy_files);
        for failure in &failures {
            warn!(error = %crate::error_chain::ErrorChain(failure), "a decoy was not planted");
        }
        info!(planted, failed = failures.len(), decoys = decoy_files.len(), "decoys in place");
        // Decoys are watched like any secret file; the engine knows them apart.
        catalogue.files.extend(decoy_files.iter().filter_map(|path| PathPattern::parse(&path.to_string_lossy()).ok()));
        let secret_files = SecretFiles::new(&catalogue, &homes)?;
        let engine = Engine::new(config.engine);
        let counters = DaemonCounters { decoys_unplanted: failures.len() as u64, ..DaemonCounters::default() };
        let registry = Registry::new(&config.state_dir);
        let persisted = registry.load()?;
        let registry = registry::Writer::start(registry).map_err(DaemonError::RegistryWriter)?;
        let baselines_file = Registry::baselines(&config.state_dir);
        let learned = baselines_file.read()?;
        let baselines = registry::Writer::start(baselines_file).map_err(DaemonError::RegistryWriter)?;
        let recorder = record.as_deref().map(Recorder::create).transpose()?;
        let mut daemon = Self {
            tier,
            sensors,
            engine,
            secret_files,
            env_patterns: catalogue.env.clone(),
            tls_cookies: config.tls.cookies.clone(),
            key,
            egress,
            own_executable: procfs::own_executable().map_err(DaemonError::OwnExecutable)?,
            own_name: std::env::current_exe().ok().and_then(|path| path.file_name().map(ToOwned::to_owned)),
            watched: WatchedFiles::default(),
            tasks: TaskTable::default(),
            registry,
            baselines,
            recorder,
            feed: FindingsFeed::default(),
            host: config.host.clone(),
            plan,
            counters,
            decoy_files,
            reported_loss: LossCounts::default(),
            map_sizes,
            reported_map_failures: Vec::new(),
            reported_decode_errors: 0,
            reported_export_drops: 0,
            latency: LatencyHistogram::default(),
            events_received: EventKind::NAMES.map(|kind| metrics.events.with_label_values(&[kind])),
            metrics,
            exports,
            batch: Vec::new(),
        };
        for hook in daemon.sensors.hooks() {
            daemon.metrics.sensor_info.with_label_values(&[&tier.to_string(), hook]).set(1);
        }
        for gap in daemon.sensors.gaps() {
            daemon.metrics.sensor_gaps.with_label_values(&[gap.capability]).set(1);
        }
        for (map, entries) in map_sizes.by_map() {
            daemon.metrics.map_entries.with_label_values(&[map]).set(i64::from(entries));
        }
        let initial = daemon.secret_files.initial();
        daemon.apply_file_changes(initial)?;
        daemon.scan_running()?;
        if let Some(baselines) = learned {
            daemon.input(Input::BaselinesRestored { at_ns: clock::boottime_ns(), baselines })?;
        }
        daemon.restore_tasks(persisted)?;
        info!(tier = %tier, secrets = daemon.watched.count(), tasks = daemon.tasks.entries().count(), "sensors attached");
        Ok(daemon)
    }

    pub fn feed(&self) -> FindingsFeed {
        self.feed.clone()
    }

    /// Runs until `shutdown` resolves (to the name of what stopped it), answering `control`.
    pub async fn run(
        mut self,
        mut control: mpsc::Receiver<ControlMessage>,
        shutdown: impl Future<Output = &'static str>,
    ) -> Result<(), DaemonError> {
        let mut tick = tokio::time::interval(TICK);
        let mut refresh = tokio::time::interval(REFRESH);
        tokio::pin!(shutdown);
        let stop = loop {
            tokio::select! {
                stop = &mut shutdown => break stop,
                result = self.sensors.next_batch(&mut self.batch) => {
                    result?;
                    self.handle_batch()?;
                }
                changes = self.secret_files.changes() => self.apply_file_changes(changes?)?,
                Some(query) = self.egress.queries.recv() => self.answer_egress(query)?,
                Some(ControlMessage { request, reply }) = control.recv() => {
                    self.counters.control_requests += 1;
                    self.catch_up()?;
                    let answer = self.handle_control(request)?;
                    // The caller may have gone away; its request was still carried out.
                    let _ = reply.send(answer);
                }
                _ = tick.tick() => {
                    self.catch_up()?;
                    self.check_maps()?;
                    self.relax_syscall_hooks();
                    self.save_baselines();
                    self.input(Input::Tick { at_ns: clock::boottime_ns() })?;
                }
                _ = refresh.tick() => self.refresh_metrics(),
            }
        };
        info!(signal = stop, "stopping");
        self.refresh_metrics();
        self.save_registry();
        self.save_baselines();
        if let Some(recorder) = &mut self.recorder {
            recorder.flush()?;
        }
        drop(self);
        info!("sensors detached");
        Ok(())
    }

    /// Processes that started before the daemon, judged once from /proc as if they had just
    /// exec'd, parents first: their names fill findings' ancestry, and their environments and
    /// command lines are scanned like an exec's.
    fn scan_running(&mut self) -> Result<(), DaemonError> {
        let own = std::process::id();
        for process in procfs::running().into_iter().filter(|process| process.id.tgid != own) {
            let procfs::Running { id, parent, uid, executable } = process;
            // A process gone meanwhile is scanned with what could be read.
            let block = |name| environ::read_block(id.tgid, name).unwrap_or_default();
            let captured = Captured { argv: block("cmdline"), env: block("environ"), argv_cut: false, env_cut: false };
            let argv0 = captured.argv.split(|&byte| byte == 0).next().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            let mut exec = Exec {
                parent,
                uid,
                filename: executable,
                argv0,
                env: EnvScan::NotScanned,
                tokens: Vec::new(),
                captured: Some(captured),
            };
            self.scan_exec(id, &mut exec);
            let event = Event {
                ktime_ns: clock::boottime_ns(),
                process: id,
                thread: id.tgid,
                truncated: false,
                read_failed: false,
                kind: EventKind::Exec(exec),
            };
            self.input(Input::Event(event))?;
        }
        Ok(())
    }

    /// Scans what the kernel captured at an exec: the catalogue's variables by name, and every
    /// long word of the command line and of the environment's values by fingerprint. The
    /// captured bytes are wiped when this returns; what was cut is counted.
    fn scan_exec(&mut self, process: ExecId, exec: &mut Exec) {
        let captured = exec.captured.take().unwrap_or_default();
        exec.env = scan_environ_bytes(&captured.env, &self.env_patterns, &self.key);
        let (mut tokens, tokens_cut) = tokens::candidates(&captured.argv, &captured.env, &self.key);
        let EnvScan::Scanned { secrets } = &exec.env else { unreachable!("a block is always scanned") };
        // A catalogue variable is already judged by its name.
        tokens.retain(|token| !secrets.iter().any(|secret| secret.fingerprint == token.fingerprint));
        exec.tokens = tokens;
        self.counters.execs_env_scanned += 1;
        for (part, cut) in [("argv", u64::from(captured.argv_cut)), ("env", u64::from(captured.env_cut)), ("tokens", tokens_cut as u64)] {
            if cut > 0 {
                self.counters.exec_cut += 1;
                self.metrics.exec_cut.with_label_values(&[part]).inc_by(cut);
            }
        }
        // `task exec` carries the granted environment by design: credwatch's own executable is
        // never judged. The name is a cheap first test; the running executable decides.
        let own_name = std::path::Path::new(&exec.filename).file_name() == self.own_name.as_deref();
        let carries = !secrets.is_empty() || !exec.tokens.is_empty();
        if carries && own_name && procfs::runs_executable(process, self.own_executable) {
            self.counters.execs_own += 1;
            exec.env = EnvScan::NotScanned;
            exec.tokens.clear();
        }
    }

    /// Scans what the kernel captured of a request written to a TLS library for credentials; the
    /// captured bytes are wiped when this returns. `read_failed`: the kernel could not copy it.
    fn scan_request(&mut self, write: &mut TlsWrite, read_failed: bool) {
        let captured = write.captured.take().unwrap_or_default();
        let scan = http::scan(&captured, &self.tls_cookies, &self.key);
        let result = match (read_failed, scan.unreadable, scan.cut) {
            (true, _, _) => {
                self.counters.tls_requests_unreadable += 1;
                "read_failed"
            }
            (false, true, _) => {
                self.counters.tls_requests_unreadable += 1;
                "unreadable"
            }
            (false, false, true) => {
                self.counters.tls_requests_cut += 1;
                "cut"
            }
            (false, false, false) => "scanned",
        };
        if !scan.unreadable {
            self.counters.tls_requests_scanned += 1;
        }
        self.metrics.tls_requests.with_label_values(&[result]).inc();
        write.server = scan.server;
        write.credentials = scan.credentials;
    }

    /// Applies every event the kernel has already submitted, before a control input or a tick
    /// stamped now: a use is judged against the state at its own time, so a task's end never
    /// overtakes the open that preceded it.
    fn catch_up(&mut self) -> Result<(), DaemonError> {
        self.sensors.drain_now(&mut self.batch);
        if self.batch.is_empty() {
            return Ok(());
        }
        self.handle_batch()
    }

    fn handle_batch(&mut self) -> Result<(), DaemonError> {
        let mut batch = std::mem::take(&mut self.batch);
        for mut event in batch.drain(..) {
            self.events_received[event.kind.index()].inc();
            log_event(&event);
            let ktime_ns = event.ktime_ns;
            match &mut event.kind {
                EventKind::Exec(exec) => self.scan_exec(event.process, exec),
                EventKind::TlsWrite(write) => self.scan_request(write, event.read_failed),
                EventKind::Exit(_) => {
                    if let Err(error) = self.sensors.maps_mut().clear_verdict(event.process.tgid) {
                        warn!(%error, "cannot clear a kill verdict");
                    }
                }
                EventKind::SecretOpen(open) => {
                    open.resolved_path = self.watched.path(open.secret).unwrap_or_default().to_owned();
                }
                // Another credwatch (a second daemon, `demo`) reads environments to scan them:
                // that is never a harvest. The security hooks still refuse what the rules deny;
                // the memory hooks leave its environment reads alone, but not its other reaches.
                EventKind::Harvest(_) if procfs::runs_executable(event.process, self.own_executable) => {
                    self.counters.harvests_by_credwatch += 1;
                    continue;
                }
                EventKind::Fork(_) | EventKind::Harvest(_) | EventKind::Connect(_) => {}
            }
            self.input(Input::Event(event))?;
            let latency_ns = clock::boottime_ns().saturating_sub(ktime_ns);
            self.latency.record(latency_ns);
            self.metrics.event_latency.observe(latency_ns as f64 / 1e9);
        }
        self.batch = batch;
        if let Some(recorder) = &mut self.recorder {
            recorder.flush()?;
        }
        Ok(())
    }

    /// Feeds one input to the engine and carries out what it decided; returns what the engine
    /// rejected.
    fn input(&mut self, input: Input) -> Result<Vec<Rejection>, DaemonError> {
        Ok(self.decide(input, None)?.rejections)
    }

    /// Feeds one input to the engine and carries out what it decided. `refusing`: the input is a
    /// request the egress proxy refuses when one of these rules fires (or fired before) for it,
    /// which the actions are told.
    fn decide(&mut self, input: Input, refusing: Option<&dyn Fn(Rule) -> bool>) -> Result<Decided, DaemonError> {
        // What the kernel already did about the event that fires a finding, if it was an event.
        let kernel_action = match &input {
            Input::Event(event) => event.kind.kernel_action(),
            _ => KernelAction::None,
        };
        let outcome = self.engine.apply(&input);
        let is_idle_tick = matches!(input, Input::Tick { .. }) && outcome.findings.is_empty() && outcome.effects.is_empty();
        if let (Some(recorder), false) = (&mut self.recorder, is_idle_tick) {
            recorder.write(&input)?;
        }
        kernel_sync::apply(&outcome.effects, self.sensors.maps_mut(), &mut self.watched, &mut self.tasks);
        let mut decided = Decided::default();
        let refuses = |rule| refusing.is_some_and(|refusing| refusing(rule));
        for repeat in outcome.repeats.iter().filter(|repeat| refuses(repeat.rule)) {
            decided.refused.get_or_insert((repeat.rule, schema::finding_id(repeat.first_at_ns, repeat.process, repeat.rule)));
        }
        for effect in outcome.effects {
            match effect {
                Effect::TaskFinished { task, handle: _, state: TaskState::Expired } => {
                    self.export_task(&task, TaskChange::Expired);
                    self.save_registry();
                }
                Effect::Rejected(rejection) => decided.rejections.push(rejection),
                _ => {}
            }
        }
        for finding in outcome.findings {
            if refuses(finding.rule) {
                decided.refused.get_or_insert((finding.rule, schema::finding_id(finding.at_ns, finding.process, finding.rule)));
            }
            let kernel_action = if refuses(finding.rule) { KernelAction::Denied } else { kernel_action };
            self.counters.findings += 1;
            self.metrics.findings.with_label_values(&[finding.rule.name(), finding.severity.name()]).inc();
            let mut with =
                Responders { maps: self.sensors.maps_mut(), tasks: &self.tasks, tier: self.tier, exports: &self.exports };
            let report = respond(finding, kernel_action, &self.plan, &mut with);
            for result in &report.actions {
                self.metrics.actions.with_label_values(&[result.action.name(), &result.result]).inc();
            }
            let (time, body) = schema::Body::finding(&report);
            let line = schema::unsequenced(&self.host, time, &body);
            warn!(
                rule = report.finding.rule.name(),
                severity = %report.finding.severity,
                pid = report.finding.process.tgid,
                task = report.finding.task.as_ref().map(|task| task.0.as_str()),
                secret = %report.finding.secret.name,
                detail = %report.finding.detail,
                "finding"
            );
            self.feed.publish(Arc::from(line));
            self.exports.send(Record::Finding(Arc::new(report)));
        }
        Ok(decided)
    }

    /// Tells the exporters about a task's lifecycle change.
    fn export_task(&self, id: &crate::engine::TaskId, change: TaskChange) {
        if let Some(entry) = self.tasks.get(id) {
            let at_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            self.exports.send(Record::Task { change, at_unix, task: Arc::new(entry.clone()) });
        }
    }

    fn apply_file_changes(&mut self, changes: Vec<Change>) -> Result<(), DaemonError> {
        for change in changes {
            match change {
                Change::Watch { id, path, inode } => {
                    debug!(secret = id.0, path = %path.display(), ino = inode.ino, "watching secret file");
                    let path = path.display().to_string();
                    let decoy = self.decoy_files.iter().any(|decoy| decoy.as_os_str() == path.as_str());
                    let kind = SecretKind::File { inode, path: path.clone() };
                    let secret = SecretSpec { id, name: path, kind, fingerprint: None, decoy };
                    self.input(Input::SecretWatched { at_ns: clock::boottime_ns(), secret })?;
                }
                Change::Unwatch { id, inode } => {
                    debug!(secret = id.0, ino = inode.ino, "unwatching secret inode");
                    self.input(Input::InodeUnwatched { at_ns: clock::boottime_ns(), secret: id, inode })?;
                }
            }
        }
        Ok(())
    }

    /// Failed kernel map writes since the last look: counted, and an input for the engine, which
    /// raises a finding once per episode.
    fn check_maps(&mut self) -> Result<(), DaemonError> {
        let failures = match self.sensors.map_failures() {
            Ok(failures) => failures,
            Err(error) => {
                warn!(%error, "cannot read the map failure counters");
                return Ok(());
            }
        };
        for now in &failures {
            let before = self.reported_map_failures.iter().find(|before| before.map == now.map).map_or(0, |b| b.failures);
            if now.failures <= before {
                continue;
            }
            warn!(map = now.map, failures = now.failures, "a kernel map is full");
            self.metrics.map_write_failures.with_label_values(&[now.map]).inc_by(now.failures - before);
            let process = (now.last_tgid != 0)
                .then(|| procfs::exec_id(now.last_tgid).unwrap_or(ExecId { tgid: now.last_tgid, start_time: 0 }));
            let (map, failures) = (now.map.to_owned(), now.failures);
            self.input(Input::MapWriteFailed { at_ns: clock::boottime_ns(), map, failures, process })?;
        }
        let task_of = |failures: &[MapWriteFailures]| {
            failures.iter().find(|map| map.map == "TASK_OF").map_or(0, |map| map.failures)
        };
        let settled = task_of(&failures) == task_of(&self.reported_map_failures);
        self.reported_map_failures = failures;
        if settled && self.sensors.failed_closed().contains(&"membership") {
            self.reopen_membership(task_of(&self.reported_map_failures));
        }
        let failed = self.sensors.failed_closed();
        for judgement in ["membership", "holdings"] {
            self.metrics.fail_closed.with_label_values(&[judgement]).set(i64::from(failed.contains(&judgement)));
        }
        Ok(())
    }

    /// After a membership the kernel could not record, on a tick without another such failure:
    /// records every task process the engine knows that the kernel lacks. Only on a later tick
    /// that finds none missing does the kernel judge by membership again: a child forked by a
    /// process before it was written back is missing too, and its fork reaches the engine by
    /// then. Never once process events were lost: a member the engine never saw would be taken
    /// for a process in no task.
    fn reopen_membership(&mut self, task_of_failures: u64) {
        use monitor_common::event::EventKind as Kind;
        let lost = self.sensors.lost().map_or(1, |lost| lost.get(Kind::Fork) + lost.get(Kind::Exec) + lost.get(Kind::Exit));
        if lost > 0
            || kernel_sync::record_memberships(self.sensors.maps_mut(), self.engine.memberships())
                != kernel_sync::Recorded::All
        {
            return;
        }
        match self.sensors.reopen_membership(task_of_failures) {
            Ok(true) => info!("every task process is recorded again: the kernel judges by task membership again"),
            Ok(false) => {}
            Err(error) => warn!(%error, "cannot clear the membership fail-closed flag"),
        }
    }

    /// Detaches the syscall programs when nothing needs them, and says which way they are.
    fn relax_syscall_hooks(&mut self) {
        let tier = self.tier.to_string();
        for (hook, attached) in self.sensors.relax_syscall_hooks() {
            self.metrics.sensor_info.with_label_values(&[&tier, &hook]).set(i64::from(attached));
        }
    }

    /// Brings gauges and the kernel's counters into the metrics, and logs new losses.
    fn refresh_metrics(&mut self) {
        match self.sensors.lost() {
            Ok(lost) => {
                for (kind, count) in lost.iter() {
                    let before = self.reported_loss.iter().find(|&(name, _)| name == kind).map_or(0, |(_, n)| n);
                    if count > before {
                        warn!(kind, lost = count, "ring buffer full: events lost since start");
                        self.metrics.events_lost.with_label_values(&[kind]).inc_by(count - before);
                    }
                }
                self.reported_loss = lost;
            }
            Err(error) => warn!(%error, "cannot read the loss counters"),
        }
        let decode_errors = self.sensors.decode_errors();
        self.metrics.decode_errors.inc_by(decode_errors - self.reported_decode_errors);
        self.reported_decode_errors = decode_errors;
        let export_drops = self.exports.dropped();
        self.metrics.export_dropped.inc_by(export_drops - self.reported_export_drops);
        self.reported_export_drops = export_drops;
        for (state, count) in self.tasks.counts() {
            self.metrics.tasks.with_label_values(&[state]).set(count as i64);
        }
        self.metrics.secrets_watched.set(self.watched.count() as i64);
        self.metrics.processes_tracked.set(self.engine.processes_tracked() as i64);
        let learned = self.engine.baselines().values().filter(|baseline| baseline.learned).count();
        let learning = self.engine.baselines().len() - learned;
        self.metrics.baselines.with_label_values(&["learned"]).set(learned as i64);
        self.metrics.baselines.with_label_values(&["learning"]).set(learning as i64);
        let files = self.secret_files.stats();
        for (reason, count) in [
            ("watch_limit", files.over_watch_limit),
            ("permission_denied", files.permission_denied),
            ("other_error", files.other_errors),
        ] {
            self.metrics.secret_files_unwatched.with_label_values(&[reason]).set(count as i64);
        }
    }

    /// Persists the baselines if they changed since the last time.
    fn save_baselines(&mut self) {
        if self.engine.take_baselines_changed() {
            self.baselines.save(self.engine.baselines());
        }
    }

    fn save_registry(&self) {
        let persisted = registry::Persisted { next_handle: self.engine.next_handle(), tasks: self.tasks.entries().collect() };
        self.registry.save(&persisted);
    }

    /// The id of the watched secret file at `path`, if any.
    fn secret_at(&self, path: &std::path::Path) -> Option<SecretId> {
        self.secret_files.id_of(path)
    }
}

/// Every watched secret file costs two descriptors (the walk's handle, the file guard's mark):
/// the soft limit (often 1024) goes up to the hard one, so that a host with many secret files
/// does not starve the API of descriptors.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write one rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                warn!(error = %std::io::Error::last_os_error(), "cannot raise the open files limit");
            }
        }
    }
}

/// The sensors of `tier`. If the security hooks are refused although doctor's probe loaded (a
/// kernel older than they need, 5.15), the tracepoint tier's, with a warning: a daemon that
/// sees less beats no daemon. Likewise without the cgroup socket hooks when the kernel refuses
/// them.
fn load_sensors(mut options: SensorOptions) -> Result<Sensors, SensorError> {
    let cause = |error: &SensorError| std::error::Error::source(error).map(ToString::to_string).unwrap_or_default();
    loop {
        match Sensors::load(options.clone()) {
            Err(error) if options.tier.has_security_hooks() => {
                warn!(%error, cause = %cause(&error), tier = %options.tier, "the tier's security hooks did not load; falling back to the tracepoint tier");
                options.tier = Tier::Tracepoint;
            }
            Err(error @ SensorError::SocketHooks { .. }) if options.socket_hooks => {
                warn!(%error, cause = %cause(&error), "connects are watched at sys_enter instead, and not refused");
                options.socket_hooks = false;
            }
            Err(error @ SensorError::MemoryHooks { .. }) if options.memory_hooks => {
                warn!(%error, cause = %cause(&error), "reaches into secret holders are watched at the syscalls instead");
                options.memory_hooks = false;
            }
            result => return result,
        }
    }
}

/// One debug line per event (trace for forks): what `--log debug` shows.
fn log_event(event: &Event) {
    let Event { process, kind, .. } = event;
    match kind {
        EventKind::Exec(exec) => debug!(
            pid = process.tgid,
            ppid = exec.parent.tgid,
            uid = exec.uid,
            filename = %exec.filename,
            argv0 = %exec.argv0,
            "exec"
        ),
        EventKind::Fork(fork) => trace!(pid = process.tgid, child = fork.child.tgid, "fork"),
        EventKind::Exit(exit) => debug!(pid = process.tgid, status = %exit.status, "exit"),
        EventKind::SecretOpen(open) => {
            debug!(pid = process.tgid, secret = open.secret.0, path = %open.path, "secret open")
        }
        EventKind::Harvest(harvest) => {
            debug!(pid = process.tgid, target = harvest.target, kind = ?harvest.kind, "harvest")
        }
        EventKind::Connect(connect) => {
            debug!(pid = process.tgid, destination = %connect.destination, "connect")
        }
        EventKind::TlsWrite(_) => debug!(pid = process.tgid, "tls request"),
    }
}
