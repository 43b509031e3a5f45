//! `credwatch replay FILE`: runs the engine over a recording and prints its findings.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use super::CommandError;
use crate::engine::{Engine, EngineConfig, Finding, Input, Stats};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A recording: one JSON input per line, as `credwatch run --record` writes it.
    pub file: PathBuf,
    /// How findings are printed on stdout.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Do not bind secrets that no task was granted to the first task that uses them.
    #[arg(long)]
    pub no_auto_mode: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per finding and line.
    Json,
    /// Aligned columns for a person.
    Table,
}

/// A line of the recording that is not an input.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct BadLine {
    pub file: String,
    /// Counted from 1.
    pub line: usize,
    /// serde's description, without its position inside the line.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {file}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the findings")]
    Write(#[source] io::Error),
}

/// Parses one line of a recording; a blank line is no input.
pub fn parse_line(line: &[u8]) -> Result<Option<Input>, serde_json::Error> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(line).map(Some)
}

/// Feeds every good line of `reader` to `engine`, hands each finding to `on_finding` and each bad
/// line to `on_bad_line`, and returns how many lines were bad. A bad line stops nothing.
pub fn replay(
    file: &str,
    mut reader: impl BufRead,
    engine: &mut Engine,
    mut on_finding: impl FnMut(&Finding) -> io::Result<()>,
    mut on_bad_line: impl FnMut(BadLine),
) -> Result<usize, ReplayError> {
    let mut bad_lines = 0;
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| ReplayError::Read { file: file.to_owned(), source })?;
        if read == 0 {
            break;
        }
        match parse_line(&line) {
            Ok(None) => {}
            Ok(Some(input)) => {
                for finding in engine.apply(&input).findings {
                    on_finding(&finding).map_err(ReplayError::Write)?;
                }
            }
            Err(error) => {
                bad_lines += 1;
                on_bad_line(BadLine { file: file.to_owned(), line: number, message: without_position(&error) });
            }
        }
    }
    Ok(bad_lines)
}

/// serde_json ends its messages with "at line 1 column N", which within one line of a file is
/// noise next to the file's own line number.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    message.strip_suffix(&position).map_or(message.clone(), str::to_owned)
}

