//! The task registry on disk: `<state_dir>/tasks.json`, replaced atomically (write a temporary
//! file, fsync it, rename it over the old one, fsync the directory), so a crash leaves either
//! the old registry or the new one, never a torn one.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
};

use tracing::warn;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::tasks::TaskEntry;

const FILE: &str = "tasks.json";
const BASELINES_FILE: &str = "baselines.json";

/// What the registry holds: the tasks, and the first kernel handle never issued, so that a
/// restarted daemon never hands out a handle twice.
#[derive(Debug, Serialize, Deserialize)]
pub struct Persisted<T = TaskEntry> {
    pub next_handle: u32,
    pub tasks: Vec<T>,
}

/// The registry as written before handles were persisted: the tasks alone.
#[derive(Deserialize)]
#[serde(untagged)]
enum OnDisk {
    Current(Persisted),
    TasksOnly(Vec<TaskEntry>),
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid state file (moved aside, not deleted): {source}", path.display())]
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

    /// The learned baselines' file, `<state_dir>/baselines.json`.
    pub fn baselines(state_dir: &Path) -> Self {
        Self { path: state_dir.join(BASELINES_FILE) }
    }

    /// The persisted tasks; none on first start. A file that does not parse is moved aside to
    /// `tasks.json.corrupt` (never deleted: nothing is lost) and reported.
    pub fn load(&self) -> Result<Persisted, RegistryError> {
        let on_disk = self.read::<OnDisk>()?.map(|on_disk| match on_disk {
            OnDisk::Current(persisted) => persisted,
            OnDisk::TasksOnly(tasks) => {
                let next_handle = tasks.iter().map(|task| task.handle.saturating_add(1)).max().unwrap_or(1);
                Persisted { next_handle, tasks }
            }
        });
        Ok(on_disk.unwrap_or(Persisted { next_handle: 1, tasks: Vec::new() }))
    }

    /// The file's content, `None` when it does not exist; one that does not parse is moved aside
    /// to `<name>.corrupt` and reported.
    pub fn read<T: DeserializeOwned>(&self) -> Result<Option<T>, RegistryError> {
        let io = |action, source| RegistryError::Io { action, path: self.path.clone(), source };
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io("read", error)),
        };
        serde_json::from_str(&text).map(Some).or_else(|source| {
            let aside = self.path.with_extension("json.corrupt");
            fs::rename(&self.path, &aside).map_err(|error| io("move aside", error))?;
            Err(RegistryError::Corrupt { path: self.path.clone(), source })
        })
    }

    fn write(&self, text: &[u8]) -> Result<(), RegistryError> {
        let io = |action, path: &Path, source| RegistryError::Io { action, path: path.to_owned(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|error| io("create", dir, error))?;
        let temporary = self.path.with_extension("json.tmp");
        let mut file = File::create(&temporary).map_err(|error| io("create", &temporary, error))?;
        file.write_all(text).map_err(|error| io("write", &temporary, error))?;
        file.sync_all().map_err(|error| io("fsync", &temporary, error))?;
        fs::rename(&temporary, &self.path).map_err(|error| io("replace", &self.path, error))?;
        File::open(dir).and_then(|dir| dir.sync_all()).map_err(|error| io("fsync", dir, error))
    }
}

fn serialize(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("the daemon's state always serializes")
}

/// Writes a state file on a thread of its own, so that its fsyncs never hold up the loop that
/// drains the kernel's events. Snapshots queued while one is written are coalesced: the latest
/// wins. Dropping the writer waits for the last snapshot to be on disk.
pub struct Writer {
    snapshots: Option<mpsc::Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
    failures: Arc<AtomicU64>,
}

impl Writer {
    pub fn start(registry: Registry) -> std::io::Result<Self> {
        let (snapshots, received) = mpsc::channel::<Vec<u8>>();
        let failures = Arc::new(AtomicU64::new(0));
        let failed = Arc::clone(&failures);
        let thread = std::thread::Builder::new().name("credwatch-registry".into()).spawn(move || {
            while let Ok(mut latest) = received.recv() {
                latest = received.try_iter().last().unwrap_or(latest);
                if let Err(error) = registry.write(&latest) {
                    failed.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %crate::error_chain::ErrorChain(&error), "cannot persist the daemon's state");
                }
            }
        })?;
        Ok(Self { snapshots: Some(snapshots), thread: Some(thread), failures })
    }

    pub fn save(&self, value: &impl Serialize) {
        if let Some(snapshots) = &self.snapshots {
            // The thread only stops when the writer is dropped.
            let _ = snapshots.send(serialize(value));
        }
    }

    /// Snapshots that could not be written (each is logged).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.snapshots.take());
        if self.thread.take().is_some_and(|thread| thread.join().is_err()) {
            warn!("the registry writer panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_registry_is_empty_and_a_corrupt_one_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        assert!(registry.load().unwrap().tasks.is_empty());
        registry.write(&serialize(&Persisted::<TaskEntry> { next_handle: 7, tasks: Vec::new() })).unwrap();
        let loaded = registry.load().unwrap();
        assert!(loaded.tasks.is_empty());
        assert_eq!(loaded.next_handle, 7, "the handles issued survive a restart");
        fs::write(dir.path().join(FILE), "{ not json").unwrap();
        let error = registry.load().unwrap_err().to_string();
        assert!(error.contains("not a valid state file"), "{error}");
        assert_eq!(fs::read_to_string(dir.path().join("tasks.json.corrupt")).unwrap(), "{ not json");
    }

    #[test]
    fn the_writer_leaves_the_latest_snapshot_on_disk_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::start(Registry::new(dir.path())).unwrap();
        for next_handle in 1..=50 {
            writer.save(&Persisted::<TaskEntry> { next_handle, tasks: Vec::new() });
        }
        drop(writer);
        assert_eq!(Registry::new(dir.path()).load().unwrap().next_handle, 50);
    }
}
