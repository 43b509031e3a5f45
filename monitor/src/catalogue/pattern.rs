//! Name and path patterns. `*` is the only wildcard: it matches any run of characters, the empty
//! one included; in a path it stays within one component, and like a shell's it does not match
//! a leading `.` (so `~/.config/*/mcp.json` skips hidden directories).

use std::{
    ffi::{OsStr, OsString},
    os::unix::ffi::OsStrExt,
    path::{Component, Path, PathBuf},
};

/// Why a pattern from the catalogue or the config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern {0:?} must be absolute or start with ~/")]
    NotAbsolute(String),
    #[error("pattern {0:?} uses `**`: `*` matches within one path component and recursive matching is not supported")]
    DoubleStar(String),
    #[error("pattern {0:?} has a `.` or `..` component")]
    DotComponent(String),
    #[error("pattern {0:?} ends with `/`: it must name files, not a directory")]
    TrailingSlash(String),
    #[error("pattern {0:?} contains `=`, `/` or a NUL byte, which no variable name can")]
    NotAName(String),
}

/// Whether `text` matches `pattern`, where `*` in the pattern matches any run of bytes.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is currently taken to stop at.
    let mut backtrack = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&byte) if byte == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, stop)) => {
                    backtrack = Some((star, stop + 1));
                    p = star + 1;
                    t = stop + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

/// A pattern for environment variable names, e.g. `*_TOKEN`; case-sensitive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.contains(['=', '/', '\0']) {
            return Err(PatternError::NotAName(text.to_owned()));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        glob_matches(self.0.as_bytes(), name)
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The environment variable name patterns of a catalogue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvPatterns(Vec<NamePattern>);

impl EnvPatterns {
    pub fn new(patterns: Vec<NamePattern>) -> Self {
        Self(patterns)
    }

    /// Whether a variable of this name holds a secret.
    pub fn matches(&self, name: &[u8]) -> bool {
        self.0.iter().any(|pattern| pattern.matches(name))
    }
}

/// One path component of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    Literal(OsString),
    Glob(String),
}

impl Segment {
    /// A component as written in a pattern; the caller has already refused `**`, `.` and `..`.
    fn new(text: &str) -> Self {
        if text.contains('*') {
            Self::Glob(text.to_owned())
        } else {
            Self::Literal(text.into())
        }
    }

    /// A file name pattern, e.g. `*.pub`.
    pub fn parse_file_name(text: &str) -> Result<Self, PatternError> {
        match text {
            "" => Err(PatternError::Empty),
            "." | ".." => Err(PatternError::DotComponent(text.to_owned())),
            _ if text.contains("**") => Err(PatternError::DoubleStar(text.to_owned())),
            _ => Ok(Self::new(text)),
        }
    }

    pub fn matches(&self, name: &OsStr) -> bool {
        match self {
            Self::Literal(literal) => literal == name,
            Self::Glob(glob) => {
                let name = name.as_bytes();
                let hidden = name.first() == Some(&b'.') && !glob.starts_with('.');
                !hidden && glob_matches(glob.as_bytes(), name)
            }
        }
    }

    pub fn is_glob(&self) -> bool {
        matches!(self, Self::Glob(_))
    }
}

/// Where a path pattern starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anchor {
    Root,
    /// `~/`: each configured home directory.
    Home,
}

/// A pattern of secret file paths, e.g. `~/.ssh/id_*` or `/etc/myapp/*.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    anchor: Anchor,
    segments: Vec<Segment>,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let (anchor, rest) = if let Some(rest) = text.strip_prefix("~/") {
            (Anchor::Home, rest)
        } else if let Some(rest) = text.strip_prefix('/') {
            (Anchor::Root, rest)
        } else if text.is_empty() {
            return Err(PatternError::Empty);
        } else {
            return Err(PatternError::NotAbsolute(text.to_owned()));
        };
        if text.contains("**") {
            return Err(PatternError::DoubleStar(text.to_owned()));
        }
        if rest.is_empty() || rest.ends_with('/') {
            return Err(PatternError::TrailingSlash(text.to_owned()));
        }
        let parts: Vec<&str> = rest.split('/').filter(|part| !part.is_empty()).collect();
        if parts.iter().any(|part| matches!(*part, "." | "..")) {
            return Err(PatternError::DotComponent(text.to_owned()));
        }
        let segments = parts.into_iter().map(Segment::new).collect();
        Ok(Self { text: text.to_owned(), anchor, segments })
    }

    /// `relative` (a pattern such as `*/.env`, already known to be valid) under the directory
    /// `root`, whose own components are taken literally.
    pub(crate) fn under(root: &Path, relative: &str) -> Self {
        let segments = literal_segments(root).chain(relative.split('/').map(Segment::new)).collect();
        let text = format!("{}/{relative}", root.display());
        Self { text, anchor: Anchor::Root, segments }
    }

    /// The pattern anchored at `/`: one for an absolute pattern, one per home for a `~/` one.
    pub fn expand(&self, homes: &[PathBuf]) -> Vec<AbsolutePattern> {
        match self.anchor {
            Anchor::Root => vec![AbsolutePattern(self.segments.clone())],
            Anchor::Home => homes
                .iter()
                .map(|home| AbsolutePattern(literal_segments(home).chain(self.segments.iter().cloned()).collect()))
                .collect(),
        }
    }
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The normal components of an absolute path, as literal segments.
fn literal_segments(path: &Path) -> impl Iterator<Item = Segment> + '_ {
    path.components().filter_map(|component| match component {
        Component::Normal(name) => Some(Segment::Literal(name.to_owned())),
        _ => None,
    })
}

