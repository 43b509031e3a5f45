//! Behaviour that spans the rules: bindings, inheritance, process lifetimes, dedup.

use super::{
    scenario::{fingerprint, task, Scenario, AWS, KUBE},
    BindingKind, Effect, Input, Rejection, Rule, SecretLabel, Severity, TaskCounts, TaskId, TaskState,
};
use crate::event::{KernelAction, SecretId};
use monitor_common::maps::policy;

fn id(name: &str) -> TaskId {
    TaskId(name.to_owned())
}

fn aws_label() -> SecretLabel {
    SecretLabel { id: Some(SecretId(AWS)), name: "/root/.aws/credentials".to_owned(), fingerprint_prefix: None }
}

#[test]
fn auto_binding_is_released_at_task_end_and_claimed_again() {
    let mut scenario = Scenario::new();
    scenario.watch_file(AWS, "/root/.aws/credentials").spawn(1, 100).spawn(1, 200).start(task("a").root(100));
    scenario.effects();
    scenario.open(100, AWS);
    assert_eq!(
        scenario.effects(),
        [
            Effect::SecretBound { secret: aws_label(), task: id("a"), binding: BindingKind::Auto },
            Effect::ProcessHolds { process: scenario.id(100) },
            Effect::FileBinding { secret: SecretId(AWS), binding: policy::ACTIVE, grantees: vec![1] },
        ]
    );
    assert_eq!(scenario.engine().bindings(), 1);

    scenario.end("a");
    assert_eq!(
        scenario.effects(),
        [
            Effect::TaskFinished { task: id("a"), handle: 1, state: TaskState::Ended },
            Effect::SecretReleased { secret: aws_label(), task: id("a") },
            Effect::FileBinding { secret: SecretId(AWS), binding: policy::UNBOUND, grantees: vec![] },
        ]
    );
    assert_eq!(scenario.engine().bindings(), 0);

    scenario.start(task("b").root(200)).open(200, AWS);
    scenario.assert_silent();
    assert!(scenario.effects().contains(&Effect::SecretBound {
        secret: aws_label(),
        task: id("b"),
        binding: BindingKind::Auto
    }));
}

#[test]
fn an_explicit_grant_takes_over_an_auto_binding() {
    let mut scenario = Scenario::new();
    scenario
        .watch_file(AWS, "/root/.aws/credentials")
        .spawn(1, 100)
        .spawn(1, 200)
        .start(task("a").root(100))
        .open(100, AWS);
    scenario.effects();
    scenario.start(task("b").root(200).file(AWS));
    let effects = scenario.effects();
    assert!(effects.contains(&Effect::SecretReleased { secret: aws_label(), task: id("a") }), "{effects:?}");
    scenario.open(100, AWS);
    assert_eq!(scenario.only_finding().rule, Rule::CrossTaskReuse);
}

#[test]
fn forked_children_inherit_the_task_and_held_secrets() {
    let mut scenario = Scenario::new();
    scenario.watch_file(AWS, "/root/.aws/credentials").spawn(1, 100).start(task("a").root(100)).open(100, AWS);
    scenario.effects();
    scenario.spawn(100, 101);
    assert_eq!(scenario.effects(), [Effect::ProcessHolds { process: scenario.id(101) }]);
    assert_eq!(scenario.engine().task_of_pid(101), Some((&id("a"), TaskState::Active)));
    scenario.exec(101, "/bin/sh", &[]).spawn(101, 102);
    assert_eq!(scenario.engine().task_of_pid(102), Some((&id("a"), TaskState::Active)));
}

#[test]
fn a_reused_pid_inherits_nothing() {
    let mut scenario = Scenario::without_auto_mode();
    scenario
        .watch_file(AWS, "/root/.aws/credentials")
        .spawn(1, 100)
        .start(task("a").root(100).file(AWS))
        .open(100, AWS)
        .exit(100);
    assert_eq!(scenario.engine().task_of_pid(100), None);
    // The new pid 100 is seen first opening the secret: its exit was never reported either.
    scenario.open(100, AWS);
    let finding = scenario.only_finding();
    assert_eq!(finding.rule, Rule::UntaskedAccess);
    assert_eq!(finding.task, None);
    assert_eq!(finding.ancestry.len(), 1, "a stranger has no known parent");
}

