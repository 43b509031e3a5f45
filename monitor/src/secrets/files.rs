//! Secret files: the catalogue's file patterns resolved to inodes, kept current with inotify.
//!
//! Each path that has held a secret gets a [`SecretId`] for the daemon's lifetime (ids start at
//! 1). An inode keeps the id it was first seen under for as long as it has a link anywhere, since
//! its content is still that secret:
//! - replaced at its path (`mv new secret`, an editor's write-to-temp and rename): the old inode
//!   has no link left, so `Unwatch` it and `Watch` the new one, same id;
//! - renamed away, even out of the catalogue or into another catalogue path: still watched under
//!   its id, no change; `Unwatch` once its last link is gone (seen through a watch on the inode
//!   itself, as a link count change);
//! - deleted: `Unwatch`.
//!
//! Symlinks are followed: a secret reached through one is its target's inode, and the directory
//! holding the link is watched for any rename, which is how Kubernetes rotates its tokens.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsStr,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::io::{unix::AsyncFd, Interest};
use tracing::warn;

use super::walk::{DirInterest, FoundFile, Problem, Resolution};
use crate::{
    catalogue::{
        pattern::{AbsolutePattern, Exclusions},
        Catalogue,
    },
    event::{InodeId, SecretId},
};

/// What a watch on a secret file's own inode reports: link count changes (as attribute changes)
/// and the inode's end.
const INODE_EVENTS: WatchMask = WatchMask::ATTRIB.union(WatchMask::DELETE_SELF);

/// Room for many inotify events per read (each is 16 bytes and a name of up to 256).
const EVENT_BUFFER: usize = 16 << 10;

/// A change to the set of watched secret files. In a batch every `Unwatch` comes before every
/// `Watch`, so that applying them in order never drops an inode that was just (re)added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Watch { id: SecretId, path: PathBuf, inode: InodeId },
    Unwatch { id: SecretId, inode: InodeId },
}

impl Change {
    fn order(&self) -> (bool, SecretId, InodeId) {
        match *self {
            Self::Unwatch { id, inode } => (false, id, inode),
            Self::Watch { id, inode, .. } => (true, id, inode),
        }
    }
}

