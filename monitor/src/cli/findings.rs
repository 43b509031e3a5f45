//! `credwatch findings`: the daemon's recent findings, and with `--follow` the new ones as they
//! come.

use std::process::ExitCode;

use serde_json::Value;

use super::{
    render,
    socket::{self, SocketArgs},
    CommandError,
};

const HEADER: [&str; 7] = ["RULE", "SEVERITY", "TASK", "PID", "SECRET", "FINGERPRINT", "DETAIL"];
/// Column widths while following, when later lines cannot widen the columns.
const FOLLOW_WIDTHS: [usize; 7] = [22, 8, 16, 7, 32, 11, 0];

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  credwatch findings
  credwatch findings --follow
  credwatch findings --follow --json | jq 'select(.severity == \"critical\")'")]
pub struct FindingsArgs {
    /// After the recent findings, print new ones as they happen (until interrupted).
    #[arg(long)]
    pub follow: bool,
    /// Print each finding as the daemon's JSON line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: SocketArgs,
}

pub fn main(args: FindingsArgs) -> Result<ExitCode, CommandError> {
    socket::block_on(run(args))?
}

async fn run(args: FindingsArgs) -> Result<ExitCode, CommandError> {
    let FindingsArgs { follow, json, api } = args;
    let mut lines = api.client().findings(follow).await?;
    if json {
        while let Some(line) = lines.next_line().await? {
            if !render::print(&format!("{line}\n"))? {
                break;
            }
        }
    } else if follow {
        let header = HEADER.map(str::to_owned);
        let mut open = render::print(&render::line(&FOLLOW_WIDTHS, &header))?;
        while open {
            let Some(line) = lines.next_line().await? else { break };
            open = render::print(&render::line(&FOLLOW_WIDTHS, &cells(&line)))?;
        }
    } else {
        let mut rows = Vec::new();
        while let Some(line) = lines.next_line().await? {
            rows.push(cells(&line).to_vec());
        }
        let text = if rows.is_empty() { "no findings\n".to_owned() } else { render::table(&HEADER, &rows) };
        render::print(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A finding's columns; a line that is not a finding is shown whole in the detail column.
fn cells(line: &str) -> [String; 7] {
    let finding: Value = serde_json::from_str(line).unwrap_or(Value::Null);
    let text = |pointer: &str| render::cell(finding.pointer(pointer).unwrap_or(&Value::Null));
    if let Some(lost) = finding.get("lagged") {
        let detail = format!("{lost} findings were dropped: this reader fell behind");
        return ["-", "-", "-", "-", "-", "-", &detail].map(str::to_owned);
    }
    if finding.get("rule").is_none() {
        return ["-", "-", "-", "-", "-", "-", line].map(str::to_owned);
    }
    [
        text("/rule"),
        text("/severity"),
        text("/task"),
        text("/process/pid"),
        text("/secret/name"),
        text("/secret/fingerprint_prefix"),
        text("/detail"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_becomes_one_row() {
        let line = r#"{"rule":"cross_task_reuse","severity":"critical","kernel_time_ns":1,"process":{"pid":4242,"start_time":9},
            "ancestry":[],"task":"b","owner_task":"a","secret":{"id":3,"name":"/root/.aws/credentials",
            "fingerprint_prefix":"1a2b3c4d"},"destination":null,"target":null,"detail":"task b opened a's secret","sprawl":null}"#;
        assert_eq!(
            cells(line),
            [
                "cross_task_reuse",
                "critical",
                "b",
                "4242",
                "/root/.aws/credentials",
                "1a2b3c4d",
                "task b opened a's secret"
            ]
        );
    }

    #[test]
    fn lag_notices_and_unknown_lines_are_shown() {
        assert!(cells(r#"{"lagged":12}"#)[6].starts_with("12 findings were dropped"));
        assert_eq!(cells("not json")[6], "not json");
        let untasked = cells(r#"{"rule":"untasked_access","task":null,"secret":{"name":"GH_TOKEN"}}"#);
        assert_eq!((untasked[2].as_str(), untasked[5].as_str()), ("-", "-"));
    }
}
