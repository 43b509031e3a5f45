//! Answers to control requests, and the restore of persisted tasks at start.

use std::{collections::BTreeSet, path::Path, str::FromStr as _};

use serde_json::json;
use tracing::info;

use super::{
    control::{
        duration_text, BaselineReset, Caller, ControlError, ControlReply, ControlRequest, EgressMode, ResolvedHosts, TaskRequest,
        TokenRequest,
    },
    outputs::TaskChange,
    registry::Persisted,
    tasks::TaskEntry,
    Daemon, DaemonError,
};
use crate::{
    clock,
    catalogue::pattern::{EnvPatterns, NamePattern},
    engine::{Destination, Grant, Input, Rejection, TaskId, TaskSpec, TaskState},
    event::{EnvScan, EnvSecret, EventKind, SecretId},
    procfs,
    secrets::{decoys, environ::scan_environ},
};

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ControlError {
    ControlError::Invalid { field: field.into(), message: message.into() }
}

fn valid_task_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// `allow` entries: a CIDR or address (with an optional port), `HOST:PORT` as the caller resolved
/// it, or a name the egress proxy matches (`HOST`, `*.DOMAIN`, either with a port); and the
/// entries by name, lower case.
fn destinations(allow: &[String], hosts: &ResolvedHosts) -> Result<(Vec<Destination>, Vec<String>), ControlError> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (index, text) in allow.iter().enumerate() {
        let field = format!("allow[{index}]");
        match Destination::from_str(text) {
            Ok(destination) => out.push(destination),
            // Matched by name only, at the proxy (and in TLS requests' `Host`).
            Err(_) if hosts.get(text).is_none() && is_host_pattern(text) => names.push(text.to_ascii_lowercase()),
            Err(parse_error) => {
                let Some((host, port)) = text.rsplit_once(':') else {
                    return Err(invalid(field, parse_error.to_string()));
                };
                port.parse::<u16>().map_err(|_| invalid(&field, format!("{port:?} is not a port")))?;
                let addresses = match hosts.get(text) {
                    Some(resolved) => resolved.clone().map_err(|message| invalid(&field, message))?,
                    None => return Err(invalid(&field, format!("{host:?} was not resolved before the request"))),
                };
                for address in addresses {
                    let exact = address.to_string();
                    out.push(Destination::from_str(&exact).map_err(|error| invalid(&field, error.to_string()))?);
                }
                names.push(text.to_ascii_lowercase());
            }
        }
    }
    Ok((out, names))
}

/// A host name, or `*.` and a domain, with an optional `:PORT`: letters, digits, `-` and `.`.
fn is_host_pattern(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid_name = !name.is_empty()
        && name.chars().any(|c| c.is_ascii_alphabetic())
        && name.split('.').all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    valid_name && port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port != 0))
}

impl Daemon {
    pub(super) fn handle_control(&mut self, request: ControlRequest) -> Result<ControlReply, DaemonError> {
        Ok(match request {
            ControlRequest::StartTask { request, caller, hosts } => self.start_task(request, caller, &hosts),
            ControlRequest::EndTask { id, caller } => self.end_task(&TaskId(id), caller),
            ControlRequest::ListTasks => Ok(self.list_tasks()),
            ControlRequest::RegisterToken { request, caller } => self.register_token(request, caller),
            ControlRequest::Status => Ok(self.status()),
            ControlRequest::Baselines => Ok(json!(self.engine.baselines())),
            ControlRequest::ResetBaselines { request, caller } => self.reset_baselines(request, caller),
        })
    }

    /// A process inside a task must never steer tasks: an agent could otherwise end its own task
    /// or grant itself secrets.
    fn check_caller(&mut self, caller: Caller) -> Result<(), ControlError> {
        let task = self.sensors.maps_mut().task_of(caller.pid).map(|handle| format!("kernel task {handle}"));
        let task = task.or_else(|| self.engine.task_of_pid(caller.pid).map(|(id, _)| id.to_string()));
        match task {
            Some(task) => Err(ControlError::Forbidden(format!(
                "process {} is a member of {task}; a task's processes cannot register, end or change tasks",
                caller.pid
            ))),
            None => Ok(()),
        }
    }