pub fn main(args: ReplayArgs) -> Result<ExitCode, CommandError> {
    let ReplayArgs { file, format, no_auto_mode } = args;
    let name = file.display().to_string();
    let reader = File::open(&file).map_err(|source| ReplayError::Read { file: name.clone(), source })?;
    let mut engine = Engine::new(EngineConfig { auto_mode: !no_auto_mode, ..EngineConfig::default() });
    let mut stdout = BufWriter::new(io::stdout().lock());
    if format == Format::Table {
        writeln!(stdout, "{}", table_header()).map_err(ReplayError::Write)?;
    }
    let bad_lines = replay(
        &name,
        BufReader::new(reader),
        &mut engine,
        |finding| match format {
            Format::Json => {
                serde_json::to_writer(&mut stdout, finding)?;
                writeln!(stdout)
            }
            Format::Table => writeln!(stdout, "{}", table_row(finding)),
        },
        |bad_line| eprintln!("{bad_line}"),
    )?;
    stdout.flush().map_err(ReplayError::Write)?;
    eprintln!("{}", summary(engine.stats(), bad_lines));
    Ok(if bad_lines == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn table_header() -> String {
    format!("{:>16}  {:<8}  {:<22}  {:>7}  {:<16}  {:<16}  DETAIL", "AT_NS", "SEVERITY", "RULE", "PID", "TASK", "OWNER")
}

fn table_row(finding: &Finding) -> String {
    let task = |task: &Option<crate::engine::TaskId>| task.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string);
    format!(
        "{:>16}  {:<8}  {:<22}  {:>7}  {:<16}  {:<16}  {}",
        finding.at_ns,
        finding.severity.name(),
        finding.rule.name(),
        finding.process.tgid,
        task(&finding.task),
        task(&finding.owner_task),
        finding.detail
    )
}

/// One line for stderr: inputs read, bad lines, findings by rule.
fn summary(stats: &Stats, bad_lines: usize) -> String {
    let findings: u64 = stats.findings.values().sum();
    let by_rule: BTreeMap<&str, u64> = stats.findings.iter().map(|(rule, &count)| (rule.name(), count)).collect();
    let by_rule: Vec<String> = by_rule.iter().map(|(rule, count)| format!("{rule} {count}")).collect();
    let mut line = format!(
        "replay: {}, {}, {}",
        counted(stats.inputs.total(), "input"),
        counted(bad_lines as u64, "bad line"),
        counted(findings, "finding")
    );
    if !by_rule.is_empty() {
        line += &format!(" ({})", by_rule.join(", "));
    }
    if stats.suppressed_repeats > 0 {
        line += &format!(", {} suppressed", counted(stats.suppressed_repeats, "repeat"));
    }
    line
}

fn counted(count: u64, noun: &str) -> String {
    match count {
        1 => format!("1 {noun}"),
        count => format!("{count} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Rule, Severity, TaskId};

    const RECORDING: &str = include_str!("../../../tests/data/replay-cross-task.jsonl");

    fn run(text: &str) -> (Vec<Finding>, Vec<BadLine>, Engine) {
        let mut engine = Engine::new(EngineConfig::default());
        let (mut findings, mut bad) = (Vec::new(), Vec::new());
        let bad_count = replay(
            "trace.jsonl",
            text.as_bytes(),
            &mut engine,
            |finding| {
                findings.push(finding.clone());
                Ok(())
            },
            |line| bad.push(line),
        )
        .unwrap();
        assert_eq!(bad_count, bad.len());
        (findings, bad, engine)
    }

    #[test]
    fn a_malformed_line_names_the_problem() {
        let error = parse_line(br#"{"input":"opne","at_ns":1}"#).unwrap_err();
        assert!(without_position(&error).starts_with("unknown variant `opne`, expected one of"), "{error}");
        let error = parse_line(br#"{"input":"tick"}"#).unwrap_err();
        assert_eq!(without_position(&error), "missing field `at_ns`");
        assert_eq!(parse_line(b"  \n").unwrap(), None);
    }

    #[test]
    fn bad_lines_are_reported_and_good_ones_still_applied() {
        let text = "{\"input\":\"tick\",\"at_ns\":1}\n\
                    {\"input\":\"tick\",\"at_ns\":\n\
                    \n\
                    {\"input\":\"opne\",\"at_ns\":2}\n\
                    {\"input\":\"tick\",\"at_ns\":3}\n";
        let (findings, bad, engine) = run(text);
        assert!(findings.is_empty());
        let lines: Vec<usize> = bad.iter().map(|bad| bad.line).collect();
        assert_eq!(lines, [2, 4]);
        assert!(bad[0].to_string().starts_with("trace.jsonl:2: EOF while parsing"), "{}", bad[0]);
        assert!(bad[1].to_string().starts_with("trace.jsonl:4: unknown variant `opne`"), "{}", bad[1]);
        assert_eq!(engine.stats().inputs.tick, 2);
    }

    #[test]
    fn the_cross_task_recording_yields_its_findings() {
        let (findings, bad, engine) = run(RECORDING);
        assert!(bad.is_empty(), "{bad:?}");
        let rules: Vec<(Rule, Severity, u32)> =
            findings.iter().map(|finding| (finding.rule, finding.severity, finding.process.tgid)).collect();
        assert_eq!(
            rules,
            [(Rule::CrossTaskReuse, Severity::Critical, 4201), (Rule::EnvironHarvest, Severity::High, 4201)]
        );
        let reuse = &findings[0];
        assert_eq!(reuse.task, Some(TaskId("review-b".to_owned())));
        assert_eq!(reuse.owner_task, Some(TaskId("build-a".to_owned())));
        assert_eq!(reuse.secret.name, "/home/dev/.aws/credentials");
        let ancestry: Vec<Option<&str>> = reuse.ancestry.iter().map(|ancestor| ancestor.filename.as_deref()).collect();
        assert_eq!(ancestry, [Some("/usr/bin/cat"), Some("/usr/bin/node"), None]);
        assert_eq!(findings[1].target.map(|target| target.tgid), Some(4100));
        assert_eq!(engine.stats().suppressed_repeats, 1);
        assert_eq!(
            summary(engine.stats(), 0),
            "replay: 17 inputs, 0 bad lines, 2 findings (cross_task_reuse 1, environ_harvest 1), 1 repeat suppressed"
        );
    }

    #[test]
    fn the_table_lines_up_with_its_header() {
        let (findings, _, _) = run(RECORDING);
        let row = table_row(&findings[0]);
        assert_eq!(row.find("critical"), table_header().find("SEVERITY"));
        assert!(row.contains("review-b") && row.contains("build-a"), "{row}");
    }
}
