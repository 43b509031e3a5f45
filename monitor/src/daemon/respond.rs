//! What the daemon does with a finding: the configured actions per rule, then publication.

use std::sync::Arc;

use serde::Serialize;
use tracing::warn;

use super::{
    outputs::{ExportSender, Record, Revocation},
    tasks::TaskTable,
};
use crate::{
    actions::{
        kill::{kill_process, kill_task, KillOutcome, TaskKill},
        plan::{Action, ActionPlan},
    },
    engine::{Finding, Rule, UseVia},
    event::KernelAction,
    sensors::{maps::KernelMaps, tier::Tier},
};

/// What became of one action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionResult {
    pub action: Action,
    /// `killed_in_kernel`, `signalled`, `gone`, `killed_n`, `queued`, `published`, `failed`, ...
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A finding as it is published: the engine's finding, what was done about it, and its wall-clock
/// time, taken once so that every record of it says the same.
#[derive(Clone, Debug)]
pub struct Report {
    pub finding: Finding,
    pub actions: Vec<ActionResult>,
    pub time: std::time::SystemTime,
}

/// Everything an action may touch.
pub struct Responders<'a> {
    pub maps: &'a mut KernelMaps,
    pub tasks: &'a TaskTable,
    pub tier: Tier,
    pub exports: &'a ExportSender,
}

/// Carries out the plan for `finding`. `kernel_action` is what the kernel already did to the
/// event that fired it.
pub fn respond(finding: Finding, kernel_action: KernelAction, plan: &ActionPlan, with: &mut Responders<'_>) -> Report {
    let mut results = Vec::new();
    // A decoy touched outside any task is a backup or an indexer far more often than an attack:
    // reported, never acted on (the kernel does not kill it either).
    let reported_only = finding.rule == Rule::DecoyTouched && finding.task.is_none();
    for &action in plan.actions(finding.rule) {
        let result = match action {
            Action::Alert => done(action, "published"),
            Action::KillProcess | Action::KillTask | Action::Deny | Action::Revoke if reported_only => {
                done(action, "not_applied")
            }
            Action::KillProcess | Action::Deny if kernel_action == KernelAction::Killed => {
                done(action, "killed_in_kernel")
            }
            // Refused, and perhaps the owner's own new process: the use is stopped, its work is not.
            Action::KillProcess | Action::KillTask if kernel_action == KernelAction::Denied && finding.task_unrecorded => {
                done(action, "spared_task_unrecorded")
            }
            Action::Deny if kernel_action == KernelAction::Denied && finding.via == Some(UseVia::Egress) => {
                done(action, "refused_by_proxy")
            }
            Action::Deny if kernel_action == KernelAction::Denied => done(action, "denied_in_kernel"),
            Action::KillProcess => kill_one(action, &finding, with, None),
            Action::Deny => kill_one(
                action,
                &finding,
                with,
                Some(format!("this use was not refused at its syscall on the {} tier, so deny killed the process instead", with.tier)),
            ),
            Action::KillTask => kill_all(&finding, with),
            Action::Revoke => {
                with.exports.send(Record::Revoke(Arc::new(Revocation {
                    task: finding.task.as_ref().map(|task| task.0.clone()),
                    secret_id: finding.secret.id.map(|id| id.0),
                    secret_name: finding.secret.name.clone(),
                    fingerprint_prefix: finding.secret.fingerprint_prefix.clone(),
                    rule: finding.rule.name(),
                    at_unix: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |since| since.as_secs()),
                })));
                done(action, "queued")
            }
        };
        results.push(result);
    }
    let time = super::wallclock::from_boottime(finding.at_ns);
    Report { finding, actions: results, time }
}

fn done(action: Action, result: &str) -> ActionResult {
    ActionResult { action, result: result.to_owned(), detail: None }
}

fn failed(action: Action, error: &dyn std::error::Error) -> ActionResult {
    warn!(?action, %error, "action failed");
    ActionResult { action, result: "failed".to_owned(), detail: Some(error.to_string()) }
}

fn kill_one(action: Action, finding: &Finding, with: &mut Responders<'_>, detail: Option<String>) -> ActionResult {
    // A finding about the host (a full kernel map the daemon alone failed to write) names no one.
    if finding.process.tgid == 0 {
        return ActionResult { action, result: "no_process".to_owned(), detail: None };
    }
    match kill_process(finding.process, with.maps) {
        Ok(KillOutcome::Signalled) => ActionResult { action, result: "signalled".to_owned(), detail },
        Ok(KillOutcome::Gone) => ActionResult { action, result: "gone".to_owned(), detail },
        Err(error) => failed(action, &error),
    }
}

fn kill_all(finding: &Finding, with: &mut Responders<'_>) -> ActionResult {
    let action = Action::KillTask;
    let (Some(task), Some(handle)) = (&finding.task, finding.task_handle) else {
        return ActionResult { action, result: "no_task".to_owned(), detail: None };
    };
    let cgroup = with.tasks.cgroup(task, handle);
    let TaskKill { signalled, failures } = kill_task(handle, cgroup, with.maps);
    // A fixed result keeps the metric's label set small; the count goes in the detail.
    match failures.first() {
        None => ActionResult { action, result: "killed".to_owned(), detail: Some(format!("{signalled} processes signalled")) },
        Some(first) => {
            warn!(error = %first, failures = failures.len(), signalled, "kill_task failed for some members");
            ActionResult {
                action,
                result: "failed".to_owned(),
                detail: Some(format!("{signalled} processes signalled, {} failures; first: {first}", failures.len())),
            }
        }
    }
}
