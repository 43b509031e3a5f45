//! The lister executables (`[harvest] listers`: procps `ps`, whose options the kernel parses, by
//! default `/usr/bin/ps`): each path's inode, which the kernel compares with an exec'd
//! program's (`monitor-ebpf/src/listers.rs`). An inode, not a name: a copy or a script named
//! `ps` is another inode and is judged as any reader; a hard link to the installed file is the
//! installed file. Only a file that no one but root can change is taken: anyone who could
//! rewrite it could make a harvester of it. Each inode is held open for as long as the sensors
//! run, so that a file replaced by an upgrade cannot free its number for another.

use std::{
    fs::File,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use monitor_common::listers::{Listers, LISTERS_MAX};

use super::maps::inode_key;
use crate::event::InodeId;

/// `[harvest]`: which executables of procps `ps` list processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HarvestConfig {
    /// At most `LISTERS_MAX` absolute paths; procps `ps` by default.
    pub listers: Vec<PathBuf>,
}

impl Default for HarvestConfig {
    fn default() -> Self {
        Self { listers: vec![PathBuf::from("/usr/bin/ps")] }
    }
}

/// One configured lister, as resolved at load.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Lister {
    pub path: PathBuf,
    /// The inode the kernel compares, or why the path is not taken (its runs are then judged as
    /// any reader's).
    #[serde(flatten)]
    pub state: ListerState,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ListerState {
    Listed { dev: u64, ino: u64 },
    Refused { reason: String },
}

/// The kernel's table of listers from `paths` (at most `LISTERS_MAX`, which the config checks),
/// what became of each path, and the listed files held open (`O_PATH`) to keep their inodes.
pub fn resolve(paths: &[PathBuf]) -> (Listers, Vec<Lister>, Vec<File>) {
    let mut table = Listers::NONE;
    let mut held = Vec::new();
    let mut resolved = Vec::new();
    for path in paths.iter().take(LISTERS_MAX) {
        let state = match root_only(path) {
            Ok((file, metadata)) => {
                held.push(file);
                table.exes[table.count as usize] = inode_key(InodeId { dev: metadata.dev(), ino: metadata.ino() });
                table.count += 1;
                ListerState::Listed { dev: metadata.dev(), ino: metadata.ino() }
            }
            Err(reason) => ListerState::Refused { reason },
        };
        resolved.push(Lister { path: path.clone(), state });
    }
    (table, resolved, held)
}

/// `path`, held open, and its metadata: a regular file that only root can change, in
/// directories that only root can change.
fn root_only(path: &Path) -> Result<(File, std::fs::Metadata), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(|error| format!("cannot read it: {error}"))?;
    let metadata = file.metadata().map_err(|error| format!("cannot read it: {error}"))?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    let canonical = std::fs::canonicalize(path).map_err(|error| format!("cannot resolve it: {error}"))?;
    for (place, metadata) in std::iter::once((canonical.as_path(), metadata.clone()))
        .chain(canonical.ancestors().skip(1).filter_map(|dir| Some((dir, std::fs::metadata(dir).ok()?))))
    {
        let writable_by_others = metadata.permissions().mode() & 0o022 != 0;
        let sticky = metadata.is_dir() && metadata.permissions().mode() & 0o1000 != 0;
        if metadata.uid() != 0 || writable_by_others && !sticky {
            return Err(format!("{} can be changed by a user other than root", place.display()));
        }
    }
    Ok((file, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_ps_is_listed_and_what_others_can_change_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("ps");
        std::fs::copy("/usr/bin/ps", &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o777)).unwrap();
        let paths = [PathBuf::from("/usr/bin/ps"), copy.clone(), dir.path().join("missing"), PathBuf::from("/usr/bin")];
        let (table, listers, held) = resolve(&paths);
        assert_eq!((table.count, held.len()), (1, 1), "{listers:#?}");
        let installed = std::fs::metadata("/usr/bin/ps").unwrap();
        assert_eq!(listers[0].state, ListerState::Listed { dev: installed.dev(), ino: installed.ino() });
        let reasons: Vec<String> = listers[1..]
            .iter()
            .map(|lister| match &lister.state {
                ListerState::Refused { reason } => reason.clone(),
                listed => panic!("{listed:?}"),
            })
            .collect();
        assert!(reasons[0].contains("can be changed by a user other than root"), "{reasons:?}");
        assert!(reasons[1].starts_with("cannot read it"), "{reasons:?}");
        assert_eq!(reasons[2], "not a regular file");
    }
}