#[test]
fn a_pid_reused_without_an_exit_event_replaces_the_old_process() {
    let mut scenario = Scenario::new();
    scenario.spawn(1, 100).start(task("a").root(100));
    let old = scenario.id(100);
    scenario.spawn(1, 100);
    assert_ne!(scenario.id(100), old);
    assert_eq!(scenario.engine().task_of(old), None);
    assert_eq!(scenario.engine().task_of_pid(100), None);
}

#[test]
fn repeats_fire_once_per_process_and_are_counted() {
    let mut scenario = Scenario::without_auto_mode();
    scenario.watch_file(AWS, "/root/.aws/credentials").spawn(1, 300);
    for _ in 0..1000 {
        scenario.open(300, AWS);
    }
    assert_eq!(scenario.findings().len(), 1);
    assert_eq!(scenario.engine().stats().suppressed_repeats, 999);
    assert_eq!(scenario.engine().stats().findings.get(&Rule::UntaskedAccess), Some(&1));

    // Another process is another finding.
    scenario.spawn(1, 301).open(301, AWS);
    assert_eq!(scenario.findings().len(), 1);
}

#[test]
fn a_root_announced_before_its_process_joins_when_it_appears() {
    let mut scenario = Scenario::new();
    scenario.watch_file(AWS, "/root/.aws/credentials").start(task("a").root(500).file(AWS));
    assert!(scenario.effects().contains(&Effect::TaskRootPending { task: id("a"), handle: 1, pid: 500 }));
    scenario.spawn(1, 500);
    assert_eq!(scenario.effects(), [Effect::TaskJoined { task: id("a"), handle: 1, process: scenario.id(500) }]);
    scenario.open(500, AWS);
    scenario.assert_silent();
}

#[test]
fn existing_descendants_join_with_their_root() {
    let mut scenario = Scenario::new();
    scenario.spawn(1, 100).spawn(100, 101).spawn(1, 200).start(task("a").root(100));
    assert_eq!(
        scenario.effects(),
        [
            Effect::TaskStarted { task: id("a"), handle: 1, allowed: None, egress: false },
            Effect::TaskJoined { task: id("a"), handle: 1, process: scenario.id(100) },
            Effect::TaskJoined { task: id("a"), handle: 1, process: scenario.id(101) },
        ]
    );
    assert_eq!(scenario.engine().task_of_pid(200), None);
}

#[test]
fn bad_task_inputs_are_rejected_not_fatal() {
    let mut scenario = Scenario::new();
    scenario.spawn(1, 100).start(task("a").root(100)).start(task("b").root(100)).start(task("a")).end("nope");
    let rejections: Vec<Rejection> = scenario
        .effects()
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Rejected(rejection) => Some(rejection),
            _ => None,
        })
        .collect();
    assert_eq!(
        rejections,
        [
            Rejection::RootInOtherTask { task: id("b"), pid: 100, other: id("a") },
            Rejection::TaskAlreadyActive { task: id("a") },
            Rejection::UnknownTask { task: id("nope") },
        ]
    );
    assert_eq!(rejections[0].to_string(), "pid 100 cannot be a root of task b: it belongs to active task a");
    assert_eq!(scenario.engine().stats().rejected, 3);
    assert_eq!(scenario.engine().task_counts(), TaskCounts { active: 2, ended: 0, expired: 0 });
}

#[test]
fn an_env_grant_by_name_binds_the_first_value_seen() {
    let token = fingerprint(0x77);
    let mut scenario = Scenario::new();
    scenario
        .spawn(1, 100)
        .spawn(1, 200)
        .start(task("a").root(100).env("NPM_TOKEN", None))
        .start(task("b").root(200))
        .exec(100, "/usr/bin/npm", &[("NPM_TOKEN", token)]);
    scenario.assert_silent();
    let bound = scenario.effects().into_iter().find_map(|effect| match effect {
        Effect::SecretBound { task, binding, .. } => Some((task, binding)),
        _ => None,
    });
    assert_eq!(bound, Some((id("a"), BindingKind::Granted)));

    // Granted, so it survives the task: a later untasked use is post-task reuse.
    scenario.exec(200, "/usr/bin/npm", &[("NPM_TOKEN", token)]);
    assert_eq!(scenario.only_finding().rule, Rule::CrossTaskReuse);
    scenario.end("a").spawn(1, 300).exec(300, "/usr/bin/npm", &[("NPM_TOKEN", token)]);
    assert_eq!(scenario.only_finding().rule, Rule::PostTaskReuse);
}

