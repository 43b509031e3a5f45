//! The audit log: JSON lines (see [`crate::daemon::schema`]) appended by a thread of its own, so that
//! `fsync` never holds up the daemon or the other exporters. Lines that queue up while a batch is
//! being synced go out in the next batch with one `fsync` (group commit). The file is rotated by
//! size: `audit.jsonl` → `audit.jsonl.1` → … → `audit.jsonl.<max_files - 1>`, the oldest deleted.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    thread::JoinHandle,
};

use prometheus::IntCounter;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::queue::Outbox;
use crate::daemon::metrics::Metrics;

/// The `sink` label of the audit log's metrics.
pub const SINK: &str = "audit";
/// Lines waiting for the writer.
const QUEUE: usize = 4096;
/// Most lines per `fsync`.
const MAX_BATCH: usize = 1024;

/// The `[audit]` section, when the audit log is enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// A file is rotated before it would grow past this.
    pub max_bytes: u64,
    /// Files kept, the one being written included (at least 2).
    pub max_files: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("/var/log/credwatch/audit.jsonl"), max_bytes: 64 << 20, max_files: 8 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create the audit log directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the audit log {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the audit log writer thread")]
    Thread(#[source] io::Error),
}

/// Opens the log (creating its directory, mode 0750, and the file, mode 0600) and starts the
/// writer thread. The thread ends, after a last `fsync`, once every [`Outbox`] is dropped.
pub fn start(config: &AuditConfig, metrics: &Metrics) -> Result<(Outbox<String>, JoinHandle<()>), AuditError> {
    let AuditConfig { path, max_bytes, max_files } = config;
    let file = RotatingFile::open(path, *max_bytes, *max_files)?;
    let dropped = metrics.sink_dropped.with_label_values(&[SINK]);
    let written = metrics.sink_sent.with_label_values(&[SINK]);
    let (outbox, lines) = Outbox::new(QUEUE, dropped.clone());
    let thread = std::thread::Builder::new()
        .name("credwatch-audit".into())
        .spawn(move || write_batches(file, lines, &written, &dropped))
        .map_err(AuditError::Thread)?;
    info!(path = %path.display(), "audit log open");
    Ok((outbox, thread))
}

fn write_batches(
    mut file: RotatingFile,
    mut lines: mpsc::Receiver<String>,
    written: &IntCounter,
    dropped: &IntCounter,
) {
    let mut failing = false;
    while let Some(first) = lines.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match lines.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        match file.write(&batch) {
            Ok(()) => {
                if failing {
                    info!(path = %file.path.display(), "audit log writable again");
                    failing = false;
                }
                written.inc_by(batch.len() as u64);
            }
            Err(error) => {
                // Logged once per outage, not once per batch.
                if !failing {
                    warn!(path = %file.path.display(), %error, "cannot write the audit log; dropping records until it works again");
                    failing = true;
                }
                dropped.inc_by(batch.len() as u64);
            }
        }
    }
}

/// The log file being appended to, and the rotated ones behind it.
struct RotatingFile {
    path: PathBuf,
    file: File,
    /// Bytes in `file`, as far as this writer knows.
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, max_files: u32) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|source| AuditError::CreateDir { path: dir.to_owned(), source })?;
        }
        let file = open_append(path).map_err(|source| AuditError::Open { path: path.to_owned(), source })?;
        let size = file.metadata().map_err(|source| AuditError::Open { path: path.to_owned(), source })?.len();
        Ok(Self { path: path.to_owned(), file, size, max_bytes, max_files })
    }

    /// Appends `lines` and syncs them, rotating first whenever the next line would not fit.
    fn write(&mut self, lines: &[String]) -> io::Result<()> {
        let mut pending = Vec::new();
        for line in lines {
            let filled = self.size + pending.len() as u64;
            // A line longer than `max_bytes` gets a file of its own.
            if filled > 0 && filled + line.len() as u64 + 1 > self.max_bytes {
                self.append(&pending)?;
                pending.clear();
                self.rotate()?;
            }
            pending.extend_from_slice(line.as_bytes());
            pending.push(b'\n');
        }
        self.append(&pending)?;
        self.file.sync_data()
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let written = self.file.write_all(bytes);
        self.size = match written {
            Ok(()) => self.size + bytes.len() as u64,
            // A partial write leaves the size unknown; ask the file.
            Err(_) => self.file.metadata().map_or(self.size, |metadata| metadata.len()),
        };
        written
    }

    /// Shifts each rotated file one place back (the oldest is overwritten) and starts a new file.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        for index in (1..self.max_files - 1).rev() {
            match std::fs::rename(self.rotated(index), self.rotated(index + 1)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        // The renames are durable only once the directory is synced.
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn rotated(&self, index: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{index}"));
        PathBuf::from(name)
    }
}

/// Opens for appending, mode 0600; a symlink in its place is refused, so that a root-owned log
/// cannot be redirected into another file.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn line(seq: u64) -> String {
        format!("{{\"version\":1,\"seq\":{seq},\"padding\":\"{}\"}}", "x".repeat(60))
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/audit.jsonl");
        let metrics = Metrics::default();
        let config = AuditConfig { path: path.clone(), max_bytes: 1000, max_files: 3 };
        let (outbox, writer) = start(&config, &metrics).unwrap();
        for seq in 1..=100 {
            outbox.push(line(seq));
        }
        drop(outbox);
        writer.join().unwrap();

        let mut names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        let mut seqs = Vec::new();
        for name in ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"] {
            let file = path.with_file_name(name);
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.len() as u64 <= config.max_bytes, "{name}: {} bytes", text.len());
            assert!(text.ends_with('\n'), "{name} ends with a whole line");
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
            for line in text.lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                seqs.push(record["seq"].as_u64().unwrap());
            }
        }
        // The newest lines survive, in order and without a gap.
        assert_eq!(seqs.last(), Some(&100));
        assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1), "{seqs:?}");
        assert!(seqs.len() > 20, "three files of 1000 bytes hold more than 20 lines of ~80 bytes");
        assert_eq!(metrics.sink_sent.with_label_values(&[SINK]).get(), 100);
        assert_eq!(metrics.sink_dropped.with_label_values(&[SINK]).get(), 0);
    }

    #[test]
    fn a_restart_appends_and_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let metrics = Metrics::default();
        let config = AuditConfig { path: path.clone(), max_bytes: 1 << 20, max_files: 2 };
        for seq in [1, 2] {
            let (outbox, writer) = start(&config, &metrics).unwrap();
            outbox.push(line(seq));
            drop(outbox);
            writer.join().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);

        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = start(&AuditConfig { path: link, ..config }, &metrics).unwrap_err();
        assert!(matches!(error, AuditError::Open { .. }), "{error}");
    }
}
