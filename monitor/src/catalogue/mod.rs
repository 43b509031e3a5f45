//! The catalogue of secrets: which files and which environment variables hold credentials.
//! Built from the built-in [`defaults`] and the `[catalogue]` section of the config.

pub mod defaults;
pub mod homes;
pub mod pattern;

use std::path::{Path, PathBuf};

use self::pattern::{EnvPatterns, ExcludePattern, NamePattern, PathPattern};

/// The `[catalogue]` section of the config; [`Catalogue::from_config`] merges it with the
/// built-in catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogueConfig {
    /// Include the built-in catalogue.
    pub defaults: bool,
    pub files: Vec<PathPattern>,
    pub exclude: Vec<ExcludePattern>,
    pub env: Vec<NamePattern>,
    /// Directories searched for `.env` files and project MCP configs.
    pub dotenv_roots: Vec<PathBuf>,
    /// How many directory levels below each root are searched.
    pub dotenv_depth: u32,
    /// What `~` stands for; `None`: root's and the ordinary users' homes (see [`homes`]).
    pub homes: Option<Vec<PathBuf>>,
}

impl Default for CatalogueConfig {
    fn default() -> Self {
        Self {
            defaults: true,
            files: Vec::new(),
            exclude: Vec::new(),
            env: Vec::new(),
            dotenv_roots: Vec::new(),
            dotenv_depth: defaults::PROJECT_DEPTH,
            homes: None,
        }
    }
}


/// What counts as a secret on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalogue {
    /// Secret file patterns, project roots already expanded; `~/` ones still to be expanded per
    /// home.
    pub files: Vec<PathPattern>,
    /// Files that match `files` but are not secrets.
    pub exclude: Vec<ExcludePattern>,
    pub env: EnvPatterns,
}

impl Catalogue {
    pub fn from_config(config: &CatalogueConfig) -> Self {
        let CatalogueConfig { defaults, files, exclude, env, dotenv_roots, dotenv_depth, homes: _ } = config;
        let builtin = |table: &[&str]| -> Vec<PathPattern> {
            if *defaults {
                table.iter().map(|text| PathPattern::parse(text).expect("built-in file patterns are valid")).collect()
            } else {
                Vec::new()
            }
        };
        let mut all_files = builtin(defaults::HOME_FILES);
        all_files.extend(builtin(defaults::SYSTEM_FILES));
        all_files.extend(files.iter().cloned());
        // The roots are the user's own ask, so their files are looked for even without defaults.
        for root in dotenv_roots {
            all_files.extend(project_patterns(root, *dotenv_depth));
        }

        let mut all_exclude = Vec::new();
        if *defaults {
            all_exclude.extend(
                defaults::EXCLUDE
                    .iter()
                    .map(|text| ExcludePattern::parse(text).expect("built-in exclusions are valid")),
            );
        }
        all_exclude.extend(exclude.iter().cloned());

        let mut all_env = Vec::new();
        if *defaults {
            all_env.extend(
                defaults::ENV.iter().map(|text| NamePattern::parse(text).expect("built-in env patterns are valid")),
            );
        }
        all_env.extend(env.iter().cloned());

        Self { files: all_files, exclude: all_exclude, env: EnvPatterns::new(all_env) }
    }
}

/// The project files under `root` and under each directory down to `depth` levels below it.
fn project_patterns(root: &Path, depth: u32) -> impl Iterator<Item = PathPattern> + '_ {
    (0..=depth).flat_map(move |level| {
        let directories = "*/".repeat(level as usize);
        defaults::PROJECT_FILES.iter().map(move |name| PathPattern::under(root, &format!("{directories}{name}")))
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn matches(catalogue: &Catalogue, homes: &[PathBuf], path: &str) -> bool {
        let path = Path::new(path);
        let exclusions = pattern::Exclusions::new(&catalogue.exclude, homes);
        let listed =
            catalogue.files.iter().flat_map(|pattern| pattern.expand(homes)).any(|pattern| pattern.matches(path));
        listed && !exclusions.excludes(path)
    }

    #[test]
    fn the_built_in_catalogue_covers_common_credentials() {
        let catalogue = Catalogue::from_config(&CatalogueConfig::default());
        let homes = [PathBuf::from("/home/agent"), PathBuf::from("/root")];
        for secret in [
            "/home/agent/.aws/credentials",
            "/root/.kube/config",
            "/home/agent/.ssh/id_ed25519",
            "/home/agent/.config/gcloud/application_default_credentials.json",
            "/home/agent/.claude/.credentials.json",
            "/home/agent/.config/someagent/mcp.json",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
        ] {
            assert!(matches(&catalogue, &homes, secret), "{secret} should be a secret");
        }
        for ordinary in
            ["/home/agent/.ssh/id_ed25519.pub", "/home/agent/.aws/config", "/home/other/.netrc", "/home/agent/.bashrc"]
        {
            assert!(!matches(&catalogue, &homes, ordinary), "{ordinary} should not be a secret");
        }
        for name in ["GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "STRIPE_API_KEY", "PGPASSWORD", "DB_PASSWORD"] {
            assert!(catalogue.env.matches(name.as_bytes()), "{name} should be a secret");
        }
        for name in ["PATH", "HOME", "TOKENIZERS_PARALLELISM", "SSH_AUTH_SOCK"] {
            assert!(!catalogue.env.matches(name.as_bytes()), "{name} should not be a secret");
        }
    }

    #[test]
    fn project_roots_are_searched_to_the_configured_depth() {
        let config = CatalogueConfig {
            dotenv_roots: vec![PathBuf::from("/srv/agents")],
            dotenv_depth: 1,
            ..CatalogueConfig::default()
        };
        let catalogue = Catalogue::from_config(&config);
        assert!(matches(&catalogue, &[], "/srv/agents/.env"));
        assert!(matches(&catalogue, &[], "/srv/agents/web/.env.production"));
        assert!(matches(&catalogue, &[], "/srv/agents/web/.cursor/mcp.json"));
        assert!(!matches(&catalogue, &[], "/srv/agents/web/app/.env"), "deeper than the depth");
        assert!(!matches(&catalogue, &[], "/srv/agents/.git/.env"), "hidden directories are not searched");
        assert!(!matches(&catalogue, &[], "/srv/agents/web/.env.example"));
    }

    #[test]
    fn without_defaults_only_the_configured_secrets_remain() {
        let config = CatalogueConfig {
            defaults: false,
            files: vec![PathPattern::parse("~/.myapp/token").unwrap()],
            env: vec![NamePattern::parse("MYAPP_*_KEY").unwrap()],
            ..CatalogueConfig::default()
        };
        let catalogue = Catalogue::from_config(&config);
        assert_eq!(catalogue.files, [PathPattern::parse("~/.myapp/token").unwrap()]);
        assert!(catalogue.exclude.is_empty());
        assert!(catalogue.env.matches(b"MYAPP_DB_KEY"));
        assert!(!catalogue.env.matches(b"GITHUB_TOKEN"));
    }
}
