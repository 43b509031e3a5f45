//! The record of what credwatch found and did: one JSON object per finding, task lifecycle change
//! and asynchronous action result, written to the audit log and POSTed to the generic webhook. A
//! finding's record is also what the task API serves (`GET /v1/findings`, `credwatch findings
//! --json`), without the audit stream's `seq`, and what Alertmanager annotations flatten
//! (`process.pid` as `process_pid`). The field names are a stable interface (README, "Findings");
//! a change to them raises [`VERSION`]. Each field is
//! mapped here from the daemon's types by name, so a field added there does not leak into the
//! schema unnoticed. No record carries a secret's value: secrets appear by id, name and
//! fingerprint prefix only.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::wallclock;
use crate::daemon::outputs::{Revocation, TaskChange};
use crate::{
    daemon::{
        control::TaskRequest,
        respond::{ActionResult, Report},
        tasks::TaskEntry,
    },
    engine::{Ancestor, Finding, SecretLabel, Sprawl, TaskState, UseVia},
    event::ExecId,
};

/// The schema's version, in every record. 2: findings gained `id`, and the task API serves the
/// same record.
pub const VERSION: u32 = 2;

/// Numbers and stamps records: `seq` counts up from 1 in each run of the daemon, so a gap shows
/// that records were lost.
#[derive(Debug)]
pub struct Stamper {
    host: String,
    seq: AtomicU64,
}

impl Stamper {
    pub fn new(host: String) -> Self {
        Self { host, seq: AtomicU64::new(0) }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The record as one line of JSON, without the newline, numbered in the audit stream.
    pub fn line(&self, time: SystemTime, body: &Body<'_>) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        record_line(&self.host, Some(seq), time, body)
    }
}

/// The record as the task API serves it: the same object without `seq`, which numbers the audit
/// stream only.
pub fn unsequenced(host: &str, time: SystemTime, body: &Body<'_>) -> String {
    record_line(host, None, time, body)
}

fn record_line(host: &str, seq: Option<u64>, time: SystemTime, body: &Body<'_>) -> String {
    let record = AuditRecord { version: VERSION, seq, time: wallclock::rfc3339(time), host, body };
    serde_json::to_string(&record).expect("audit records always serialize")
}

#[derive(Serialize)]
struct AuditRecord<'a> {
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    time: String,
    host: &'a str,
    #[serde(flatten)]
    body: &'a Body<'a>,
}

