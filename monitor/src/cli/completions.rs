//! `credwatch completions SHELL`: the shell's completion script, generated from the CLI's own
//! definition (the Debian package installs bash's, zsh's and fish's).

use std::process::ExitCode;

use clap::CommandFactory as _;

use super::{Cli, CommandError};

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn main(args: CompletionsArgs) -> Result<ExitCode, CommandError> {
    clap_complete::generate(args.shell, &mut Cli::command(), "credwatch", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
