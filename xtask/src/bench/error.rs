//! What can stop the benchmark. Missed performance targets are not errors: the report states
//! them. Inexact storm accounting is, since it means events went missing without a count.

use std::{io, path::PathBuf, time::Duration};

use crate::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Xtask(#[from] Error),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A helper process (worker, daemon, floor, bpftrace) ended or answered unexpectedly.
    #[error("{what}; its log ends with:\n{log}")]
    Helper { what: String, log: String },
    #[error("{what} was not ready after {waited:?}; its log ends with:\n{log}")]
    NotReady {
        what: String,
        waited: Duration,
        log: String,
    },
    #[error("`credwatch status` has no numeric `{0}`")]
    MissingStatus(String),
    #[error(
        "storm accounting is not exact: {produced} events produced, {received} received + \
         {lost} counted lost = {accounted}"
    )]
    StormInexact {
        produced: u64,
        received: u64,
        lost: u64,
        accounted: u64,
    },
    #[error("report written to {}, but a correctness check failed", .0.display())]
    Failed(PathBuf, #[source] Box<BenchError>),
}

impl BenchError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
