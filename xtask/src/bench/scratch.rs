//! The benchmark's temporary files: a HOME holding a secret the daemon watches, a plain file to
//! open, and a fresh directory per helper run. Removed when dropped.

use std::{
    cell::Cell,
    fs,
    path::{Path, PathBuf},
};

use super::error::BenchError;

/// Where the built-in catalogue looks for a secret under each home.
const SECRET: &str = ".aws/credentials";
/// A made-up key: no real credential, and none of the test suite's planted-value markers.
const SECRET_CONTENT: &str = "[default]\naws_access_key_id = AKIABENCHMARKEXAMPLE\n";

pub struct Scratch {
    root: PathBuf,
    runs: Cell<u32>,
}

impl Scratch {
    pub fn create() -> Result<Self, BenchError> {
        let root = std::env::temp_dir().join(format!("credwatch-bench-{}", std::process::id()));
        let scratch = Self {
            root,
            runs: Cell::new(0),
        };
        let secret = scratch.secret();
        let parent = secret.parent().expect("the secret is in a directory");
        fs::create_dir_all(parent)
            .map_err(BenchError::io(format!("creating {}", parent.display())))?;
        fs::write(&secret, SECRET_CONTENT)
            .map_err(BenchError::io(format!("writing {}", secret.display())))?;
        let plain = scratch.plain();
        fs::write(&plain, "not a secret\n")
            .map_err(BenchError::io(format!("writing {}", plain.display())))?;
        Ok(scratch)
    }

    /// The HOME the daemon is configured with.
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// A secret file under `home`, watched by the built-in catalogue.
    pub fn secret(&self) -> PathBuf {
        self.home().join(SECRET)
    }

    /// A file on the same file system that is no secret.
    pub fn plain(&self) -> PathBuf {
        self.root.join("plain.txt")
    }

    /// A new empty directory, `<label>-<n>`.
    pub fn run_dir(&self, label: &str) -> Result<PathBuf, BenchError> {
        self.runs.set(self.runs.get() + 1);
        let dir = self.root.join(format!("{label}-{}", self.runs.get()));
        fs::create_dir_all(&dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
        Ok(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The last lines of a helper's log file, for an error message.
pub fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
