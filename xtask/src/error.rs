//! What can go wrong in an xtask command; `main` prints the chain of causes.

use std::{io, process::ExitStatus};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line; `main` adds a pointer to `cargo xtask help`.
    #[error("{0}")]
    Usage(String),
    /// A setup step failed; `source` says why.
    #[error("setup: {step} failed")]
    Step {
        step: &'static str,
        #[source]
        source: Box<Error>,
    },
    #[error("could not run `{cmdline}`")]
    Io {
        cmdline: String,
        #[source]
        source: io::Error,
    },
    #[error("`{cmdline}` failed ({status}){}", stderr_block(.stderr))]
    Failed {
        cmdline: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{what} needs root: {hint}")]
    NotRoot { what: String, hint: String },
    #[error(
        "`cargo xtask setup` installs with apt, on Debian or Ubuntu only, and this is {name}; \
         set up by hand:\n{manual}"
    )]
    UnsupportedDistro { name: String, manual: &'static str },
    /// An install step ran but the check after it still fails.
    #[error("{0}")]
    NotFixed(String),
    /// `cargo xtask bench` could not finish, or a correctness check failed.
    #[error("bench failed")]
    Bench(#[source] Box<crate::bench::BenchError>),
    /// The test VM could not be prepared or started.
    #[error("vm: {0}")]
    Vm(String),
    /// The package or the image could not be built, or failed its checks.
    #[error("package: {0}")]
    Package(String),
    /// A mutation of `cargo xtask mutants` no longer applies to the source, or does not compile.
    #[error("mutants: {0}")]
    Mutant(String),
    #[error("{}", .path.display())]
    File {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

fn stderr_block(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with:\n{}", stderr.trim_end())
    }
}