#[test]
fn a_watched_files_value_is_recognised_in_an_environment() {
    let value = fingerprint(0x3c);
    let mut scenario = Scenario::new();
    scenario
        .watch_file_holding(KUBE, "/root/.kube/token", value)
        .spawn(1, 100)
        .spawn(1, 200)
        .start(task("a").root(100).file(KUBE))
        .start(task("b").root(200))
        .exec(200, "/usr/bin/kubectl", &[("KUBE_TOKEN", value)]);
    let finding = scenario.only_finding();
    assert_eq!(finding.rule, Rule::CrossTaskReuse);
    assert_eq!(finding.secret.id, Some(SecretId(KUBE)));
    assert_eq!(finding.secret.fingerprint_prefix.as_deref(), Some("3c3c3c3c"));
    assert_eq!(
        finding.detail,
        "a process of task b started with KUBE_TOKEN in its environment, holding the value of /root/.kube/token, \
         which is bound to task a"
    );
}

#[test]
fn a_value_seen_before_it_was_watched_keeps_its_binding() {
    let value = fingerprint(0x3c);
    let mut scenario = Scenario::new();
    scenario
        .spawn(1, 100)
        .spawn(1, 200)
        .start(task("a").root(100).token(value, "cluster token"))
        .start(task("b").root(200))
        .watch_file_holding(KUBE, "/root/.kube/token", value)
        .open(200, KUBE);
    let finding = scenario.only_finding();
    assert_eq!(finding.rule, Rule::CrossTaskReuse);
    assert_eq!(finding.owner_task, Some(id("a")));
    assert_eq!(finding.secret.name, "/root/.kube/token");
}

#[test]
fn a_denied_open_is_judged_but_holds_nothing() {
    let mut scenario = Scenario::new();
    scenario
        .watch_file(AWS, "/root/.aws/credentials")
        .spawn(1, 100)
        .spawn(1, 200)
        .start(task("a").root(100).file(AWS))
        .start(task("b").root(200).allow(&[]))
        .open_with(200, AWS, KernelAction::Denied);
    let finding = scenario.only_finding();
    assert_eq!((finding.rule, finding.severity), (Rule::CrossTaskReuse, Severity::Critical));
    scenario.connect(200, "203.0.113.1:443");
    scenario.assert_silent();
}

#[test]
fn exited_processes_are_forgotten_once_no_descendant_needs_them() {
    let mut scenario = Scenario::new();
    scenario.spawn(1, 100).spawn(100, 101);
    let tracked = scenario.engine().processes_tracked();
    scenario.exit(100);
    assert_eq!(scenario.engine().processes_tracked(), tracked, "kept as the ancestor of 101");
    scenario.exit(101);
    assert_eq!(scenario.engine().processes_tracked(), tracked - 2);
}

#[test]
fn time_never_runs_backwards_for_expiry() {
    let mut scenario = Scenario::new();
    scenario.spawn(1, 100).start(task("a").root(100).ttl(100)).tick(1_000);
    assert_eq!(scenario.engine().task_of_pid(100), Some((&id("a"), TaskState::Expired)));
    assert_eq!(scenario.engine().task_counts(), TaskCounts { active: 0, ended: 0, expired: 1 });
    scenario.end("a");
    assert_eq!(scenario.engine().task_of_pid(100), Some((&id("a"), TaskState::Expired)));
    assert_eq!(scenario.engine().stats().rejected, 0, "ending an expired task is normal");
}

#[test]
fn two_grantees_share_a_secret_and_a_third_task_is_reuse_naming_both() {
    let mut scenario = Scenario::new();
    scenario
        .watch_file(AWS, "/root/.aws/credentials")
        .spawn(1, 100)
        .spawn(1, 200)
        .spawn(1, 300)
        .start(task("a").root(100).file(AWS))
        .start(task("b").root(200).file(AWS))
        .start(task("x").root(300));
    let bindings: Vec<_> =
        scenario.effects().into_iter().filter(|effect| matches!(effect, Effect::FileBinding { .. })).collect();
    assert_eq!(
        bindings.last(),
        Some(&Effect::FileBinding { secret: SecretId(AWS), binding: policy::ACTIVE, grantees: vec![1, 2] }),
        "the second grant adds an owner, it does not displace the first"
    );
    scenario.open(100, AWS).open(200, AWS);
    scenario.assert_silent();

    scenario.open(300, AWS);
    let finding = scenario.only_finding();
    assert_eq!(finding.rule, Rule::CrossTaskReuse);
    assert_eq!(finding.task, Some(id("x")));
    assert_eq!(finding.task_handle, Some(3));
    assert_eq!(finding.detail, "a process of task x opened /root/.aws/credentials, which is bound to tasks a, b");
}