    fn start_task(&mut self, request: TaskRequest, caller: Caller, hosts: &ResolvedHosts) -> ControlReply {
        self.check_caller(caller)?;
        let id = TaskId(request.id.clone());
        if !valid_task_id(&request.id) {
            return Err(invalid("id", "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"));
        }
        if self.tasks.is_active(&id) {
            return Err(ControlError::Conflict(format!("task {id} is already active")));
        }
        let mut roots = Vec::new();
        if let Some(pid) = request.root_pid {
            procfs::exec_id(pid).ok_or_else(|| invalid("root_pid", format!("no process {pid}")))?;
            roots.push(pid);
        }
        if let Some(cgroup) = &request.cgroup {
            roots.extend(cgroup_pids(Path::new(cgroup)).map_err(|message| invalid("cgroup", message))?);
        }
        if request.root_pid.is_none() && request.cgroup.is_none() {
            return Err(invalid("root_pid", "a task needs a root_pid or a cgroup"));
        }
        if let (EgressMode::Proxy, Err(reason)) = (request.egress, &self.egress.running) {
            return Err(invalid("egress", format!("the egress proxy is not running: {reason}")));
        }
        let mut granted = Vec::new();
        for (index, path) in request.secrets.iter().enumerate() {
            let secret = self.grant_file(Path::new(path)).map_err(|message| invalid(format!("secrets[{index}]"), message))?;
            granted.push(Grant::File { secret });
        }
        granted.extend(self.env_grants(&request.env, roots.first().copied())?);
        let allowed = request.allow.as_deref().map(|allow| destinations(allow, hosts)).transpose()?;
        let (allowed, allowed_hosts) = allowed.map_or((None, Vec::new()), |(allowed, hosts)| (Some(allowed), hosts));
        let spec = TaskSpec {
            id: id.clone(),
            owner: request.owner.clone().unwrap_or_else(|| format!("uid:{}", caller.uid)),
            roots,
            cgroup: request.cgroup.clone(),
            granted,
            allowed,
            allowed_hosts,
            ttl_ns: request.ttl.map(|ttl| ttl.as_nanos() as u64),
            egress: request.egress == EgressMode::Proxy,
        };
        let started_ns = clock::boottime_ns();
        let entry = TaskEntry {
            handle: 0,
            state: TaskState::Active,
            request,
            spec: spec.clone(),
            started_ns,
            started_unix: unix_now(),
            members: BTreeSet::new(),
        };
        let previous = self.tasks.get(&id).cloned();
        self.tasks.insert(entry);
        let rejections = self.control_input(Input::TaskStarted { at_ns: started_ns, task: spec })?;
        if let Some(rejection) = rejections.first() {
            match previous {
                Some(previous) => self.tasks.insert(previous),
                None => self.tasks.remove(&id),
            }
            return Err(ControlError::Conflict(rejection.to_string()));
        }
        self.save_registry();
        self.export_task(&id, TaskChange::Started);
        let entry = self.tasks.get(&id).expect("just inserted");
        info!(task = %id, handle = entry.handle, "task started");
        Ok(self.task_json(entry))
    }

    /// Feeds a control input to the engine; what it rejected.
    fn control_input(&mut self, input: Input) -> Result<Vec<Rejection>, ControlError> {
        self.input(input).map_err(|error| ControlError::Internal(error.to_string()))
    }

    /// The id of the secret file at `path`, watching it if the catalogue does not.
    fn grant_file(&mut self, path: &Path) -> Result<SecretId, String> {
        if !path.is_absolute() {
            return Err(format!("{} is not an absolute path", path.display()));
        }
        if let Some(id) = self.secret_at(path) {
            return Ok(id);
        }
        let changes = self.secret_files.grant(path).map_err(|error| error.to_string())?;
        self.apply_file_changes(changes).map_err(|error| error.to_string())?;
        self.secret_at(path).ok_or_else(|| format!("{} cannot be watched", path.display()))
    }

    /// Env grants: each name's value in the root's environment, fingerprinted now; a name not
    /// set there is bound to the first value a member of the task is seen with.
    fn env_grants(&self, names: &[String], root: Option<u32>) -> Result<Vec<Grant>, ControlError> {
        let mut patterns = Vec::new();
        for (index, name) in names.iter().enumerate() {
            if name.is_empty() || name.contains(['=', '*', '\0']) {
                return Err(invalid(format!("env[{index}]"), format!("{name:?} is not a variable name")));
            }
            patterns.push(NamePattern::parse(name).map_err(|error| invalid(format!("env[{index}]"), error.to_string()))?);
        }
        let found = match root {
            Some(pid) if !names.is_empty() => match scan_environ(pid, &EnvPatterns::new(patterns), &self.key) {
                EnvScan::Scanned { secrets } => secrets,
                EnvScan::Unreadable | EnvScan::NotScanned => Vec::new(),
            },
            _ => Vec::new(),
        };
        Ok(names
            .iter()
            .map(|name| Grant::Env {
                name: name.clone(),
                fingerprint: found.iter().find(|secret| &secret.name == name).map(|EnvSecret { fingerprint, .. }| *fingerprint),
            })
            .collect())
    }

