//! post_task_reuse (critical): a secret is used by a process of a task that ended or expired, or
//! a secret granted only to tasks that are over is used by a process outside them.

use super::{action, actor, how_over, task_id, Draft, SecretUse};
use crate::{
    finding::{Rule, Severity},
    tasks::Membership,
    State,
};

pub(super) fn check(state: &State, observed: &SecretUse<'_>) -> Option<Draft> {
    let binding = state.secrets.binding(observed.key)?;
    let tasks = &state.tasks;
    let (owner, why) = match observed.membership {
        Membership::Finished(task) => {
            let owner = binding.active_owner(tasks).or_else(|| binding.finished_grantee(tasks));
            (owner, format!(" after the task {}", how_over(state, task)))
        }
        Membership::Untasked | Membership::Active(_) | Membership::Unknown => {
            let grantee = binding.finished_grantee(tasks)?;
            (
                Some(grantee),
                format!(", granted to task {}, which {}", task_id(state, grantee), how_over(state, grantee)),
            )
        }
    };
    let detail = format!("{} {}{why}", actor(state, observed.membership), action(state, observed));
    Some(Draft::about_use(Rule::PostTaskReuse, Severity::Critical, observed, owner, detail))
}

#[cfg(test)]
mod tests {
    use crate::{
        scenario::{task, Scenario, AWS},
        Effect, Rule, Severity, TaskId, TaskState,
    };
    use crate::event::SecretId;
    use monitor_common::maps::policy;

    fn task_a_granted_aws() -> Scenario {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .start(task("a").root(100).file(AWS))
            .open(100, AWS);
        scenario.assert_silent();
        scenario
    }

    #[test]
    fn a_left_over_process_of_an_ended_task_reusing_its_secret() {
        let mut scenario = task_a_granted_aws();
        scenario.spawn(100, 101).end("a").open(101, AWS);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::PostTaskReuse);
        assert_eq!(finding.severity, Severity::Critical);
        assert_eq!(finding.process, scenario.id(101));
        assert_eq!(finding.task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.detail, "a process of task a opened /root/.aws/credentials after the task ended");
    }

    #[test]
    fn an_explicit_grant_outlives_its_task() {
        let mut scenario = task_a_granted_aws();
        scenario.end("a").spawn(1, 300).open(300, AWS);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::PostTaskReuse, "not untasked_access: the secret was granted");
        assert_eq!(finding.task, None);
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));

        scenario.spawn(1, 400).start(task("b").root(400)).open(400, AWS);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::PostTaskReuse);
        assert_eq!(finding.task, Some(TaskId("b".to_owned())));
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.detail, "a process of task b opened /root/.aws/credentials, granted to task a, which ended");
    }

    #[test]
    fn a_new_grant_of_the_same_secret_is_not_reuse() {
        let mut scenario = task_a_granted_aws();
        scenario.end("a").spawn(1, 400).start(task("c").root(400).file(AWS)).open(400, AWS);
        scenario.assert_silent();
    }

    #[test]
    fn expiry_by_tick_then_reuse() {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .start(task("a").root(100).file(AWS).ttl(1_000))
            .open(100, AWS);
        scenario.assert_silent();
        scenario.effects();
        scenario.tick(2_000);
        assert_eq!(
            scenario.effects(),
            [
                Effect::TaskFinished { task: TaskId("a".to_owned()), handle: 1, state: TaskState::Expired },
                Effect::FileBinding { secret: SecretId(AWS), binding: policy::FINISHED, grantees: vec![] },
            ]
        );
        scenario.open(100, AWS);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::PostTaskReuse);
        assert_eq!(finding.detail, "a process of task a opened /root/.aws/credentials after the task expired");
    }
}
