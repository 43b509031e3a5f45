//! environ_harvest (high): a process reads the environment or memory of a process holding a
//! secret, or attaches to it, from outside that process's task. Reading one's own environment,
//! or that of a process of one's own task, is benign.

use super::{actor, secret_name, task_id, Draft, Subject};
use crate::{
    finding::{Rule, Severity},
    State,
};
use crate::event::{ExecId, HarvestKind};

pub(super) fn check(state: &State, process: ExecId, target: ExecId, kind: HarvestKind) -> Option<Draft> {
    if process == target {
        return None;
    }
    let holder = state.processes.get(target)?;
    let secret = holder.held_secret()?;
    let task = state.processes.task_of(process);
    if task.is_some() && task == holder.task {
        return None;
    }
    let whose = match holder.task {
        Some(owner) => format!(" (task {})", task_id(state, owner)),
        None => String::new(),
    };
    let verb = match kind {
        HarvestKind::Environ => "read the environment of",
        HarvestKind::Mem => "opened the memory of",
        HarvestKind::Ptrace => "attached with ptrace to",
        HarvestKind::VmReadv => "read with process_vm_readv the memory of",
    };
    let detail = format!(
        "{} {verb} pid {}{whose}, which holds {}",
        actor(state, state.tasks.membership(task)),
        target.tgid,
        secret_name(state, secret)
    );
    Some(Draft {
        rule: Rule::EnvironHarvest,
        severity: Severity::High,
        secret,
        owner_task: holder.task,
        subject: Subject::Target(target),
        destination: None,
        via: None,
        server: None,
        target: Some(target),
        detail,
        sprawl: false,
    })
}

#[cfg(test)]
mod tests {
    use crate::{
        scenario::{fingerprint, task, Scenario},
        Rule, Severity, TaskId,
    };
    use crate::event::HarvestKind;

    /// Task a's process 100 started with a token in its environment.
    fn token_holder() -> Scenario {
        let token = fingerprint(0x42);
        let mut scenario = Scenario::new();
        scenario.spawn(1, 100).start(task("a").root(100).env("OPENAI_API_KEY", Some(token))).exec(
            100,
            "/usr/bin/agent",
            &[("OPENAI_API_KEY", token)],
        );
        scenario.assert_silent();
        scenario
    }

    #[test]
    fn an_untasked_process_reading_a_holders_environ() {
        let mut scenario = token_holder();
        scenario.spawn(1, 300).harvest(300, HarvestKind::Environ, 100);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::EnvironHarvest);
        assert_eq!(finding.severity, Severity::High);
        assert_eq!(finding.process, scenario.id(300));
        assert_eq!(finding.target, Some(scenario.id(100)));
        assert_eq!(finding.task, None);
        assert_eq!(finding.owner_task, Some(TaskId("a".to_owned())));
        assert_eq!(finding.secret.name, "OPENAI_API_KEY");
        assert_eq!(
            finding.detail,
            "a process in no task read the environment of pid 100 (task a), which holds OPENAI_API_KEY"
        );
    }

    #[test]
    fn another_task_attaching_with_ptrace() {
        let mut scenario = token_holder();
        scenario.spawn(1, 200).start(task("b").root(200)).harvest(200, HarvestKind::Ptrace, 100);
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::EnvironHarvest);
        assert_eq!(finding.task, Some(TaskId("b".to_owned())));
    }

    #[test]
    fn own_environ_and_same_task_siblings_are_benign() {
        let mut scenario = token_holder();
        scenario
            .harvest(100, HarvestKind::Environ, 100)
            .spawn(100, 101)
            .harvest(101, HarvestKind::Environ, 100)
            .harvest(101, HarvestKind::Mem, 100);
        scenario.assert_silent();
    }

    #[test]
    fn a_target_holding_nothing_is_not_harvest() {
        let mut scenario = token_holder();
        scenario.spawn(1, 300).spawn(1, 301).harvest(300, HarvestKind::VmReadv, 301);
        scenario.assert_silent();
    }
}
