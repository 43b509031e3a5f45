//! One pass over the file patterns: which secret files exist now, and which directories to watch
//! so that the next change to them is seen.
//!
//! Every existing directory on the way from `/` to a pattern's files is watched, not only the
//! files' parent: a rename or removal of any ancestor changes what the pattern names, and the
//! deepest existing directory of a missing path is where its next component will appear. Each
//! directory is watched before it is looked into, so an entry created in between is not missed.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use inotify::{WatchDescriptor, WatchMask, Watches};

use crate::{
    catalogue::pattern::{AbsolutePattern, Exclusions, Segment},
    event::InodeId,
};

/// What a watched directory reports: entries appearing, leaving or being replaced, and the
/// directory itself going away.
const DIRECTORY_EVENTS: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// Why a path could not be looked at or watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Problem {
    /// inotify's watch limit (`fs.inotify.max_user_watches`) was reached.
    WatchLimit,
    PermissionDenied,
    Other(String),
}

impl Problem {
    /// The problem `error` is, or `None` for a path that simply does not exist (yet).
    pub(super) fn of(error: &io::Error) -> Option<Self> {
        match error.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => None,
            io::ErrorKind::PermissionDenied => Some(Self::PermissionDenied),
            _ if error.raw_os_error() == Some(libc::ENOSPC) => Some(Self::WatchLimit),
            _ => Some(Self::Other(error.to_string())),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WatchLimit => f.write_str("inotify watch limit reached (raise fs.inotify.max_user_watches)"),
            Self::PermissionDenied => f.write_str("permission denied"),
            Self::Other(error) => f.write_str(error),
        }
    }
}

/// Which entries of a watched directory matter.
#[derive(Debug, Default)]
pub(super) struct DirInterest {
    /// Patterns of the entries that lead to secrets, each with whether it must be a directory.
    children: Vec<(Segment, bool)>,
    /// A secret in it is reached through a symlink, which renaming any entry can retarget
    /// (Kubernetes rotates a token by swapping the `..data` link next to it).
    any_name: bool,
}

impl DirInterest {
    /// Whether an event about the entry `name` may change what the patterns name.
    pub(super) fn cares_about(&self, name: &OsStr, is_dir: bool) -> bool {
        // Under a `*` only directories lead further; a new file there changes nothing.
        self.any_name
            || self
                .children
                .iter()
                .any(|(segment, leads_on)| segment.matches(name) && (is_dir || !leads_on || !segment.is_glob()))
    }

    fn add(&mut self, segment: &Segment, leads_on: bool) {
        if !self.children.iter().any(|(known, known_leads_on)| known == segment && *known_leads_on == leads_on) {
            self.children.push((segment.clone(), leads_on));
        }
    }
}

/// A secret file found by the walk, held open (`O_PATH`, which reads nothing) so that its link
/// count can still be checked once no pattern names it.
#[derive(Debug)]
pub(super) struct FoundFile {
    pub inode: InodeId,
    pub handle: File,
}

#[derive(Debug, Default)]
pub(super) struct Resolution {
    /// Existing secret files by the path that the patterns name them by.
    pub files: BTreeMap<PathBuf, FoundFile>,
    /// The directories now watched.
    pub dirs: HashMap<WatchDescriptor, DirInterest>,
    pub problems: BTreeMap<PathBuf, Problem>,
}

impl Resolution {
    /// Walks every pattern, adding watches on the directories on the way. Exclusions apply to
    /// the catalogue's patterns, not to the paths granted one by one.
    pub(super) fn walk(
        patterns: &[AbsolutePattern],
        exclusions: &Exclusions,
        granted: &[AbsolutePattern],
        watches: &mut Watches,
    ) -> Self {
        let mut resolution = Self::default();
        for pattern in patterns {
            resolution.walk_pattern(pattern, exclusions, watches);
        }
        for pattern in granted {
            resolution.walk_pattern(pattern, &Exclusions::default(), watches);
        }
        resolution
    }

    fn walk_pattern(&mut self, pattern: &AbsolutePattern, exclusions: &Exclusions, watches: &mut Watches) {
        let AbsolutePattern(segments) = pattern;
        let mut level = vec![PathBuf::from("/")];
        for (index, segment) in segments.iter().enumerate() {
            let leads_on = index + 1 < segments.len();
            let mut next = Vec::new();
            for dir in level {
                let watch = self.watch_dir(&dir, watches);
                if let Some(watch) = &watch {
                    self.dirs.entry(watch.clone()).or_default().add(segment, leads_on);
                }
                let entries = match segment {
                    Segment::Literal(name) => vec![dir.join(name)],
                    Segment::Glob(_) => self.matching_entries(&dir, segment),
                };
                for path in entries {
                    if leads_on {
                        if self.is_dir(&path) {
                            next.push(path);
                        }
                    } else {
                        self.visit_file(path, watch.as_ref(), exclusions);
                    }
                }
            }
            level = next;
        }
    }

    fn watch_dir(&mut self, dir: &Path, watches: &mut Watches) -> Option<WatchDescriptor> {
        watches.add(dir, DIRECTORY_EVENTS).map_err(|error| self.note(dir, &error)).ok()
    }

    fn matching_entries(&mut self, dir: &Path, segment: &Segment) -> Vec<PathBuf> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) => {
                self.note(dir, &error);
                return Vec::new();
            }
        };
        let mut matching = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) if segment.matches(&entry.file_name()) => matching.push(entry.path()),
                Ok(_) => {}
                Err(error) => self.note(dir, &error),
            }
        }
        matching
    }

    fn is_dir(&mut self, path: &Path) -> bool {
        match std::fs::metadata(path) {
            Ok(metadata) => metadata.is_dir(),
            Err(error) => {
                self.note(path, &error);
                false
            }
        }
    }

    fn visit_file(&mut self, path: PathBuf, parent: Option<&WatchDescriptor>, exclusions: &Exclusions) {
        if self.files.contains_key(&path) || exclusions.excludes(&path) {
            return;
        }
        // Opened first and then inspected, so that the inode recorded is the one held.
        let opened = OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(&path);
        let (handle, metadata) = match opened.and_then(|handle| handle.metadata().map(|metadata| (handle, metadata))) {
            Ok(found) => found,
            Err(error) => {
                self.note(&path, &error);
                return;
            }
        };
        if !metadata.is_file() {
            return;
        }
        let through_symlink = std::fs::symlink_metadata(&path).is_ok_and(|link| link.file_type().is_symlink());
        if let (true, Some(parent)) = (through_symlink, parent) {
            self.dirs.entry(parent.clone()).or_default().any_name = true;
        }
        let inode = InodeId { dev: metadata.dev(), ino: metadata.ino() };
        self.files.insert(path, FoundFile { inode, handle });
    }

    fn note(&mut self, path: &Path, error: &io::Error) {
        if let Some(problem) = Problem::of(error) {
            self.problems.insert(path.to_owned(), problem);
        }
    }
}
