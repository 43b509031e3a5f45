//! `credwatch run --record FILE`: every engine input as one JSON line, replayable with
//! `credwatch replay FILE`. Inputs carry names and fingerprints, never secret values.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
};

use crate::engine::Input;

#[derive(Debug, thiserror::Error)]
#[error("cannot write the recording {}", path.display())]
pub struct RecordError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

pub struct Recorder {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Recorder {
    pub fn create(path: &Path) -> Result<Self, RecordError> {
        let file = File::create(path).map_err(|source| RecordError { path: path.to_owned(), source })?;
        Ok(Self { path: path.to_owned(), out: BufWriter::new(file) })
    }

    pub fn write(&mut self, input: &Input) -> Result<(), RecordError> {
        let error = |source| RecordError { path: self.path.clone(), source };
        serde_json::to_writer(&mut self.out, input).map_err(|e| error(e.into()))?;
        self.out.write_all(b"\n").map_err(error)
    }

    /// Pushes buffered lines to the file; called after each batch, so a crash loses at most one.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.out.flush().map_err(|source| RecordError { path: self.path.clone(), source })
    }
}
