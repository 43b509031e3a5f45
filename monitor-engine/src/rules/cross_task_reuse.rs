//! cross_task_reuse (critical): a secret bound to an active task is opened, or its value shows up
//! in an environment at exec, in a process of another active task.

use super::{action, actor, task_id, Draft, SecretUse};
use crate::{
    finding::{Rule, Severity},
    tasks::Membership,
    State,
};

pub(super) fn check(state: &State, observed: &SecretUse<'_>) -> Option<Draft> {
    let binding = state.secrets.binding(observed.key)?;
    match observed.membership {
        Membership::Active(task) if !binding.is_owner(task) => {}
        Membership::Unknown => {}
        Membership::Active(_) | Membership::Untasked | Membership::Finished(_) => return None,
    }
    let owners: Vec<_> = binding.active_owners(&state.tasks).collect();
    let &owner = owners.first()?;
    let names: Vec<&str> = owners.iter().map(|&owner| task_id(state, owner).0.as_str()).collect();
    let bound_to = match names.as_slice() {
        [one] => format!("task {one}"),
        several => format!("tasks {}", several.join(", ")),
    };
    let detail = format!("{} {}, which is bound to {bound_to}", actor(state, observed.membership), action(state, observed));
    Some(Draft::about_use(Rule::CrossTaskReuse, Severity::Critical, observed, Some(owner), detail))
}

#[cfg(test)]
mod tests {
    use crate::{
        scenario::{fingerprint, task, Scenario, AWS},
        Rule, Severity, TaskId,
    };
    use crate::event::SecretId;

    /// Tasks a (pid 100, granted the AWS credentials) and b (pid 200) side by side.
    fn two_tasks() -> Scenario {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/home/agent/.aws/credentials")
            .spawn(1, 100)
            .spawn(1, 200)
            .start(task("a").root(100).file(AWS))
            .start(task("b").root(200));
        scenario
    }

    #[test]
    fn another_task_opening_a_granted_file_is_cross_task_reuse() {
        let mut scenario = two_tasks();
        scenario.open(200, AWS);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::CrossTaskReuse);
        assert_eq!(finding.severity, Severity::Critical);
        assert_eq!(finding.process, scenario.id(200));
        assert_eq!(finding.task, Some(TaskId("b".to_owned())));
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.secret.id, Some(SecretId(AWS)));
        assert_eq!(finding.secret.name, "/home/agent/.aws/credentials");
        assert_eq!(finding.detail, "a process of task b opened /home/agent/.aws/credentials, which is bound to task a");
    }

    #[test]
    fn a_task_and_its_children_using_their_own_secret_stay_silent() {
        let mut scenario = two_tasks();
        scenario.open(100, AWS).spawn(100, 101).exec(101, "/usr/bin/aws", &[]).open(101, AWS);
        scenario.assert_silent();
    }

    /// Tasks a (pid 100, registered `token`) and b (pid 200) side by side.
    fn token_and_two_tasks(token: crate::event::Fingerprint) -> Scenario {
        let mut scenario = Scenario::new();
        scenario
            .spawn(1, 100)
            .spawn(1, 200)
            .start(task("a").root(100).token(token, "github deploy token"))
            .start(task("b").root(200));
        scenario
    }

    #[test]
    fn a_granted_token_in_another_tasks_environment_is_cross_task_reuse() {
        let token = fingerprint(0x5e);
        let mut scenario = token_and_two_tasks(token);
        scenario.spawn(200, 201).exec(201, "/usr/bin/git", &[("GH_TOKEN", token)]);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::CrossTaskReuse);
        assert_eq!(finding.process, scenario.id(201));
        assert_eq!(finding.task, Some(TaskId("b".to_owned())));
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.secret.id, None);
        assert_eq!(finding.secret.name, "github deploy token");
        assert_eq!(finding.secret.fingerprint_prefix.as_deref(), Some("5e5e5e5e"));
    }

    #[test]
    fn a_granted_token_sent_over_tls_by_another_task_is_cross_task_reuse_and_by_its_own_task_silent() {
        let token = fingerprint(0x5e);
        let mut scenario = token_and_two_tasks(token);
        scenario.tls(100, "api.github.com", token);
        scenario.assert_silent();
        scenario.tls(200, "api.github.com", token);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::CrossTaskReuse);
        assert_eq!(finding.via, Some(crate::UseVia::Tls));
        assert_eq!(finding.server.as_deref(), Some("api.github.com"));
        assert!(finding.detail.contains("authorization header of a TLS request to api.github.com"), "{}", finding.detail);
    }

    #[test]
    fn in_auto_mode_the_first_task_to_use_a_secret_owns_it() {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .spawn(1, 200)
            .start(task("a").root(100))
            .start(task("b").root(200))
            .open(100, AWS);
        scenario.assert_silent();
        scenario.open(200, AWS);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::CrossTaskReuse);
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
    }
}
