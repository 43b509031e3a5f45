//! `credwatch status`: what the running daemon reports about itself.

use std::process::ExitCode;

use super::{
    render,
    socket::{self, SocketArgs},
    CommandError,
};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  credwatch status
  credwatch status --json
  credwatch status --socket /tmp/credwatch/api.sock")]
pub struct StatusArgs {
    /// Print the daemon's reply as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: SocketArgs,
}

pub fn main(args: StatusArgs) -> Result<ExitCode, CommandError> {
    socket::block_on(run(args))?
}

async fn run(args: StatusArgs) -> Result<ExitCode, CommandError> {
    let StatusArgs { json, api } = args;
    let status = api.client().status().await?;
    let text = if json { format!("{status:#}\n") } else { render::key_values(&render::flatten(&status)) };
    render::print(&text)?;
    Ok(ExitCode::SUCCESS)
}