/// A path pattern with `~` replaced by one home: its segments are the components after `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AbsolutePattern(pub Vec<Segment>);

impl AbsolutePattern {
    /// The pattern naming exactly `path`, each component taken literally; `None` unless `path`
    /// is absolute and free of `..`.
    pub fn literal(path: &Path) -> Option<Self> {
        let parent = path.components().any(|component| component == Component::ParentDir);
        (path.is_absolute() && !parent).then(|| Self(literal_segments(path).collect()))
    }

    pub fn matches(&self, path: &Path) -> bool {
        let mut components = path.components();
        if components.next() != Some(Component::RootDir) {
            return false;
        }
        let names: Vec<&OsStr> = components.map(Component::as_os_str).collect();
        names.len() == self.0.len() && self.0.iter().zip(names).all(|(segment, name)| segment.matches(name))
    }
}

/// A pattern of files that are not secrets although another pattern matches them: a path
/// pattern (`~/.ssh/*.pub`), or a bare file name pattern (`.env.example`) that applies anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExcludePattern {
    Path(PathPattern),
    FileName(Segment),
}

impl ExcludePattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.contains('/') {
            PathPattern::parse(text).map(Self::Path)
        } else if text.starts_with('~') {
            Err(PatternError::NotAbsolute(text.to_owned()))
        } else {
            Segment::parse_file_name(text).map(Self::FileName)
        }
    }
}

/// Exclude patterns with `~` expanded.
#[derive(Clone, Debug, Default)]
pub struct Exclusions {
    paths: Vec<AbsolutePattern>,
    file_names: Vec<Segment>,
}

impl Exclusions {
    pub fn new(patterns: &[ExcludePattern], homes: &[PathBuf]) -> Self {
        let mut exclusions = Self::default();
        for pattern in patterns {
            match pattern {
                ExcludePattern::Path(path) => exclusions.paths.extend(path.expand(homes)),
                ExcludePattern::FileName(name) => exclusions.file_names.push(name.clone()),
            }
        }
        exclusions
    }

