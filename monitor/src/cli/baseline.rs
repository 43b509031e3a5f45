//! `credwatch baseline`: what the running daemon learnt of each secret's use, and forgetting it.

use std::process::ExitCode;

use serde_json::Value;

use super::{
    render,
    socket::{self, SocketArgs},
    CommandError,
};
use crate::daemon::control::BaselineReset;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  credwatch baseline show
  credwatch baseline show --secret file:/home/agent/.aws/credentials --json
  credwatch baseline reset --secret file:/home/agent/.aws/credentials
  credwatch baseline reset

A secret is named file:PATH, or value:FINGERPRINT for an environment value or a token.")]
pub struct BaselineArgs {
    #[command(subcommand)]
    pub command: BaselineCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BaselineCommand {
    /// Each secret's baseline: learning or learned, uses, executables, destinations, peak rate.
    Show {
        /// Only this secret.
        #[arg(long)]
        secret: Option<String>,
        /// Print the daemon's reply as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: SocketArgs,
    },
    /// Forget a secret's baseline (or every one): it learns again from its next uses.
    Reset {
        #[arg(long)]
        secret: Option<String>,
        #[command(flatten)]
        api: SocketArgs,
    },
}

pub fn main(args: BaselineArgs) -> Result<ExitCode, CommandError> {
    socket::block_on(run(args))?
}

async fn run(args: BaselineArgs) -> Result<ExitCode, CommandError> {
    match args.command {
        BaselineCommand::Show { secret, json, api } => {
            let mut baselines = api.client().baselines().await?;
            if let (Some(secret), Value::Object(all)) = (&secret, &mut baselines) {
                all.retain(|name, _| name == secret);
                if all.is_empty() {
                    return Err(format!("no baseline for {secret}").into());
                }
            }
            let text = if json { format!("{baselines:#}\n") } else { table(&baselines) };
            render::print(&text)?;
        }
        BaselineCommand::Reset { secret, api } => {
            let reply = api.client().reset_baselines(&BaselineReset { secret }).await?;
            render::print(&format!("reset: {}\n", render::cell(&reply["reset"])))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table(baselines: &Value) -> String {
    let rows: Vec<Vec<String>> = baselines
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, baseline)| {
            let state = if baseline["learned"] == true { "learned" } else { "learning" };
            let count = |field: &str| baseline[field].as_array().map_or(0, Vec::len).to_string();
            vec![
                name.clone(),
                state.to_owned(),
                render::cell(&baseline["uses"]),
                render::cell(&baseline["executables"]),
                count("destinations"),
                render::cell(&baseline["peak_per_minute"]),
            ]
        })
        .collect();
    render::table(&["SECRET", "STATE", "USES", "EXECUTABLES", "DESTINATIONS", "PEAK/MIN"], &rows)
}
