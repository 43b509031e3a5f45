//! decoy_touched (critical): a planted fake credential is used, by a task's process other than
//! the task it was planted in: opened, read, or its value seen in an environment. Nothing
//! legitimate uses a decoy, so any touch from a task is an attacker's probe or an agent gone
//! astray. A process in no task (a backup, an indexer) is `info`, its executable named, unless
//! that executable is on the ignore list.

use super::{action, actor, Draft, SecretUse, Subject};
use crate::{
    finding::{Rule, Severity},
    secrets::Decoy,
    tasks::Membership,
    ExecId, State,
};

pub(crate) fn check(state: &State, process: ExecId, observed: &SecretUse<'_>, decoy: Decoy) -> Option<Draft> {
    let executable = state.processes.get(process).and_then(|process| process.filename.as_deref());
    let severity = match observed.membership {
        Membership::Active(task) | Membership::Finished(task) if decoy.planted_in == Some(task) => return None,
        Membership::Active(_) | Membership::Finished(_) | Membership::Unknown => Severity::Critical,
        Membership::Untasked if executable.is_some_and(|exe| state.config.decoy_ignore.iter().any(|ignored| ignored == exe)) => {
            return None
        }
        Membership::Untasked => Severity::Info,
    };
    let running = executable.map_or_else(String::new, |executable| format!(" ({executable})"));
    let detail = format!("{}{running} {}, a decoy", actor(state, observed.membership), action(state, observed));
    Some(Draft {
        rule: Rule::DecoyTouched,
        severity,
        secret: observed.key,
        owner_task: decoy.planted_in,
        subject: Subject::Secret(observed.key),
        destination: None,
        via: Some(observed.via.kind()),
        server: observed.via.server().map(str::to_owned),
        target: None,
        detail,
        sprawl: false,
    })
}

#[cfg(test)]
mod tests {
    use monitor_common::maps::policy;

    use crate::{
        scenario::{fingerprint, task, Scenario},
        Effect, EngineConfig, Rule, Severity, TaskId,
    };
    use crate::event::SecretId;

    const DECOY: u32 = 9;

    #[test]
    fn a_tasks_process_touching_a_decoy_file_is_critical_and_the_kernel_kills_it() {
        let mut scenario = Scenario::new();
        scenario.watch_decoy(DECOY, "/root/.aws/credentials.old");
        assert!(scenario.effects().contains(&Effect::FileBinding {
            secret: SecretId(DECOY),
            binding: policy::DECOY,
            grantees: vec![]
        }));
        scenario.spawn(1, 100).start(task("a").root(100)).spawn(100, 101).exec(101, "/usr/bin/cat", &[]).open(101, DECOY);
        let finding = scenario.only_finding();
        assert_eq!((finding.rule, finding.severity), (Rule::DecoyTouched, Severity::Critical));
        assert_eq!(finding.detail, "a process of task a (/usr/bin/cat) opened /root/.aws/credentials.old, a decoy");
        assert_eq!(scenario.engine().bindings(), 0, "a decoy is never bound, even in auto mode");
    }

    #[test]
    fn a_backup_outside_any_task_is_info_and_an_ignored_scanner_is_silent() {
        let mut scenario = Scenario::new();
        scenario.watch_decoy(DECOY, "/root/.aws/credentials.old").spawn(1, 300).exec(300, "/usr/bin/tar", &[]).open(300, DECOY);
        let finding = scenario.only_finding();
        assert_eq!((finding.rule, finding.severity), (Rule::DecoyTouched, Severity::Info));
        assert!(finding.detail.starts_with("a process in no task (/usr/bin/tar) opened"), "{}", finding.detail);

        let config = EngineConfig { decoy_ignore: vec!["/usr/bin/updatedb".into()], ..EngineConfig::default() };
        let mut scenario = Scenario::with(config);
        scenario.watch_decoy(DECOY, "/root/.aws/credentials.old").spawn(1, 300).exec(300, "/usr/bin/updatedb", &[]).open(300, DECOY);
        scenario.assert_silent();
    }

    #[test]
    fn a_decoy_value_is_silent_in_its_task_and_critical_anywhere_else() {
        let planted = fingerprint(0xdc);
        let mut scenario = Scenario::new();
        scenario.spawn(1, 100).spawn(1, 200).start(task("a").root(100).decoy(planted, "decoy GITHUB_TOKEN"));
        scenario.start(task("b").root(200));
        scenario.spawn(100, 101).exec(101, "/usr/bin/git", &[("GITHUB_TOKEN", planted)]);
        scenario.assert_silent();
        scenario.spawn(200, 201).exec(201, "/usr/bin/curl", &[("GH_TOKEN", planted)]);
        let finding = scenario.only_finding();
        assert_eq!((finding.rule, finding.severity), (Rule::DecoyTouched, Severity::Critical));
        assert_eq!(finding.task, Some(TaskId("b".into())));
        assert_eq!(finding.owner_task, Some(TaskId("a".into())), "the task it was planted in");
        assert_eq!(finding.secret.name, "decoy GITHUB_TOKEN");
    }
}