    pub fn excludes(&self, path: &Path) -> bool {
        let by_name = path.file_name().is_some_and(|name| self.file_names.iter().any(|pattern| pattern.matches(name)));
        by_name || self.paths.iter().any(|pattern| pattern.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_including_the_empty_one() {
        let pattern = NamePattern::parse("*_TOKEN").unwrap();
        assert!(pattern.matches(b"GITHUB_TOKEN"));
        assert!(pattern.matches(b"_TOKEN"));
        assert!(!pattern.matches(b"GITHUB_TOKENS"));
        assert!(!pattern.matches(b"github_token"), "names are case-sensitive");
        let inner = NamePattern::parse("*_SECRET*").unwrap();
        assert!(inner.matches(b"AWS_SECRET_ACCESS_KEY"));
        assert!(inner.matches(b"CLIENT_SECRET"));
        assert!(!inner.matches(b"SECRET"));
        let several = NamePattern::parse("A*B*C").unwrap();
        assert!(several.matches(b"ABC"));
        assert!(several.matches(b"AxxBxxBxxC"));
        assert!(!several.matches(b"AxxCxxB"));
        assert!(NamePattern::parse("EXACT").unwrap().matches(b"EXACT"));
        assert!(!NamePattern::parse("EXACT").unwrap().matches(b"EXAC"));
    }

    #[test]
    fn name_patterns_refuse_what_no_name_holds() {
        assert_eq!(NamePattern::parse(""), Err(PatternError::Empty));
        assert_eq!(NamePattern::parse("A=B"), Err(PatternError::NotAName("A=B".into())));
    }

    #[test]
    fn path_patterns_must_be_anchored_and_simple() {
        let error = PathPattern::parse("myapp/*.key").unwrap_err();
        assert_eq!(error.to_string(), r#"pattern "myapp/*.key" must be absolute or start with ~/"#);
        assert_eq!(PathPattern::parse("~user/x"), Err(PatternError::NotAbsolute("~user/x".into())));
        assert_eq!(PathPattern::parse("/a/**/b"), Err(PatternError::DoubleStar("/a/**/b".into())));
        assert_eq!(PathPattern::parse("/a/../b"), Err(PatternError::DotComponent("/a/../b".into())));
        assert_eq!(PathPattern::parse("~/.azure/"), Err(PatternError::TrailingSlash("~/.azure/".into())));
        assert_eq!(PathPattern::parse("/"), Err(PatternError::TrailingSlash("/".into())));
        assert_eq!(PathPattern::parse(""), Err(PatternError::Empty));
    }

    #[test]
    fn home_patterns_expand_per_home() {
        let pattern = PathPattern::parse("~/.ssh/id_*").unwrap();
        let homes = [PathBuf::from("/root"), PathBuf::from("/home/agent")];
        let expanded = pattern.expand(&homes);
        assert_eq!(expanded.len(), 2);
        assert!(expanded[0].matches(Path::new("/root/.ssh/id_ed25519")));
        assert!(expanded[1].matches(Path::new("/home/agent/.ssh/id_rsa")));
        assert!(!expanded[1].matches(Path::new("/home/agent/.ssh/known_hosts")));
        assert!(!expanded[1].matches(Path::new("/home/agent/.ssh/sub/id_rsa")));
        let absolute = PathPattern::parse("/etc//myapp/*.key").unwrap().expand(&homes);
        assert_eq!(absolute.len(), 1);
        assert!(absolute[0].matches(Path::new("/etc/myapp/a.key")));
    }

    #[test]
    fn a_star_skips_hidden_names_unless_the_pattern_starts_with_a_dot() {
        let any = Segment::parse_file_name("*").unwrap();
        assert!(any.matches(OsStr::new("project")));
        assert!(!any.matches(OsStr::new(".git")));
        let dotted = Segment::parse_file_name(".env.*").unwrap();
        assert!(dotted.matches(OsStr::new(".env.local")));
        assert!(!dotted.matches(OsStr::new(".env")));
    }

    #[test]
    fn exclusions_match_paths_or_file_names_anywhere() {
        let patterns = [ExcludePattern::parse("~/.ssh/*.pub").unwrap(), ExcludePattern::parse(".env.example").unwrap()];
        let exclusions = Exclusions::new(&patterns, &[PathBuf::from("/root")]);
        assert!(exclusions.excludes(Path::new("/root/.ssh/id_rsa.pub")));
        assert!(!exclusions.excludes(Path::new("/root/.ssh/id_rsa")));
        assert!(exclusions.excludes(Path::new("/srv/a/b/.env.example")));
        assert_eq!(ExcludePattern::parse("~x"), Err(PatternError::NotAbsolute("~x".into())));
        assert_eq!(ExcludePattern::parse("**"), Err(PatternError::DoubleStar("**".into())));
    }

    #[test]
    fn literal_patterns_take_stars_as_characters() {
        let pattern = AbsolutePattern::literal(Path::new("/etc/a*b/./key")).unwrap();
        assert!(pattern.matches(Path::new("/etc/a*b/key")));
        assert!(!pattern.matches(Path::new("/etc/axb/key")));
        assert_eq!(AbsolutePattern::literal(Path::new("etc/key")), None);
        assert_eq!(AbsolutePattern::literal(Path::new("/etc/../key")), None);
    }

    #[test]
    fn patterns_under_a_root_take_the_root_literally() {
        let pattern = PathPattern::under(Path::new("/srv/a*b"), "*/.env");
        let expanded = pattern.expand(&[]);
        assert!(expanded[0].matches(Path::new("/srv/a*b/project/.env")));
        assert!(!expanded[0].matches(Path::new("/srv/axb/project/.env")));
        assert_eq!(pattern.to_string(), "/srv/a*b/*/.env");
    }
}