/// How well the secret files are covered; what could not be watched is counted, never dropped
/// silently (each path is also logged once when it starts failing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SecretFileStats {
    /// Secret files (inodes) watched.
    pub files: usize,
    /// Directories watched for changes.
    pub directories: usize,
    /// Directories or files left unwatched because inotify's watch limit was reached.
    pub over_watch_limit: usize,
    /// Paths that could not be looked at or watched for lack of permission.
    pub permission_denied: usize,
    /// Paths that could not be looked at or watched for another reason.
    pub other_errors: usize,
    /// Times inotify's queue overflowed since start (every pattern was walked again).
    pub queue_overflows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot create an inotify instance to watch secret files (see fs.inotify.max_user_instances): {0}")]
    Init(#[source] std::io::Error),
    #[error("cannot register the secret files' inotify instance with the tokio reactor: {0}")]
    Register(#[source] std::io::Error),
    #[error("cannot read inotify events about secret files: {0}")]
    Read(#[source] std::io::Error),
}

/// A path given to [`SecretFiles::grant`] that cannot name a file.
#[derive(Debug, thiserror::Error)]
#[error("secret file {} must be an absolute path without `..`", path.display())]
pub struct GrantError {
    pub path: PathBuf,
}

/// A watched secret file.
#[derive(Debug)]
struct WatchedFile {
    id: SecretId,
    /// Where it was first found.
    path: PathBuf,
    handle: File,
    /// The watch on the inode itself.
    watch: Result<WatchDescriptor, Problem>,
}

/// The secret files of a catalogue, kept current.
#[derive(Debug)]
pub struct SecretFiles {
    patterns: Vec<AbsolutePattern>,
    exclusions: Exclusions,
    /// Paths watched because a task was granted them, although the catalogue does not list them.
    granted: Vec<AbsolutePattern>,
    inotify: AsyncFd<Inotify>,
    watches: Watches,
    dirs: HashMap<WatchDescriptor, DirInterest>,
    file_watches: HashMap<WatchDescriptor, InodeId>,
    ids: HashMap<PathBuf, SecretId>,
    next_id: u32,
    secrets: BTreeMap<InodeId, WatchedFile>,
    problems: BTreeMap<PathBuf, Problem>,
    queue_overflows: u64,
    events: Vec<u8>,
}

impl SecretFiles {
    /// Resolves the catalogue's files under `homes` and starts watching. Must be called within a
    /// tokio runtime, whose reactor then reports inotify events.
    pub fn new(catalogue: &Catalogue, homes: &[PathBuf]) -> Result<Self, FilesError> {
        let mut seen = HashSet::new();
        let patterns = catalogue
            .files
            .iter()
            .flat_map(|pattern| pattern.expand(homes))
            .filter(|pattern| seen.insert(pattern.clone()))
            .collect();
        let inotify = Inotify::init().map_err(FilesError::Init)?;
        let watches = inotify.watches();
        // SAFETY: `Inotify` owns its fd and returns that same fd until it is dropped, which only
        // the `AsyncFd` can do.
        let inotify = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) }
            .map_err(|error| FilesError::Register(error.into()))?;
        let mut files = Self {
            patterns,
            exclusions: Exclusions::new(&catalogue.exclude, homes),
            granted: Vec::new(),
            inotify,
            watches,
            dirs: HashMap::new(),
            file_watches: HashMap::new(),
            ids: HashMap::new(),
            next_id: 1,
            secrets: BTreeMap::new(),
            problems: BTreeMap::new(),
            queue_overflows: 0,
            events: vec![0; EVENT_BUFFER],
        };
        files.resolve();
        Ok(files)
    }

    /// Every secret file watched now, as `Watch` changes: what a consumer starting from nothing
    /// applies before the deltas from [`Self::changes`].
    pub fn initial(&self) -> Vec<Change> {
        let mut changes: Vec<Change> = self
            .secrets
            .iter()
            .map(|(&inode, file)| Change::Watch { id: file.id, path: file.path.clone(), inode })
            .collect();
        changes.sort_by_key(Change::order);
        changes
    }

    /// Waits for the next change to the watched files. Cancel-safe: nothing is lost if the
    /// future is dropped before it completes.
    pub async fn changes(&mut self) -> Result<Vec<Change>, FilesError> {
        loop {
            if self.read_events().await.map_err(FilesError::Read)? {
                let changes = self.resolve();
                if !changes.is_empty() {
                    return Ok(changes);
                }
            }
        }
    }

    /// Watches the file at `path` from now on, whatever the catalogue says, e.g. one granted
    /// to a task. The changes returned include its `Watch` if it exists and was not watched yet;
    /// if it does not exist yet, it is watched once it appears.
    pub fn grant(&mut self, path: &Path) -> Result<Vec<Change>, GrantError> {
        let pattern = AbsolutePattern::literal(path).ok_or_else(|| GrantError { path: path.to_owned() })?;
        if !self.granted.contains(&pattern) {
            self.granted.push(pattern);
        }
        Ok(self.resolve())
    }

    /// The id of the watched secret that `path` names now, following symlinks: by inode, so it is
    /// found whichever of its names is given.
    pub fn id_of(&self, path: &Path) -> Option<SecretId> {
        let metadata = std::fs::metadata(path).ok()?;
        self.secrets.get(&InodeId { dev: metadata.dev(), ino: metadata.ino() }).map(|file| file.id)
    }

    pub fn stats(&self) -> SecretFileStats {
        let mut stats = SecretFileStats {
            files: self.secrets.len(),
            directories: self.dirs.len(),
            queue_overflows: self.queue_overflows,
            ..SecretFileStats::default()
        };
        let inode_problems = self.secrets.values().filter_map(|file| file.watch.as_ref().err());
        for problem in self.problems.values().chain(inode_problems) {
            match problem {
                Problem::WatchLimit => stats.over_watch_limit += 1,
                Problem::PermissionDenied => stats.permission_denied += 1,
                Problem::Other(_) => stats.other_errors += 1,
            }
        }
        stats
    }

    /// Reads every pending event; whether any of them may change what the patterns name.
    async fn read_events(&mut self) -> std::io::Result<bool> {
        let Self { inotify, events, dirs, file_watches, queue_overflows, .. } = self;
        let mut guard = inotify.readable_mut().await?;
        let mut relevant = false;
        loop {
            match guard.try_io(|inotify| inotify.get_mut().read_events(events)) {
                Ok(Ok(batch)) => {
                    for event in batch {
                        relevant |= is_relevant(&event, dirs, file_watches, queue_overflows);
                    }
                }
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => return Ok(relevant),
            }
        }
    }

    /// Walks the patterns again and brings the watched set in line with what they name now.
    fn resolve(&mut self) -> Vec<Change> {
        let Resolution { files, dirs, problems } =
            Resolution::walk(&self.patterns, &self.exclusions, &self.granted, &mut self.watches);
        for stale in self.dirs.keys().filter(|watch| !dirs.contains_key(watch)) {
            // Fails harmlessly when the kernel already dropped the watch with its directory.
            let _ = self.watches.remove(stale.clone());
        }
        self.dirs = dirs;
        self.report_new_problems(problems);

        let mut changes = Vec::new();
        let mut present = HashSet::new();
        for (path, FoundFile { inode, handle }) in files {
            present.insert(inode);
            if self.secrets.contains_key(&inode) {
                continue;
            }
            let id = self.id_for(&path);
            let watch = self.watch_inode(&path, &handle, inode);
            changes.push(Change::Watch { id, path: path.clone(), inode });
            self.secrets.insert(inode, WatchedFile { id, path, handle, watch });
        }
        let unlinked: Vec<InodeId> = self
            .secrets
            .iter()
            .filter(|(inode, file)| !present.contains(*inode) && !has_links(&file.handle))
            .map(|(&inode, _)| inode)
            .collect();
        for inode in unlinked {
            let Some(file) = self.secrets.remove(&inode) else { continue };
            if let Ok(watch) = file.watch {
                self.file_watches.remove(&watch);
                let _ = self.watches.remove(watch);
            }
            changes.push(Change::Unwatch { id: file.id, inode });
        }
        changes.sort_by_key(Change::order);
        changes
    }

    fn id_for(&mut self, path: &Path) -> SecretId {
        let next_id = &mut self.next_id;
        *self.ids.entry(path.to_owned()).or_insert_with(|| {
            let id = SecretId(*next_id);
            *next_id += 1;
            id
        })
    }

    /// Watches the inode itself, through its handle, so that losing its last link is seen
    /// wherever it was renamed to.
    fn watch_inode(&mut self, path: &Path, handle: &File, inode: InodeId) -> Result<WatchDescriptor, Problem> {
        let by_handle = format!("/proc/self/fd/{}", handle.as_raw_fd());
        match self.watches.add(&by_handle, INODE_EVENTS) {
            Ok(watch) => {
                self.file_watches.insert(watch.clone(), inode);
                Ok(watch)
            }
            Err(error) => {
                let problem = Problem::of(&error).unwrap_or_else(|| Problem::Other(error.to_string()));
                warn!(path = %path.display(), %problem, "cannot watch a secret file's inode; its removal will be seen late");
                Err(problem)
            }
        }
    }

    fn report_new_problems(&mut self, problems: BTreeMap<PathBuf, Problem>) {
        for (path, problem) in &problems {
            if self.problems.get(path) != Some(problem) {
                warn!(path = %path.display(), %problem, "cannot look at or watch a secret file location");
            }
        }
        self.problems = problems;
    }
}

