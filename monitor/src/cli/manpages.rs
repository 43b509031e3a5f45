//! `credwatch manpages DIR` (hidden; `cargo xtask package` runs it): roff man pages for
//! `credwatch` and each of its subcommands (`credwatch-task.1`, `credwatch-task-exec.1`, ...),
//! generated from the CLI's own definition.

use std::{path::PathBuf, process::ExitCode};

use clap::CommandFactory as _;

use super::{Cli, CommandError};

#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// Where to write them; created if missing.
    pub dir: PathBuf,
}

pub fn main(args: ManpagesArgs) -> Result<ExitCode, CommandError> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|error| format!("cannot create {}: {error}", args.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .map_err(|error| format!("cannot write the man pages to {}: {error}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