#[test]
fn ending_one_grantee_leaves_the_other_its_secret() {
    let mut scenario = Scenario::new();
    scenario
        .watch_file(AWS, "/root/.aws/credentials")
        .spawn(1, 100)
        .spawn(1, 200)
        .start(task("a").root(100).file(AWS))
        .start(task("b").root(200).file(AWS))
        .end("a");
    assert!(scenario.effects().ends_with(&[
        Effect::TaskFinished { task: id("a"), handle: 1, state: TaskState::Ended },
        Effect::FileBinding { secret: SecretId(AWS), binding: policy::ACTIVE, grantees: vec![2] },
    ]));
    scenario.open(200, AWS);
    scenario.assert_silent();
    scenario.open(100, AWS);
    let finding = scenario.only_finding();
    assert_eq!(finding.rule, Rule::PostTaskReuse, "a left-over process of the ended grantee");
    assert_eq!(finding.owner_task, Some(id("b")));

    scenario.end("b");
    assert!(scenario.effects().contains(&Effect::FileBinding {
        secret: SecretId(AWS),
        binding: policy::FINISHED,
        grantees: vec![]
    }));
}

#[test]
fn an_end_that_arrives_after_the_read_it_follows_judges_the_read_as_cross_task() {
    // The daemon drains the kernel's events before a control input: the read comes first.
    let mut scenario = Scenario::new();
    scenario
        .watch_file(AWS, "/root/.aws/credentials")
        .spawn(1, 100)
        .spawn(1, 200)
        .start(task("a").root(100).file(AWS))
        .start(task("b").root(200))
        .open_with(200, AWS, KernelAction::Killed)
        .end("b");
    let finding = scenario.only_finding();
    assert_eq!(finding.rule, Rule::CrossTaskReuse, "b was active at the read");
    assert_eq!(finding.task, Some(id("b")));
    assert_eq!(finding.task_handle, Some(2), "kill_task strikes b's lifetime");
}

#[test]
fn a_member_the_engine_missed_is_judged_by_the_kernels_membership() {
    let mut scenario = Scenario::new();
    scenario
        .watch_file(AWS, "/root/.aws/credentials")
        .spawn(1, 100)
        .spawn(1, 200)
        .start(task("a").root(100).file(AWS))
        .start(task("b").root(200));
    // Process 201's fork was lost: only the kernel knows it is b's.
    scenario.open_by_member(201, AWS, 2);
    let finding = scenario.only_finding();
    assert_eq!(finding.rule, Rule::CrossTaskReuse, "not untasked_access");
    assert_eq!(finding.task, Some(id("b")));
    assert_eq!(scenario.engine().stats().kernel_memberships_adopted, 1);
}

#[test]
fn handles_are_never_reused_after_a_restore() {
    let mut scenario = Scenario::new();
    scenario.watch_file(AWS, "/root/.aws/credentials").spawn(1, 100).spawn(1, 200).spawn(1, 300);
    // An earlier run issued handles 1 to 6; task a (handle 4) is still active, c (handle 6) ended.
    scenario
        .handles_issued(7)
        .restore(task("a").root(100).file(AWS), 4, TaskState::Active)
        .restore(task("c").file(KUBE), 6, TaskState::Ended);
    scenario.effects();
    scenario.start(task("b").root(200));
    assert!(scenario.effects().contains(&Effect::TaskStarted { task: id("b"), handle: 7, allowed: None, egress: false }));
    scenario.start(task("d").root(300));
    assert!(scenario.effects().contains(&Effect::TaskStarted { task: id("d"), handle: 8, allowed: None, egress: false }));
    scenario.open(200, AWS);
    assert_eq!(scenario.only_finding().rule, Rule::CrossTaskReuse);
    assert_eq!(scenario.engine().next_handle(), 9);

    scenario.restore(task("e"), 4, TaskState::Ended);
    assert!(scenario
        .effects()
        .contains(&Effect::Rejected(Rejection::HandleInUse { task: id("e"), handle: 4 })));
}

