//! The task registry on disk: `<state_dir>/tasks.json`, replaced atomically (write a temporary
//! file, fsync it, rename it over the old one, fsync the directory), so a crash leaves either
//! the old registry or the new one, never a torn one.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

use super::tasks::TaskEntry;

const FILE: &str = "tasks.json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a task registry (moved aside, not deleted): {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub struct Registry {
    path: PathBuf,
}

impl Registry {
    pub fn new(state_dir: &Path) -> Self {
        Self { path: state_dir.join(FILE) }
    }

    /// The persisted tasks; none on first start. A file that does not parse is moved aside to
    /// `tasks.json.corrupt` (never deleted: nothing is lost) and reported.
    pub fn load(&self) -> Result<Vec<TaskEntry>, RegistryError> {
        let io = |action, source| RegistryError::Io { action, path: self.path.clone(), source };
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io("read", error)),
        };
        serde_json::from_str(&text).or_else(|source| {
            let aside = self.path.with_extension("json.corrupt");
            fs::rename(&self.path, &aside).map_err(|error| io("move aside", error))?;
            Err(RegistryError::Corrupt { path: self.path.clone(), source })
        })
    }

    pub fn save(&self, entries: &[&TaskEntry]) -> Result<(), RegistryError> {
        let io = |action, path: &Path, source| RegistryError::Io { action, path: path.to_owned(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|error| io("create", dir, error))?;
        let temporary = self.path.with_extension("json.tmp");
        let mut file = File::create(&temporary).map_err(|error| io("create", &temporary, error))?;
        let text = serde_json::to_vec_pretty(entries).expect("task entries always serialize");
        file.write_all(&text).map_err(|error| io("write", &temporary, error))?;
        file.sync_all().map_err(|error| io("fsync", &temporary, error))?;
        fs::rename(&temporary, &self.path).map_err(|error| io("replace", &self.path, error))?;
        File::open(dir).and_then(|dir| dir.sync_all()).map_err(|error| io("fsync", dir, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_registry_is_empty_and_a_corrupt_one_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        assert!(registry.load().unwrap().is_empty());
        registry.save(&[]).unwrap();
        assert!(registry.load().unwrap().is_empty());
        fs::write(dir.path().join(FILE), "{ not json").unwrap();
        let error = registry.load().unwrap_err().to_string();
        assert!(error.contains("not a task registry"), "{error}");
        assert_eq!(fs::read_to_string(dir.path().join("tasks.json.corrupt")).unwrap(), "{ not json");
    }
}
