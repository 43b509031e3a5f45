//! The lister executables (`[harvest] listers`, procps `ps` by default): each path's inode, which
//! the kernel compares with an exec'd program's (`monitor-ebpf/src/listers.rs`). An inode, not a
//! name: a copy or a script named `ps` is another inode and is judged as any reader; a hard link
//! to the installed file is the installed file. Only a file that no one but root can change is
//! taken: anyone who could rewrite it could make a harvester of it.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use monitor_common::listers::{Listers, LISTERS_MAX};

use super::maps::inode_key;
use crate::event::InodeId;

/// `[harvest]`: which executables list processes.
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
/// and what became of each path.
pub fn resolve(paths: &[PathBuf]) -> (Listers, Vec<Lister>) {
    let mut table = Listers::NONE;
    let resolved: Vec<Lister> =
        paths.iter().take(LISTERS_MAX).map(|path| Lister { path: path.clone(), state: state_of(path) }).collect();
    for lister in &resolved {
        if let ListerState::Listed { dev, ino } = lister.state {
            table.exes[table.count as usize] = inode_key(InodeId { dev, ino });
            table.count += 1;
        }
    }
    (table, resolved)
}

fn state_of(path: &Path) -> ListerState {
    match root_only(path) {
        Ok(metadata) => ListerState::Listed { dev: metadata.dev(), ino: metadata.ino() },
        Err(reason) => ListerState::Refused { reason },
    }
}

/// The metadata of `path`, a regular file that only root can change, in directories that only
/// root can change.
fn root_only(path: &Path) -> Result<std::fs::Metadata, String> {
    let metadata = std::fs::metadata(path).map_err(|error| format!("cannot read it: {error}"))?;
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
    Ok(metadata)
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
        let (table, listers) = resolve(&paths);
        assert_eq!(table.count, 1, "{listers:#?}");
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