    fn end_task(&mut self, id: &TaskId, caller: Caller) -> ControlReply {
        self.check_caller(caller)?;
        let Some(entry) = self.tasks.get(id) else {
            return Err(ControlError::NotFound(id.to_string()));
        };
        if entry.state == TaskState::Active {
            self.control_input(Input::TaskEnded { at_ns: clock::boottime_ns(), id: id.clone() })?;
            self.save_registry();
            self.export_task(id, TaskChange::Ended);
            info!(task = %id, "task ended");
        }
        Ok(self.task_json(self.tasks.get(id).expect("present")))
    }

    fn reset_baselines(&mut self, request: BaselineReset, caller: Caller) -> ControlReply {
        self.check_caller(caller)?;
        let BaselineReset { secret } = request;
        if let Some(name) = secret.as_deref().filter(|name| !self.engine.baselines().contains_key(*name)) {
            return Err(ControlError::NotFound(format!("no baseline for {name}")));
        }
        self.control_input(Input::BaselineReset { at_ns: clock::boottime_ns(), secret: secret.clone() })?;
        info!(secret = secret.as_deref().unwrap_or("every secret"), "baseline reset");
        Ok(json!({ "reset": secret.map_or_else(|| json!("all"), |secret| json!(secret)) }))
    }

    fn register_token(&mut self, request: TokenRequest, caller: Caller) -> ControlReply {
        self.check_caller(caller)?;
        let TokenRequest { task, label, value, decoy } = request;
        let id = TaskId(task);
        if !self.tasks.is_active(&id) {
            return Err(ControlError::NotFound(id.to_string()));
        }
        // A broker asking for a decoy gets one made up here: the reply is the only place its
        // value ever appears.
        let (value, handed_out) = match (value, decoy) {
            (Some(value), _) => (zeroize::Zeroizing::new(value), false),
            (None, true) => {
                let made_up = decoys::fake_value(&label).map_err(|error| ControlError::Internal(error.to_string()))?;
                (made_up, true)
            }
            (None, false) => return Err(invalid("value", "a token needs a value (only a decoy can be made up)")),
        };
        let fingerprint = self.key.fingerprint(value.as_bytes());
        let grant = match decoy {
            true => Grant::Decoy { fingerprint, label: label.clone() },
            false => Grant::Token { fingerprint, label: label.clone() },
        };
        self.control_input(Input::GrantAdded { at_ns: clock::boottime_ns(), task: id.clone(), grant })?;
        let mut reply = json!({ "task": id, "label": label, "fingerprint_prefix": fingerprint.prefix(), "decoy": decoy });
        if handed_out {
            reply["value"] = json!(value.as_str());
        }
        Ok(reply)
    }

    fn task_json(&self, entry: &TaskEntry) -> serde_json::Value {
        let TaskEntry { handle, state, request, spec, started_ns: _, started_unix, members } = entry;
        let members_alive = self.sensors_members(*handle);
        json!({
            "id": spec.id,
            "state": state,
            "owner": spec.owner,
            "handle": handle,
            "root_pid": request.root_pid,
            "cgroup": request.cgroup,
            "secrets": request.secrets,
            "env": request.env,
            "allow": spec.allowed,
            "allow_names": spec.allowed_hosts,
            "egress": request.egress,
            "ttl": request.ttl.map(duration_text::format),
            "started_unix": started_unix,
            "members_seen": members.len(),
            "members_alive": members_alive,
        })
    }

    fn sensors_members(&self, handle: u32) -> usize {
        self.sensors.maps().members_of(handle).len()
    }

    fn list_tasks(&self) -> serde_json::Value {
        serde_json::Value::Array(self.tasks.entries().map(|entry| self.task_json(entry)).collect())
    }

    /// The daemon's own counters, with the events received per kind.
    fn daemon_counters(&self) -> serde_json::Value {
        let mut counters = serde_json::to_value(&self.counters).expect("counters always serialize");
        let events: serde_json::Map<String, serde_json::Value> = EventKind::NAMES
            .iter()
            .zip(&self.events_received)
            .map(|(kind, counter)| ((*kind).to_owned(), counter.get().into()))
            .collect();
        counters["events"] = events.into();
        counters
    }

