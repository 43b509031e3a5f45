//! `credwatch doctor`: what this kernel allows, and the sensor tier `run` will use.

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use crate::doctor::{
    self,
    report::{self, Document},
};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("encoding the report as JSON")]
    Json(#[source] serde_json::Error),
    #[error("writing the report to stdout")]
    Write(#[source] io::Error),
}

/// Prints the report; fails (exit status 1) when not even the tracepoint tier is available.
pub fn main(args: DoctorArgs) -> Result<ExitCode, super::CommandError> {
    let DoctorArgs { json } = args;
    let kernel = doctor::inspect();
    let tier = kernel.tier();
    let output = if json {
        let mut text = serde_json::to_string_pretty(&Document::new(&kernel, &tier))
            .map_err(DoctorError::Json)?;
        text.push('\n');
        text
    } else {
        report::table(&report::rows(&kernel, &tier))
    };
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(DoctorError::Write)?;
    match tier {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(error) => Err(error.into()),
    }
}