/// What a record is about; `type` names it.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body<'a> {
    Finding(FindingRecord<'a>),
    Task(TaskRecord<'a>),
    Action(ActionRecord<'a>),
}

impl<'a> Body<'a> {
    /// A finding and its time.
    pub fn finding(report: &'a Report) -> (SystemTime, Self) {
        let Report { finding, actions, time } = report;
        let Finding {
            rule,
            severity,
            at_ns,
            process,
            ancestry,
            task,
            task_handle: _,
            task_unrecorded: _,
            owner_task,
            secret,
            destination,
            via,
            server,
            target,
            detail,
            sprawl,
        } = finding;
        let record = FindingRecord {
            id: finding_id(*at_ns, *process, *rule),
            rule: rule.name(),
            severity: severity.name(),
            task: task.as_ref().map(|task| task.0.as_str()),
            owner_task: owner_task.as_ref().map(|task| task.0.as_str()),
            process: Process::from(*process),
            ancestry: ancestry
                .iter()
                .map(|Ancestor { process, filename }| AncestorRecord {
                    process: Process::from(*process),
                    filename: filename.as_deref(),
                })
                .collect(),
            secret: SecretRecord::from(secret),
            destination: destination.map(|destination| destination.to_string()),
            via: *via,
            server: server.as_deref(),
            target: target.map(Process::from),
            detail,
            sprawl: sprawl.map(|Sprawl { processes, tasks }| SprawlRecord { processes, tasks }),
            kernel_time_ns: *at_ns,
            actions: actions
                .iter()
                .map(|ActionResult { action, result, detail }| ActionTaken {
                    action: action.name(),
                    result,
                    detail: detail.as_deref(),
                })
                .collect(),
        };
        (*time, Self::Finding(record))
    }

    /// A task's lifecycle change and its time.
    pub fn task(change: TaskChange, at_unix: u64, entry: &'a TaskEntry) -> (SystemTime, Self) {
        let TaskEntry { handle, state, request, spec, started_ns: _, started_unix, members: _ } =
            entry;
        let TaskRequest { id, root_pid, cgroup, secrets, env, allow, ttl, owner: _, egress } = request;
        let record = TaskRecord {
            change,
            task: id,
            state: match state {
                TaskState::Active => "active",
                TaskState::Ended => "ended",
                TaskState::Expired => "expired",
            },
            owner: &spec.owner,
            handle: *handle,
            root_pid: *root_pid,
            cgroup: cgroup.as_deref(),
            secrets,
            env,
            allow: allow.as_deref(),
            ttl_seconds: ttl.map(|ttl| ttl.as_secs()),
            egress: *egress,
            started_unix: *started_unix,
        };
        (UNIX_EPOCH + Duration::from_secs(at_unix), Self::Task(record))
    }

    /// How a revocation the `revoke` action queued ended.
    pub fn revocation(revocation: &'a Revocation, delivered: bool, attempts: u32, error: Option<&'a str>) -> Self {
        let Revocation { task, secret_id, secret_name, fingerprint_prefix, rule, at_unix: _ } = revocation;
        Self::Action(ActionRecord {
            action: "revoke",
            result: if delivered { "delivered" } else { "failed" },
            attempts,
            detail: error,
            rule,
            task: task.as_deref(),
            secret: SecretRecord {
                id: *secret_id,
                name: secret_name,
                fingerprint_prefix: fingerprint_prefix.as_deref(),
            },
        })
    }
}

#[derive(Debug, Serialize)]
pub struct FindingRecord<'a> {
    /// The same in every record of this finding (API, audit log, webhook, Alertmanager): its
    /// kernel time, process and rule.
    id: String,
    rule: &'static str,
    severity: &'static str,
    task: Option<&'a str>,
    owner_task: Option<&'a str>,
    process: Process,
    ancestry: Vec<AncestorRecord<'a>>,
    secret: SecretRecord<'a>,
    destination: Option<String>,
    /// How the secret was used (`open`, `env`, `argv`, `tls`), for the rules about a use.
    via: Option<UseVia>,
    /// A TLS request's `Host` header as sent.
    server: Option<&'a str>,
    target: Option<Process>,
    detail: &'a str,
    sprawl: Option<SprawlRecord>,
    /// `CLOCK_BOOTTIME` of the kernel event, to order records from one boot exactly.
    kernel_time_ns: u64,
    /// What was done at once; a revocation's delivery follows as an `action` record.
    actions: Vec<ActionTaken<'a>>,
}

/// A finding's id: the same in the audit log, the alerts, the API and the proxy's refusals.
pub fn finding_id(at_ns: u64, process: ExecId, rule: crate::engine::Rule) -> String {
    format!("{at_ns}-{}-{}", process.tgid, rule.name())
}

/// A process as (pid, start time in boot-time ticks): pids alone are reused.
#[derive(Debug, Serialize)]
struct Process {
    pid: u32,
    start_time: u64,
}

impl From<ExecId> for Process {
    fn from(ExecId { tgid, start_time }: ExecId) -> Self {
        Self { pid: tgid, start_time }
    }
}

#[derive(Debug, Serialize)]
struct AncestorRecord<'a> {
    #[serde(flatten)]
    process: Process,
    filename: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct SecretRecord<'a> {
    id: Option<u32>,
    name: &'a str,
    fingerprint_prefix: Option<&'a str>,
}

impl<'a> From<&'a SecretLabel> for SecretRecord<'a> {
    fn from(SecretLabel { id, name, fingerprint_prefix }: &'a SecretLabel) -> Self {
        Self { id: id.map(|id| id.0), name, fingerprint_prefix: fingerprint_prefix.as_deref() }
    }
}

#[derive(Debug, Serialize)]
struct SprawlRecord {
    processes: u64,
    tasks: u64,
}

#[derive(Debug, Serialize)]
struct ActionTaken<'a> {
    action: &'static str,
    result: &'a str,
    detail: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct TaskRecord<'a> {
    change: TaskChange,
    task: &'a str,
    state: &'static str,
    owner: &'a str,
    /// The kernel's number for this run of the task.
    handle: u32,
    root_pid: Option<u32>,
    cgroup: Option<&'a str>,
    /// Secret files granted, as paths.
    secrets: &'a [String],
    /// Environment variables granted, by name.
    env: &'a [String],
    allow: Option<&'a [String]>,
    ttl_seconds: Option<u64>,
    /// `direct` or `proxy`.
    egress: super::control::EgressMode,
    started_unix: u64,
}

