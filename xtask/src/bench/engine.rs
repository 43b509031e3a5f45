//! Engine throughput: the `engine` bench target of the monitor crate (one core, a generated
//! stream of 10 k processes and 100 tasks), run through `cargo bench`.

use std::process::Stdio;

use super::{error::BenchError, stats::Spread, Bench};
use crate::{cmd, error::Error, workspace};

pub struct EngineResults {
    pub events_per_second: Spread,
    pub findings_per_second: Spread,
    /// Events replayed per run.
    pub events: u64,
    pub runs: usize,
    /// Processes in the engine's table at the end of the last run.
    pub processes_tracked: u64,
    /// The last run's findings by rule, `rule=count …`.
    pub findings_by_rule: String,
}

pub fn measure(bench: &Bench) -> Result<EngineResults, BenchError> {
    let mut cargo = workspace::cargo();
    cargo.args(["bench", "-p", "monitor", "--bench", "engine"]);
    if bench.scale.quick {
        // The smoke run reuses the test suite's build instead of compiling an optimised one.
        cargo.args(["--profile", "dev"]);
    }
    cargo
        .args(["--", "--events", &bench.scale.engine_events.to_string()])
        .args(["--runs", &bench.scale.engine_runs.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    eprintln!("$ {}", cmd::cmdline(&cargo));
    let output = cargo.output().map_err(BenchError::io(format!(
        "running `{}`",
        cmd::cmdline(&cargo)
    )))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let failed = Error::Failed {
            cmdline: cmd::cmdline(&cargo),
            status: output.status,
            stderr: stdout.into_owned(),
        };
        return Err(failed.into());
    }
    parse(&stdout).ok_or_else(|| BenchError::Helper {
        what: "the engine bench printed no `run` lines".to_owned(),
        log: stdout.into_owned(),
    })
}

/// Reads the bench's `run events=… findings=… seconds=… processes_tracked=…` lines, and the
/// `rules …` line after each.
fn parse(stdout: &str) -> Option<EngineResults> {
    let runs: Vec<[f64; 4]> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("run "))
        .map(|fields| {
            let value = |name: &str| {
                fields
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            };
            Some([
                value("events")?,
                value("findings")?,
                value("seconds")?,
                value("processes_tracked")?,
            ])
        })
        .collect::<Option<_>>()?;
    let per_second = |index: usize| {
        runs.iter()
            .map(|run| run[index] / run[2])
            .collect::<Vec<_>>()
    };
    let last = runs.last()?;
    Some(EngineResults {
        events_per_second: Spread::of(&per_second(0))?,
        findings_per_second: Spread::of(&per_second(1))?,
        events: last[0] as u64,
        runs: runs.len(),
        processes_tracked: last[3] as u64,
        findings_by_rule: stdout
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("rules "))?
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lines_become_rates() {
        let stdout = "stream processes=10000 tasks=100 events=1000\n\
                      run events=1000 findings=10 seconds=0.001000 processes_tracked=10001\n\
                      rules untasked_access=10\n\
                      run events=1000 findings=20 seconds=0.002000 processes_tracked=10002\n\
                      rules cross_task_reuse=5 untasked_access=15\n";
        let results = parse(stdout).unwrap();
        assert_eq!(results.runs, 2);
        assert_eq!(results.events_per_second.median, 750_000.0);
        assert_eq!(results.findings_per_second.max, 10_000.0);
        assert_eq!(results.processes_tracked, 10_002);
        assert_eq!(
            results.findings_by_rule,
            "cross_task_reuse=5 untasked_access=15"
        );
        assert!(parse("stream processes=1\n").is_none());
    }
}
