//! untasked_access (medium; info in auto mode): a secret is used by a process in no task. The
//! finding carries the secret's sprawl counts, to show how far it has spread.

use super::{action, actor, task_id, Draft, SecretUse};
use crate::{
    finding::{Rule, Severity},
    tasks::Membership,
    State,
};

pub(super) fn check(state: &State, observed: &SecretUse<'_>) -> Option<Draft> {
    let Membership::Untasked = observed.membership else { return None };
    let binding = state.secrets.binding(observed.key)?;
    // In auto mode, a secret no task was granted is used outside tasks all the time: an
    // inventory entry, not an alarm.
    let severity = match state.config.auto_mode && !binding.is_granted() {
        true => Severity::Info,
        false => Severity::Medium,
    };
    let owner = binding.active_owner(&state.tasks);
    let mut detail = format!("{} {}", actor(state, observed.membership), action(state, observed));
    if let Some(owner) = owner {
        detail += &format!(", which is bound to task {}", task_id(state, owner));
    }
    let draft = Draft::about_use(Rule::UntaskedAccess, severity, observed, owner, detail);
    Some(Draft { sprawl: true, ..draft })
}

#[cfg(test)]
mod tests {
    use crate::{
        scenario::{task, Scenario, AWS, KUBE},
        Rule, Severity, Sprawl, TaskId,
    };

    #[test]
    fn in_auto_mode_an_untasked_use_is_info_with_sprawl() {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .start(task("a").root(100))
            .open(100, AWS)
            .end("a")
            .spawn(1, 300)
            .open(300, AWS);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::UntaskedAccess);
        assert_eq!(finding.severity, Severity::Info);
        assert_eq!(finding.process, scenario.id(300));
        assert_eq!(finding.task, None);
        assert_eq!(finding.owner_task, None);
        assert_eq!(finding.sprawl, Some(Sprawl { processes: 2, tasks: 1 }));
        assert_eq!(finding.detail, "a process in no task opened /root/.aws/credentials");
    }

    #[test]
    fn without_auto_mode_it_is_medium_and_names_the_owner() {
        let mut scenario = Scenario::without_auto_mode();
        scenario
            .watch_file(KUBE, "/root/.kube/config")
            .spawn(1, 100)
            .start(task("a").root(100).file(KUBE))
            .spawn(1, 300)
            .open(300, KUBE);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::UntaskedAccess);
        assert_eq!(finding.severity, Severity::Medium);
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.sprawl, Some(Sprawl { processes: 1, tasks: 0 }));
    }

    #[test]
    fn a_granted_secret_stays_medium_in_auto_mode() {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(KUBE, "/root/.kube/config")
            .spawn(1, 100)
            .start(task("a").root(100).file(KUBE))
            .open(1, KUBE);
        assert_eq!(scenario.only_finding().severity, Severity::Medium);
    }

    #[test]
    fn a_process_in_a_task_is_not_untasked() {
        let mut scenario = Scenario::without_auto_mode();
        scenario.watch_file(AWS, "/root/.aws/credentials").spawn(1, 100).start(task("a").root(100)).open(100, AWS);
        scenario.assert_silent();
    }
}