#[derive(Debug, Serialize)]
pub struct ActionRecord<'a> {
    action: &'static str,
    result: &'static str,
    attempts: u32,
    detail: Option<&'a str>,
    rule: &'a str,
    task: Option<&'a str>,
    secret: SecretRecord<'a>,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use serde_json::{json, Value};

    use super::*;
    use crate::{
        actions::plan::Action,
        engine::{Rule, Severity, TaskId},
        event::SecretId,
    };

    /// A cross-task reuse finding, killed in the kernel.
    pub fn report() -> Report {
        Report {
            finding: Finding {
                rule: Rule::CrossTaskReuse,
                severity: Severity::Critical,
                at_ns: crate::clock::boottime_ns(),
                process: ExecId { tgid: 4242, start_time: 99 },
                ancestry: vec![Ancestor {
                    process: ExecId { tgid: 4242, start_time: 99 },
                    filename: Some("/usr/bin/cat".into()),
                }],
                task: Some(TaskId("agent-b".into())),
                task_handle: Some(2),
                task_unrecorded: false,
                owner_task: Some(TaskId("agent-a".into())),
                secret: SecretLabel {
                    id: Some(SecretId(3)),
                    name: "/home/agent/.aws/credentials".into(),
                    fingerprint_prefix: Some("0badc0de".into()),
                },
                destination: None,
                via: Some(UseVia::Open),
                server: None,
                target: None,
                detail: "a process of task agent-b opened /home/agent/.aws/credentials".into(),
                sprawl: None,
            },
            actions: vec![ActionResult {
                action: Action::KillProcess,
                result: "killed_in_kernel".into(),
                detail: None,
            }],
            time: SystemTime::now(),
        }
    }

    #[test]
    fn a_finding_record_has_the_documented_fields() {
        let stamper = Stamper::new("node-1".into());
        let report = report();
        let (time, body) = Body::finding(&report);
        let first: Value = serde_json::from_str(&stamper.line(time, &body)).unwrap();
        let second: Value = serde_json::from_str(&stamper.line(time, &body)).unwrap();
        assert_eq!((first["seq"].clone(), second["seq"].clone()), (json!(1), json!(2)));
        let mut keys: Vec<_> = first.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "actions",
                "ancestry",
                "destination",
                "detail",
                "host",
                "id",
                "kernel_time_ns",
                "owner_task",
                "process",
                "rule",
                "secret",
                "seq",
                "server",
                "severity",
                "sprawl",
                "target",
                "task",
                "time",
                "type",
                "version",
                "via"
            ]
        );
        assert_eq!(first["version"], VERSION);
        assert_eq!(first["id"], format!("{}-4242-cross_task_reuse", first["kernel_time_ns"]));
        let served: Value = serde_json::from_str(&unsequenced("node-1", time, &body)).unwrap();
        let mut without_seq = first.clone();
        without_seq.as_object_mut().unwrap().remove("seq");
        assert_eq!(served, without_seq, "the API serves the audit record, without the audit stream's seq");
        assert_eq!(first["type"], "finding");
        assert_eq!(first["host"], "node-1");
        assert_eq!(first["process"], json!({ "pid": 4242, "start_time": 99 }));
        assert_eq!(first["ancestry"][0], json!({ "pid": 4242, "start_time": 99, "filename": "/usr/bin/cat" }));
        assert_eq!(
            first["secret"],
            json!({ "id": 3, "name": "/home/agent/.aws/credentials", "fingerprint_prefix": "0badc0de" })
        );
        assert_eq!(
            first["actions"],
            json!([{ "action": "kill_process", "result": "killed_in_kernel", "detail": null }])
        );
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn task_and_revocation_records_name_what_changed() {
        let stamper = Stamper::new("node-1".into());
        let entry: TaskEntry = serde_json::from_value(json!({
            "handle": 7, "state": "ended",
            "request": { "id": "agent-a", "root_pid": 100, "secrets": ["/root/.aws/credentials"], "env": ["GITHUB_TOKEN"], "ttl": "15m" },
            "spec": { "id": "agent-a", "owner": "uid 0" },
            "started_ns": 1, "started_unix": 1700000000, "members": []
        }))
        .unwrap();
        let (time, body) = Body::task(TaskChange::Ended, 1_700_000_100, &entry);
        let task: Value = serde_json::from_str(&stamper.line(time, &body)).unwrap();
        assert_eq!(task["type"], "task");
        assert_eq!(task["time"], "2023-11-14T22:15:00.000Z");
        assert_eq!(task["change"], "ended");
        assert_eq!(task["task"], "agent-a");
        assert_eq!(task["owner"], "uid 0");
        assert_eq!(task["ttl_seconds"], 900);
        assert_eq!(task["env"], json!(["GITHUB_TOKEN"]));

        let revocation = Arc::new(Revocation {
            task: Some("agent-b".into()),
            secret_id: None,
            secret_name: "GITHUB_TOKEN".into(),
            fingerprint_prefix: Some("12345678".into()),
            rule: "secret_propagation",
            at_unix: 0,
        });
        let body = Body::revocation(&revocation, false, 8, Some("connecting to http://vault/"));
        let action: Value = serde_json::from_str(&stamper.line(SystemTime::now(), &body)).unwrap();
        assert_eq!(action["seq"], 2);
        assert_eq!(action["type"], "action");
        assert_eq!((action["action"].clone(), action["result"].clone()), (json!("revoke"), json!("failed")));
        assert_eq!(action["secret"], json!({ "id": null, "name": "GITHUB_TOKEN", "fingerprint_prefix": "12345678" }));
    }
}
