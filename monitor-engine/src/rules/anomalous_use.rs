//! anomalous_use (high): a use no policy rule objects to, outside the secret's learned baseline:
//! an executable, parent executable or task owner never seen with it, a destination its holders
//! never reached, or a burst far above its learned rate (see `crate::baseline`).

use super::{actor, secret_name, Draft, Subject};
use crate::{
    baseline::Novelty,
    finding::{Rule, Severity},
    secrets::SecretKey,
    ExecId, State,
};

pub(crate) fn check(
    state: &State,
    process: ExecId,
    key: SecretKey,
    novel: &[Novelty],
    baseline: &str,
) -> Option<Draft> {
    let secret = secret_name(state, key);
    let what: Vec<String> = novel
        .iter()
        .map(|novelty| match novelty {
            Novelty::Executable(executable) => format!("from {executable}, an executable never seen with it"),
            Novelty::Parent(parent) => format!("under {parent}, a parent never seen with it"),
            Novelty::Owner(owner) => format!("for owner {owner}, never seen with it"),
            Novelty::Destination(destination) => format!("reaching {destination}, a destination never seen with it"),
            Novelty::Burst { per_minute } => format!("{per_minute} times in a minute, far above its learned rate"),
        })
        .collect();
    let first = novel.first()?;
    let task = state.processes.task_of(process);
    let detail = format!("{} used {secret} {}; {baseline}", actor(state, state.tasks.membership(task)), what.join(", "));
    let (subject, destination) = match first {
        Novelty::Destination(destination) => (Subject::Destination(*destination), Some(*destination)),
        _ => (Subject::Secret(key), None),
    };
    let owner = state.secrets.binding(key).and_then(|binding| binding.active_owner(&state.tasks));
    Some(Draft {
        rule: Rule::AnomalousUse,
        severity: Severity::High,
        secret: key,
        owner_task: owner,
        subject,
        destination,
        via: None,
        server: None,
        target: None,
        detail,
        sprawl: false,
    })
}

#[cfg(test)]
mod tests {
    use crate::{
        scenario::{task, Scenario, AWS},
        Input, Rule, Severity,
    };

    /// Task a's agent runs `aws` three times over 100 ns: the baseline is learned.
    fn learned() -> Scenario {
        let mut scenario = Scenario::learning(100, 3);
        scenario.watch_file(AWS, "/root/.aws/credentials").spawn(1, 100).start(task("a").root(100).file(AWS));
        for pid in [101, 102, 103, 104, 105] {
            run_aws(&mut scenario, pid);
        }
        scenario.assert_silent();
        scenario
    }

    /// Task a's agent (100) runs `aws` as `pid`, which reads the credentials and calls the API.
    fn run_aws(scenario: &mut Scenario, pid: u32) {
        scenario.spawn(100, pid).exec(pid, "/usr/bin/aws", &[]).open(pid, AWS).connect(pid, "52.94.0.10:443").exit(pid);
    }

    #[test]
    fn the_learned_workload_replayed_is_silent() {
        let mut scenario = learned();
        for pid in 200..220 {
            run_aws(&mut scenario, pid);
        }
        scenario.assert_silent();
        assert!(scenario.engine().baselines()["file:/root/.aws/credentials"].learned);
    }

    #[test]
    fn a_new_executable_stands_out_once() {
        let mut scenario = learned();
        scenario.spawn(100, 300).exec(300, "/usr/bin/nc", &[]).open(300, AWS);
        let finding = scenario.only_finding();
        assert_eq!((finding.rule, finding.severity), (Rule::AnomalousUse, Severity::High));
        assert_eq!(
            finding.detail,
            "a process of task a used /root/.aws/credentials from /usr/bin/nc, an executable never seen with it; \
             learned over 5 uses: executables /usr/bin/aws; 1 destination; up to 3 uses a minute"
        );
        scenario.spawn(100, 301).exec(301, "/usr/bin/nc", &[]).open(301, AWS);
        scenario.assert_silent();
    }

    #[test]
    fn a_new_destination_of_a_holder_stands_out() {
        let mut scenario = learned();
        scenario.spawn(100, 400).exec(400, "/usr/bin/aws", &[]).open(400, AWS).connect(400, "203.0.113.9:443");
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::AnomalousUse);
        assert_eq!(finding.destination, Some("203.0.113.9:443".parse().unwrap()));
        assert!(finding.detail.contains("reaching 203.0.113.9:443, a destination never seen with it"), "{}", finding.detail);
    }

    #[test]
    fn a_burst_stands_out() {
        let mut scenario = learned();
        scenario.tick(120_000_000_000);
        scenario.spawn(100, 500).exec(500, "/usr/bin/aws", &[]);
        for _ in 0..60 {
            scenario.open(500, AWS);
        }
        let finding = scenario.only_finding();
        assert_eq!(finding.rule, Rule::AnomalousUse);
        assert!(finding.detail.contains("31 times in a minute, far above its learned rate"), "{}", finding.detail);
    }

    #[test]
    fn a_restart_keeps_the_baseline() {
        let learnt = learned().engine().baselines().clone();
        let mut scenario = Scenario::learning(100, 3);
        scenario.apply(Input::BaselinesRestored { at_ns: 1, baselines: learnt });
        scenario.watch_file(AWS, "/root/.aws/credentials").spawn(1, 100).start(task("a").root(100).file(AWS));
        run_aws(&mut scenario, 101);
        scenario.assert_silent();
        scenario.spawn(100, 102).exec(102, "/usr/bin/curl", &[]).open(102, AWS);
        assert_eq!(scenario.only_finding().rule, Rule::AnomalousUse);
    }

    #[test]
    fn a_reuse_across_tasks_is_never_learned() {
        let mut scenario = Scenario::learning(0, 1);
        scenario
            .watch_file(AWS, "/root/.aws/credentials")
            .spawn(1, 100)
            .spawn(1, 200)
            .start(task("a").root(100).file(AWS))
            .start(task("b").root(200));
        scenario.spawn(200, 201).exec(201, "/usr/bin/nc", &[]).open(201, AWS);
        assert_eq!(scenario.only_finding().rule, Rule::CrossTaskReuse);
        assert!(scenario.engine().baselines().is_empty(), "{:?}", scenario.engine().baselines());
    }
}