    fn status(&self) -> serde_json::Value {
        let lost = self.sensors.lost().unwrap_or_default();
        let engine = self.engine.stats();
        json!({
            "tier": self.tier,
            "tasks": self.tasks.counts(),
            "secrets": {
                "files_watched": self.watched.count(),
                "known": self.engine.secrets_known(),
                "bindings": self.engine.bindings(),
                "files": self.secret_files.stats(),
            },
            "processes_tracked": self.engine.processes_tracked(),
            "daemon": self.daemon_counters(),
            "latency": self.latency.summary(),
            "export_dropped": self.exports.dropped(),
            "api_refused": self.api_refusals(),
            "registry_write_failures": self.registry.failures(),
            "kernel": {
                "lost": lost.iter().collect::<std::collections::BTreeMap<_, _>>(),
                "decode_errors": self.sensors.decode_errors(),
                "maps": self.map_status(),
                "fail_closed": self.sensors.failed_closed(),
                "gaps": self.sensors.gaps().iter().map(|gap| json!({"capability": gap.capability, "reason": gap.reason})).collect::<Vec<_>>(),
                "syscall_hooks_attached": self.sensors.syscall_hooks_attached(),
                "file_guard": self.sensors.guard().map(|counters| counters.snapshot()),
                "listers": self.sensors.listers(),
            },
            "engine": engine,
            "egress": self.egress_status(),
        })
    }

    /// Where the egress proxy listens and what tasks trust, or why it is not running.
    fn egress_status(&self) -> serde_json::Value {
        match &self.egress.running {
            Ok(listening) => json!({
                "running": true,
                "address": listening.address,
                "address6": listening.address6,
                "ca": listening.ca,
            }),
            Err(reason) => json!({ "running": false, "reason": reason }),
        }
    }

    /// Task API refusals by reason, as counted by the API server.
    fn api_refusals(&self) -> serde_json::Map<String, serde_json::Value> {
        use prometheus::core::Collector as _;
        let families = self.metrics.api_refused.collect();
        families
            .iter()
            .flat_map(|family| family.get_metric())
            .filter_map(|metric| {
                let reason = metric.get_label().iter().find(|label| label.name() == "reason")?.value().to_owned();
                Some((reason, json!(metric.get_counter().get_value() as u64)))
            })
            .collect()
    }

    /// Each kernel map's size and failed writes.
    fn map_status(&self) -> Vec<serde_json::Value> {
        let failures = self.sensors.map_failures().unwrap_or_default();
        self.map_sizes
            .by_map()
            .iter()
            .map(|&(map, entries)| {
                let failed = failures.iter().find(|failed| failed.map == map).map_or(0, |failed| failed.failures);
                json!({ "map": map, "entries": entries, "write_failures": failed })
            })
            .collect()
    }

    /// Gives the engine the persisted tasks after a restart, under the handles they had: their
    /// members still alive rejoin them, ended and expired ones are kept so post-task reuse is
    /// caught, new tasks get handles never issued before, and the kernel maps are rebuilt from
    /// the engine's effects.
    pub(super) fn restore_tasks(&mut self, persisted: Persisted) -> Result<(), DaemonError> {
        let now = clock::boottime_ns();
        let Persisted { next_handle, tasks } = persisted;
        self.input(Input::HandlesIssued { at_ns: now, next_handle })?;
        for mut entry in tasks {
            // Boot time restarts at 0 after a reboot: such a task's processes are all gone.
            if entry.started_ns > now && entry.state == TaskState::Active {
                entry.state = TaskState::Ended;
            }
            let alive: Vec<u32> =
                entry.members.iter().filter(|&&member| procfs::is_alive(member)).map(|member| member.tgid).collect();
            let mut spec = entry.spec.clone();
            spec.roots = alive;
            let (id, handle, state, started_ns) = (spec.id.clone(), entry.handle, entry.state, entry.started_ns.min(now));
            self.tasks.insert(entry);
            let rejections = self.input(Input::TaskRestored { at_ns: started_ns, task: spec, handle, state })?;
            if let Some(rejection) = rejections.first() {
                tracing::warn!(task = %id, %rejection, "cannot restore task");
                self.tasks.remove(&id);
                continue;
            }
            self.export_task(&id, TaskChange::Restored);
            info!(task = %id, ?state, "task restored");
        }
        Ok(())
    }
}

/// The pids in a cgroup v2 directory.
fn cgroup_pids(dir: &Path) -> Result<Vec<u32>, String> {
    let procs = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).map_err(|error| format!("cannot read {}: {error}", procs.display()))?;
    Ok(text.lines().filter_map(|line| line.trim().parse().ok()).collect())
}
