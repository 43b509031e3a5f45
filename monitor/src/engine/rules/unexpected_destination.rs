//! unexpected_destination (high): a process holding a secret connects, or sends a datagram,
//! outside its task's allowed destinations.

use std::net::SocketAddr;

use super::{actor, secret_name, Draft, Subject};
use crate::engine::{
    finding::{Rule, Severity},
    State,
};
use crate::event::ExecId;

pub(super) fn check(state: &State, process: ExecId, destination: SocketAddr) -> Option<Draft> {
    let holder = state.processes.get(process)?;
    let secret = holder.held_secret()?;
    let task = holder.task?;
    let allowed = state.tasks.get(task).allowed.as_ref()?;
    if allowed.iter().any(|allowed| allowed.matches(destination)) {
        return None;
    }
    let owner = state
        .secrets
        .binding(secret)
        .and_then(|binding| binding.active_owner(&state.tasks).or_else(|| binding.finished_grantee(&state.tasks)));
    let detail = format!(
        "{} holding {} connected to {destination}, outside the task's allowed destinations",
        actor(state, state.tasks.membership(Some(task))),
        secret_name(state, secret)
    );
    Some(Draft {
        rule: Rule::UnexpectedDestination,
        severity: Severity::High,
        secret,
        owner_task: owner,
        subject: Subject::Destination(destination),
        destination: Some(destination),
        target: None,
        detail,
        sprawl: false,
    })
}

#[cfg(test)]
mod tests {
    use crate::engine::{
        scenario::{task, Scenario, AWS},
        Rule, Severity, TaskId,
    };

    /// Task a (pid 100) may reach 10.0.0.0/8 on port 443, and holds the AWS credentials.
    fn restricted_holder() -> Scenario {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .start(task("a").root(100).file(AWS).allow(&["10.0.0.0/8:443"]))
            .open(100, AWS);
        scenario
    }

    #[test]
    fn a_holder_connecting_elsewhere() {
        let mut scenario = restricted_holder();
        scenario.connect(100, "203.0.113.5:443");
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::UnexpectedDestination);
        assert_eq!(finding.severity, Severity::High);
        assert_eq!(finding.process, scenario.id(100));
        assert_eq!(finding.task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.destination, Some("203.0.113.5:443".parse().unwrap()));
        assert_eq!(finding.secret.name, "/root/.aws/credentials");
    }

    #[test]
    fn allowed_destinations_and_non_holders_stay_silent() {
        let mut scenario = restricted_holder();
        scenario.connect(100, "10.20.30.40:443");
        scenario.spawn(1, 101).start(task("quiet").root(101).allow(&[])).connect(101, "203.0.113.5:443");
        scenario.assert_silent();
    }

    #[test]
    fn an_unrestricted_task_may_connect_anywhere() {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .start(task("a").root(100).file(AWS))
            .open(100, AWS)
            .connect(100, "203.0.113.5:443");
        scenario.assert_silent();
    }

    #[test]
    fn an_empty_allow_list_forbids_every_destination_to_holders() {
        let mut scenario = Scenario::new();
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .start(task("a").root(100).file(AWS).allow(&[]))
            .open(100, AWS)
            .connect(100, "10.0.0.1:53");
        assert_eq!(scenario.only_finding().rule, Rule::UnexpectedDestination);
    }

    #[test]
    fn a_forked_child_inherits_what_its_parent_holds() {
        let mut scenario = restricted_holder();
        scenario.spawn(100, 101).exec(101, "/usr/bin/curl", &[]).connect(101, "198.51.100.1:80");
        let finding = scenario.only_finding();
        assert_eq!(finding.process, scenario.id(101));
        assert_eq!(finding.task, Some(TaskId("a".to_owned())));
        let ancestry: Vec<_> = finding.ancestry.iter().map(|ancestor| ancestor.process.tgid).collect();
        assert_eq!(ancestry, [101, 100, 1]);
    }
}
