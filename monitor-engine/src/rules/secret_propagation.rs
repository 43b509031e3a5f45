//! secret_propagation (high): the value of a secret granted to an active task shows up in the
//! environment of a process in no task. In another active task's process it is cross-task reuse
//! instead, which takes precedence.
//!
//! Only explicit grants count. An auto binding only says which task used a value first: a value
//! from the user's own shell is claimed by the first task started from that shell, and every
//! later command of the user would look like a leak. Those uses are `untasked_access` (info).

use super::{action, actor, task_id, Draft, SecretUse, Via};
use crate::{
    finding::{Rule, Severity},
    tasks::Membership,
    State,
};

pub(super) fn check(state: &State, observed: &SecretUse<'_>) -> Option<Draft> {
    let (Membership::Untasked, Via::Env { .. }) = (observed.membership, &observed.via) else { return None };
    let binding = state.secrets.binding(observed.key)?;
    if !binding.is_granted() {
        return None;
    }
    let owner = binding.active_owner(&state.tasks)?;
    let detail = format!(
        "{} {}, a value bound to task {}",
        actor(state, observed.membership),
        action(state, observed),
        task_id(state, owner)
    );
    Some(Draft::about_use(Rule::SecretPropagation, Severity::High, observed, Some(owner), detail))
}

#[cfg(test)]
mod tests {
    use crate::{
        scenario::{fingerprint, task, Scenario},
        Rule, Severity, TaskId,
    };

    #[test]
    fn a_tasks_token_leaking_into_an_untasked_process_environment() {
        let token = fingerprint(0xa7);
        let mut scenario = Scenario::new();
        scenario.spawn(1, 100).start(task("a").root(100).env("GITHUB_TOKEN", Some(token))).exec(
            100,
            "/usr/bin/agent",
            &[("GITHUB_TOKEN", token)],
        );
        scenario.assert_silent();
        scenario.spawn(1, 300).exec(300, "/usr/bin/curl", &[("GITHUB_TOKEN", token)]);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::SecretPropagation);
        assert_eq!(finding.severity, Severity::High);
        assert_eq!(finding.process, scenario.id(300));
        assert_eq!(finding.task, None);
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.secret.name, "GITHUB_TOKEN");
        assert_eq!(finding.secret.fingerprint_prefix.as_deref(), Some("a7a7a7a7"));
        assert_eq!(finding.ancestry[0].filename.as_deref(), Some("/usr/bin/curl"));
        assert_eq!(
            finding.detail,
            "a process in no task started with GITHUB_TOKEN in its environment, a value bound to task a"
        );
    }

    #[test]
    fn in_another_active_task_it_is_cross_task_reuse_never_both() {
        let token = fingerprint(0xa7);
        let mut scenario = Scenario::new();
        scenario
            .spawn(1, 100)
            .spawn(1, 200)
            .start(task("a").root(100).env("GITHUB_TOKEN", Some(token)))
            .start(task("b").root(200))
            .exec(200, "/usr/bin/gh", &[("GITHUB_TOKEN", token)]);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::CrossTaskReuse);
    }

    #[test]
    fn a_value_only_auto_bound_is_an_untasked_use_not_a_leak() {
        let token = fingerprint(0xa7);
        let mut scenario = Scenario::new();
        scenario
            .spawn(1, 100)
            .start(task("a").root(100))
            .exec(100, "/usr/bin/agent", &[("GITHUB_TOKEN", token)])
            .spawn(1, 300)
            .exec(300, "/usr/bin/git", &[("GITHUB_TOKEN", token)]);
        let finding = scenario.only_finding();
        assert_eq!((finding.rule, finding.severity), (Rule::UntaskedAccess, Severity::Info));
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
    }

    #[test]
    fn children_of_the_owning_task_inherit_the_environment_silently() {
        let token = fingerprint(0xa7);
        let mut scenario = Scenario::new();
        scenario.spawn(1, 100).start(task("a").root(100).env("GITHUB_TOKEN", Some(token))).spawn(100, 101).exec(
            101,
            "/usr/bin/git",
            &[("GITHUB_TOKEN", token)],
        );
        scenario.assert_silent();
    }
}
