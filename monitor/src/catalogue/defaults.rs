//! The built-in catalogue: where common tools keep credentials, and the names of environment
//! variables that hold them. Plain data; `catalogue::Catalogue` parses it.
//!
//! Only files whose content is a credential are listed, so that reading a tool's ordinary
//! settings does not count as using a secret: `~/.aws/config` is left out (profiles and regions;
//! add it in the config where it holds keys), as are `~/.gemini/settings.json`,
//! `~/.codex/config.toml` and `~/.claude/settings.json`, whose MCP `env` sections may hold tokens
//! but usually do not.

/// Secret files under each home directory (`~` is every configured home).
pub const HOME_FILES: &[&str] = &[
    // Cloud CLIs.
    "~/.aws/credentials",
    "~/.aws/sso/cache/*.json",
    "~/.aws/cli/cache/*.json",
    // Includes application_default_credentials.json.
    "~/.config/gcloud/*credentials*.json",
    "~/.config/gcloud/credentials.db",
    "~/.config/gcloud/access_tokens.db",
    "~/.config/gcloud/legacy_credentials/*/adc.json",
    "~/.config/gcloud/legacy_credentials/*/.boto",
    "~/.azure/msal_token_cache.json",
    "~/.azure/msal_token_cache.bin",
    "~/.azure/accessTokens.json",
    "~/.azure/service_principal_entries.json",
    "~/.azure/service_principal_entries.bin",
    "~/.oci/config",
    "~/.config/doctl/config.yaml",
    // Kubernetes.
    "~/.kube/config",
    // SSH private keys (public halves are excluded below).
    "~/.ssh/id_*",
    "~/.ssh/*.pem",
    // Registries and package managers.
    "~/.docker/config.json",
    "~/.npmrc",
    "~/.yarnrc.yml",
    "~/.pypirc",
    "~/.cargo/credentials.toml",
    "~/.cargo/credentials",
    "~/.gem/credentials",
    "~/.terraform.d/credentials.tfrc.json",
    // Git hosting and generic credential stores.
    "~/.git-credentials",
    "~/.config/git/credentials",
    "~/.netrc",
    "~/.config/gh/hosts.yml",
    "~/.config/glab-cli/config.yml",
    "~/.vault-token",
    "~/.pgpass",
    "~/.my.cnf",
    "~/.config/rclone/rclone.conf",
    "~/.s3cfg",
    // Coding agents and their MCP servers.
    "~/.claude/.credentials.json",
    "~/.claude.json",
    "~/.codex/auth.json",
    "~/.gemini/oauth_creds.json",
    "~/.gemini/mcp-oauth-tokens.json",
    "~/.gemini/.env",
    "~/.cursor/mcp.json",
    "~/.codeium/windsurf/mcp_config.json",
    "~/.config/Claude/claude_desktop_config.json",
    "~/.config/Code/User/mcp.json",
    "~/.config/github-copilot/hosts.json",
    "~/.config/github-copilot/apps.json",
    "~/.config/*/mcp.json",
    "~/.local/share/opencode/auth.json",
    "~/.aws/amazonq/mcp.json",
    "~/.cache/huggingface/token",
    "~/.huggingface/token",
];

/// Secret files at fixed places.
pub const SYSTEM_FILES: &[&str] =
    &["/var/run/secrets/kubernetes.io/serviceaccount/token", "/etc/kubernetes/admin.conf", "/etc/rancher/k3s/k3s.yaml"];

/// Files matched above that are not secrets.
pub const EXCLUDE: &[&str] = &["~/.ssh/*.pub", ".env.example", ".env.sample", ".env.template", ".env.dist"];

/// Secret files looked for in each project root (`catalogue.dotenv_roots`) and in its
/// subdirectories down to `catalogue.dotenv_depth`.
pub const PROJECT_FILES: &[&str] =
    &[".env", ".env.*", ".npmrc", ".mcp.json", "mcp.json", ".cursor/mcp.json", ".vscode/mcp.json"];

/// How many directory levels below a project root are searched by default.
pub const PROJECT_DEPTH: u32 = 2;

/// Environment variable names that hold secrets.
pub const ENV: &[&str] = &[
    "*_TOKEN",
    "*_SECRET*",
    "*_API_KEY",
    "*_APIKEY",
    "*_ACCESS_KEY*",
    "*_PRIVATE_KEY",
    "*_PASSWORD",
    "*_PASSWD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "VAULT_TOKEN",
    "PGPASSWORD",
    "MYSQL_PWD",
    "DATABASE_URL",
    "DOCKER_AUTH_CONFIG",
];