#[test]
fn a_restored_ended_task_keeps_its_grants_for_post_task_reuse() {
    let mut scenario = Scenario::new();
    scenario.watch_file(AWS, "/root/.aws/credentials").spawn(1, 100).spawn(1, 300);
    scenario.restore(task("a").root(100).file(AWS), 3, TaskState::Ended);
    assert!(scenario.effects().contains(&Effect::FileBinding {
        secret: SecretId(AWS),
        binding: policy::FINISHED,
        grantees: vec![]
    }));
    scenario.open(100, AWS);
    assert_eq!(scenario.only_finding().rule, Rule::PostTaskReuse);
    scenario.open(300, AWS);
    assert_eq!(scenario.only_finding().rule, Rule::PostTaskReuse);
}

#[test]
fn a_use_the_kernel_could_not_tie_to_a_task_is_judged_as_another_tasks() {
    let mut scenario = Scenario::new();
    scenario
        .watch_file(AWS, "/root/.aws/credentials")
        .spawn(1, 100)
        .start(task("a").root(100).file(AWS))
        .spawn(100, 101)
        .spawn(1, 300);
    // TASK_OF was full when 101 forked: the kernel fails closed, even for the owner's child.
    scenario.open_by_member(101, AWS, monitor_common::maps::UNKNOWN_TASK);
    let finding = scenario.only_finding();
    assert_eq!(finding.rule, Rule::CrossTaskReuse);
    assert!(finding.task_unrecorded, "where the kernel refused it, the daemon kills nothing for it");
    assert_eq!(
        finding.detail,
        "a process whose task the kernel could not record opened /root/.aws/credentials, which is bound to task a"
    );
    scenario.open_by_member(300, AWS, monitor_common::maps::UNKNOWN_TASK);
    let finding = scenario.only_finding();
    assert_eq!(finding.rule, Rule::CrossTaskReuse, "never untasked_access");
    assert!(finding.task_unrecorded, "in no task as far as the engine knows: maybe an owner's");
    // A process the engine knows in another task is no owner's work: not spared.
    scenario.spawn(1, 400).start(task("b").root(400)).open_by_member(400, AWS, monitor_common::maps::UNKNOWN_TASK);
    let finding = scenario.only_finding();
    assert_eq!(finding.task, Some(id("b")));
    assert!(!finding.task_unrecorded, "{finding:?}");
    // Nor is the owner's own process once the owner's task has ended.
    scenario.spawn(100, 102).end("a").open_by_member(102, AWS, monitor_common::maps::UNKNOWN_TASK);
    let finding = scenario.only_finding();
    assert!(!finding.task_unrecorded, "{finding:?}");
}

#[test]
fn memberships_are_the_live_processes_of_tasks_with_their_handles() {
    let mut scenario = Scenario::new();
    scenario.spawn(1, 100).spawn(1, 200).start(task("a").root(100)).start(task("b").root(200)).spawn(100, 101).spawn(1, 300);
    let pids = |scenario: &Scenario| {
        let mut memberships: Vec<(u32, u32)> =
            scenario.engine().memberships().map(|(process, handle)| (process.tgid, handle)).collect();
        memberships.sort_unstable();
        memberships
    };
    assert_eq!(pids(&scenario), [(100, 1), (101, 1), (200, 2)], "children inherit; a process in no task is none");
    scenario.exit(101);
    let memberships = pids(&scenario);
    assert_eq!(memberships, [(100, 1), (200, 2)], "an exited process is no member");
}

#[test]
fn a_full_map_is_one_critical_finding_per_episode() {
    let mut scenario = Scenario::new();
    scenario.spawn(1, 100);
    let process = scenario.id(100);
    let failed = |at_ns: u64, failures| Input::MapWriteFailed { at_ns, map: "TASK_OF".to_owned(), failures, process: Some(process) };
    scenario.apply(failed(1_000, 3));
    let finding = scenario.only_finding();
    assert_eq!((finding.rule, finding.severity), (Rule::MonitorBlind, Severity::Critical));
    assert_eq!(finding.secret.name, "kernel map TASK_OF");
    assert!(finding.detail.starts_with("the kernel map TASK_OF is full (3 failed writes so far)"), "{}", finding.detail);
    scenario.apply(failed(30_000_000_000, 9)).apply(failed(80_000_000_000, 12));
    scenario.assert_silent();
    scenario.apply(failed(150_000_000_000, 13));
    assert_eq!(scenario.only_finding().rule, Rule::MonitorBlind, "a new episode after a quiet minute");
}