/// Whether the inode behind `handle` still has a name somewhere.
fn has_links(handle: &File) -> bool {
    handle.metadata().is_ok_and(|metadata| metadata.nlink() > 0)
}

fn is_relevant(
    event: &inotify::Event<&OsStr>,
    dirs: &mut HashMap<WatchDescriptor, DirInterest>,
    file_watches: &mut HashMap<WatchDescriptor, InodeId>,
    queue_overflows: &mut u64,
) -> bool {
    if event.mask.contains(EventMask::Q_OVERFLOW) {
        *queue_overflows += 1;
        return true;
    }
    if event.mask.contains(EventMask::IGNORED) {
        // The kernel dropped the watch (its directory is gone), or this daemon removed it.
        return dirs.remove(&event.wd).is_some() | file_watches.remove(&event.wd).is_some();
    }
    if file_watches.contains_key(&event.wd) {
        return true;
    }
    match (dirs.get(&event.wd), event.name) {
        (Some(interest), Some(name)) => interest.cares_about(name, event.mask.contains(EventMask::ISDIR)),
        // The directory itself was moved, deleted or unmounted.
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tempfile::TempDir;

    use super::*;
    use crate::catalogue::pattern::{EnvPatterns, ExcludePattern, PathPattern};

    /// How long a test waits for a change it expects.
    const EXPECT_WITHIN: Duration = Duration::from_secs(5);
    /// How long a test waits to be sure that no change comes.
    const QUIET_FOR: Duration = Duration::from_millis(300);

    fn catalogue(files: &[String], exclude: &[&str]) -> Catalogue {
        Catalogue {
            files: files.iter().map(|text| PathPattern::parse(text).unwrap()).collect(),
            exclude: exclude.iter().map(|text| ExcludePattern::parse(text).unwrap()).collect(),
            env: EnvPatterns::default(),
        }
    }

    fn inode(path: &Path) -> InodeId {
        let metadata = std::fs::metadata(path).unwrap();
        InodeId { dev: metadata.dev(), ino: metadata.ino() }
    }

    /// A temporary directory with one secret pattern, `<dir>/<pattern>`.
    fn watching(pattern: &str) -> (TempDir, SecretFiles) {
        let dir = tempfile::tempdir().unwrap();
        let files = SecretFiles::new(&catalogue(&[format!("{}/{pattern}", dir.path().display())], &[]), &[]).unwrap();
        (dir, files)
    }

    /// Collects changes until there are `count` of them, or fails after [`EXPECT_WITHIN`].
    async fn next_changes(files: &mut SecretFiles, count: usize) -> Vec<Change> {
        let mut changes = Vec::new();
        let collect = async {
            while changes.len() < count {
                changes.extend(files.changes().await.unwrap());
            }
        };
        let timed_out = tokio::time::timeout(EXPECT_WITHIN, collect).await.is_err();
        assert!(!timed_out, "expected {count} changes within {EXPECT_WITHIN:?}, got {changes:?}");
        changes
    }

    async fn assert_quiet(files: &mut SecretFiles) {
        if let Ok(changes) = tokio::time::timeout(QUIET_FOR, files.changes()).await {
            panic!("expected no change, got {changes:?}");
        }
    }

    fn watch(id: u32, path: &Path) -> Change {
        Change::Watch { id: SecretId(id), path: path.to_owned(), inode: inode(path) }
    }

    #[tokio::test]
    async fn existing_files_are_resolved_with_ids_from_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["a", "b", "home1", "home2/.ssh"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for file in ["a/secret", "b/one.key", "b/two.key", "b/not-a-key", "home2/.ssh/id_rsa", "home2/.ssh/id_rsa.pub"]
        {
            std::fs::write(root.join(file), "").unwrap();
        }
        std::fs::create_dir(root.join("b/dir.key")).unwrap();
        let patterns = ["a/secret", "b/*.key", "c/secret"].map(|pattern| format!("{}/{pattern}", root.display()));
        let patterns = [&patterns[..], &["~/.ssh/id_*".to_owned()]].concat();
        let homes = [root.join("home1"), root.join("home2")];
        let files = SecretFiles::new(&catalogue(&patterns, &["~/.ssh/*.pub"]), &homes).unwrap();
        assert_eq!(
            files.initial(),
            [
                watch(1, &root.join("a/secret")),
                watch(2, &root.join("b/one.key")),
                watch(3, &root.join("b/two.key")),
                watch(4, &root.join("home2/.ssh/id_rsa")),
            ]
        );
        let stats = files.stats();
        assert_eq!(stats.files, 4);
        assert_eq!(
            (stats.over_watch_limit, stats.permission_denied, stats.other_errors, stats.queue_overflows),
            (0, 0, 0, 0)
        );
        assert!(stats.directories >= 5, "{stats:?}");
    }

    #[tokio::test]
    async fn a_file_moved_over_the_secret_replaces_its_inode_under_the_same_id() {
        let (dir, mut files) = watching("secret");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "old").unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [watch(1, &secret)]);
        let old = inode(&secret);
        let new = dir.path().join("new");
        std::fs::write(&new, "new").unwrap();
        std::fs::rename(&new, &secret).unwrap();
        assert_eq!(
            next_changes(&mut files, 2).await,
            [Change::Unwatch { id: SecretId(1), inode: old }, watch(1, &secret)]
        );
        assert_quiet(&mut files).await;
    }

    #[tokio::test]
    async fn an_editor_style_replace_is_followed() {
        let (dir, mut files) = watching("config/credentials");
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let secret = config.join("credentials");
        std::fs::write(&secret, "old").unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [watch(1, &secret)]);
        let old = inode(&secret);
        // Write a temporary file next to it, then rename it over the original.
        let temporary = config.join(".credentials.tmp");
        std::fs::write(&temporary, "new").unwrap();
        std::fs::File::open(&temporary).unwrap().sync_all().unwrap();
        std::fs::rename(&temporary, &secret).unwrap();
        assert_eq!(
            next_changes(&mut files, 2).await,
            [Change::Unwatch { id: SecretId(1), inode: old }, watch(1, &secret)]
        );
    }

    #[tokio::test]
    async fn a_secret_renamed_away_stays_watched_until_its_last_link_goes() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "value").unwrap();
        let mut files = SecretFiles::new(&catalogue(&[secret.display().to_string()], &[]), &[]).unwrap();
        assert_eq!(files.initial(), [watch(1, &secret)]);
        let moved_inode = inode(&secret);
        let elsewhere = tempfile::tempdir().unwrap();
        let moved = elsewhere.path().join("copy");
        std::fs::rename(&secret, &moved).unwrap();
        assert_quiet(&mut files).await;
        assert_eq!(files.stats().files, 1);
        // A new file at the path is another inode under the same id.
        std::fs::write(&secret, "rotated").unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [watch(1, &secret)]);
        std::fs::remove_file(&moved).unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [Change::Unwatch { id: SecretId(1), inode: moved_inode }]);
    }

    #[tokio::test]
    async fn a_deleted_secret_is_unwatched() {
        let (dir, mut files) = watching("secret");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "value").unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [watch(1, &secret)]);
        let deleted = inode(&secret);
        std::fs::remove_file(&secret).unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [Change::Unwatch { id: SecretId(1), inode: deleted }]);
        assert_eq!(files.stats().files, 0);
    }

    #[tokio::test]
    async fn missing_directories_are_followed_as_they_appear() {
        let (dir, mut files) = watching("app/conf/token");
        let conf = dir.path().join("app/conf");
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::fs::create_dir(&conf).unwrap();
        assert_quiet(&mut files).await;
        let token = conf.join("token");
        std::fs::write(&token, "value").unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [watch(1, &token)]);
    }

    #[tokio::test]
    async fn new_directories_under_a_star_are_searched() {
        let (dir, mut files) = watching("projects/*/.env");
        std::fs::create_dir(dir.path().join("projects")).unwrap();
        let project = dir.path().join("projects/web");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(project.join("README"), "").unwrap();
        std::fs::write(project.join(".env"), "A=1").unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [watch(1, &project.join(".env"))]);
    }

    #[tokio::test]
    async fn a_renamed_ancestor_directory_is_noticed() {
        let (dir, mut files) = watching("a/b/secret");
        let b = dir.path().join("a/b");
        std::fs::create_dir_all(&b).unwrap();
        let secret = b.join("secret");
        std::fs::write(&secret, "old").unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [watch(1, &secret)]);
        // The old file keeps its links (under a.old), so it stays watched; the new one is added.
        std::fs::rename(dir.path().join("a"), dir.path().join("a.old")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(&secret, "new").unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [watch(1, &secret)]);
        assert_eq!(files.stats().files, 2);
    }

    #[tokio::test]
    async fn a_granted_path_is_watched_whatever_the_catalogue_says() {
        let dir = tempfile::tempdir().unwrap();
        let listed = dir.path().join("listed");
        let excluded = dir.path().join("listed.pub");
        let other = dir.path().join("other");
        for path in [&listed, &excluded, &other] {
            std::fs::write(path, "").unwrap();
        }
        let pattern = format!("{}/listed*", dir.path().display());
        let mut files = SecretFiles::new(&catalogue(&[pattern], &["*.pub"]), &[]).unwrap();
        assert_eq!(files.initial(), [watch(1, &listed)]);
        assert_eq!(files.id_of(&listed), Some(SecretId(1)));
        assert_eq!(files.id_of(&other), None);
        assert_eq!(files.grant(&excluded).unwrap(), [watch(2, &excluded)]);
        assert_eq!(files.grant(&other).unwrap(), [watch(3, &other)]);
        assert_eq!(files.grant(&other).unwrap(), []);
        std::os::unix::fs::symlink(&other, dir.path().join("link")).unwrap();
        assert_eq!(files.id_of(&dir.path().join("link")), Some(SecretId(3)), "found by inode");
        let error = files.grant(Path::new("relative/key")).unwrap_err();
        assert_eq!(error.to_string(), "secret file relative/key must be an absolute path without `..`");
        // A granted path that does not exist yet is watched once it appears.
        let later = dir.path().join("later");
        assert_eq!(files.grant(&later).unwrap(), []);
        std::fs::write(&later, "").unwrap();
        assert_eq!(next_changes(&mut files, 1).await, [watch(4, &later)]);
    }

    #[tokio::test]
    async fn a_symlinked_secret_follows_a_swapped_link() {
        // Kubernetes' layout: token -> ..data/token, ..data -> ..v1; rotation swaps ..data.
        let (dir, mut files) = watching("sa/token");
        let sa = dir.path().join("sa");
        std::fs::create_dir_all(sa.join("..v1")).unwrap();
        std::fs::write(sa.join("..v1/token"), "one").unwrap();
        std::os::unix::fs::symlink("..v1", sa.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/token", sa.join("token")).unwrap();
        let token = sa.join("token");
        assert_eq!(next_changes(&mut files, 1).await, [watch(1, &token)]);
        let old = inode(&token);
        std::fs::create_dir(sa.join("..v2")).unwrap();
        std::fs::write(sa.join("..v2/token"), "two").unwrap();
        std::os::unix::fs::symlink("..v2", sa.join("..data_tmp")).unwrap();
        std::fs::rename(sa.join("..data_tmp"), sa.join("..data")).unwrap();
        std::fs::remove_dir_all(sa.join("..v1")).unwrap();
        let changes = next_changes(&mut files, 2).await;
        assert_eq!(changes, [Change::Unwatch { id: SecretId(1), inode: old }, watch(1, &token)]);
    }
}
