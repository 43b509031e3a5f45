//! Decoy credentials: realistic fake secrets planted at configured paths, in the formats the
//! catalogue knows (AWS INI, kube config, netrc, gh hosts, .env, an MCP config), and fake values
//! for a task's environment. Nothing legitimate uses them: any task touching one is
//! `decoy_touched`. Values are random, written once, and never appear in any output.

use std::{
    io,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use zeroize::Zeroizing;

use crate::fingerprint::fill_random;

/// The `[decoys]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecoyConfig {
    /// Where to plant decoy files: absolute, or `~/…` for each home; no wildcards.
    pub files: Vec<String>,
    /// Executables whose touches outside any task are not reported (backup tools, indexers).
    pub ignore: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot plant the decoy {}", path.display())]
pub struct PlantError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The decoy files `config` names, `~/` expanded for each home.
pub fn paths(config: &DecoyConfig, homes: &[PathBuf]) -> Vec<PathBuf> {
    config
        .files
        .iter()
        .flat_map(|file| match file.strip_prefix("~/") {
            Some(relative) => homes.iter().map(|home| home.join(relative)).collect(),
            None => vec![PathBuf::from(file)],
        })
        .collect()
}

/// Writes a decoy at each path that holds nothing yet (an existing file is never replaced),
/// owned by the owner of the home it is in, mode 0600 like the real thing. Returns how many it
/// planted and what it could not plant.
pub fn plant(paths: &[PathBuf]) -> (usize, Vec<PlantError>) {
    let mut planted = 0;
    let mut errors = Vec::new();
    for path in paths {
        match plant_one(path) {
            Ok(true) => planted += 1,
            Ok(false) => {}
            Err(source) => errors.push(PlantError { path: path.clone(), source }),
        }
    }
    (planted, errors)
}

fn plant_one(path: &Path) -> io::Result<bool> {
    if path.symlink_metadata().is_ok() {
        return Ok(false);
    }
    let parent = path.parent().ok_or_else(|| io::Error::other("a decoy path needs a parent directory"))?;
    std::fs::create_dir_all(parent)?;
    let owner = owner_of(parent)?;
    let content = content_for(path)?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    io::Write::write_all(&mut file, content.as_bytes())?;
    std::os::unix::fs::fchown(&file, Some(owner.0), Some(owner.1))?;
    Ok(true)
}

/// The uid and gid that own the nearest existing directory at or above `dir`.
fn owner_of(dir: &Path) -> io::Result<(u32, u32)> {
    let meta = std::fs::metadata(dir)?;
    Ok((meta.uid(), meta.gid()))
}

/// `length` random characters of `alphabet`.
fn random_text(alphabet: &[u8], length: usize) -> io::Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(vec![0u8; length]);
    fill_random(&mut bytes)?;
    Ok(Zeroizing::new(bytes.iter().map(|byte| alphabet[usize::from(*byte) % alphabet.len()] as char).collect()))
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A fake value shaped like what variable `name` usually holds.
pub fn fake_value(name: &str) -> io::Result<Zeroizing<String>> {
    let upper = name.to_ascii_uppercase();
    let (prefix, alphabet, length) = if upper.contains("GITHUB") || upper.starts_with("GH_") {
        ("ghp_", ALNUM, 36)
    } else if upper == "AWS_ACCESS_KEY_ID" {
        ("AKIA", UPPER_DIGITS, 16)
    } else if upper.contains("OPENAI") {
        ("sk-proj-", ALNUM, 48)
    } else if upper.contains("ANTHROPIC") {
        ("sk-ant-api03-", ALNUM, 64)
    } else {
        ("", ALNUM, 40)
    };
    Ok(Zeroizing::new(format!("{prefix}{}", random_text(alphabet, length)?.as_str())))
}

/// A decoy file's content in the format its name suggests.
fn content_for(path: &Path) -> io::Result<Zeroizing<String>> {
    let text = path.to_string_lossy();
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let secret = random_text(ALNUM, 40)?;
    let content = if text.contains(".aws/") {
        let key_id = random_text(UPPER_DIGITS, 16)?;
        format!("[default]\naws_access_key_id = AKIA{}\naws_secret_access_key = {}\n", key_id.as_str(), secret.as_str())
    } else if text.contains(".kube/") || name.contains("kubeconfig") {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://10.0.0.1:6443\n  name: prod\n\
             users:\n- name: deploy\n  user:\n    token: {}\ncontexts:\n- context:\n    cluster: prod\n    user: deploy\n  \
             name: prod\ncurrent-context: prod\n",
            secret.as_str()
        )
    } else if name.contains("netrc") {
        format!("machine api.github.com\n  login deploy\n  password {}\n", secret.as_str())
    } else if name.starts_with("hosts.yml") {
        format!("github.com:\n    oauth_token: gho_{}\n    user: deploy\n", &secret[..36])
    } else if name.contains(".env") {
        format!("API_KEY={}\nDATABASE_URL=postgres://app:{}@db:5432/app\n", secret.as_str(), &secret[..16])
    } else if name.ends_with(".json") {
        format!(
            "{{\"mcpServers\": {{\"github\": {{\"command\": \"npx\", \"args\": [\"-y\", \"@modelcontextprotocol/server-github\"], \
             \"env\": {{\"GITHUB_PERSONAL_ACCESS_TOKEN\": \"ghp_{}\"}}}}}}}}\n",
            &secret[..36]
        )
    } else {
        format!("token: {}\n", secret.as_str())
    };
    Ok(Zeroizing::new(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_look_like_the_real_thing_and_existing_files_are_never_replaced() {
        let home = tempfile::tempdir().unwrap();
        let config = DecoyConfig {
            files: vec!["~/.aws/credentials.old".into(), "~/.config/gh/hosts.yml.bak".into()],
            ignore: Vec::new(),
        };
        let paths = paths(&config, &[home.path().to_owned()]);
        assert_eq!(paths, [home.path().join(".aws/credentials.old"), home.path().join(".config/gh/hosts.yml.bak")]);
        std::fs::create_dir_all(home.path().join(".config/gh")).unwrap();
        std::fs::write(&paths[1], "mine").unwrap();
        let (planted, errors) = plant(&paths);
        assert_eq!((planted, errors.len()), (1, 0));
        let aws = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(aws.starts_with("[default]\naws_access_key_id = AKIA"), "an AWS INI file");
        assert_eq!(std::fs::metadata(&paths[0]).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&paths[1]).unwrap(), "mine", "never replaced");
        assert_eq!(plant(&paths).0, 0, "planted once");
    }

    #[test]
    fn fake_values_are_shaped_like_the_variable_and_differ() {
        let first = fake_value("GITHUB_TOKEN").unwrap();
        assert!(first.starts_with("ghp_") && first.len() == 40);
        assert_ne!(first, fake_value("GITHUB_TOKEN").unwrap());
        assert!(fake_value("AWS_ACCESS_KEY_ID").unwrap().starts_with("AKIA"));
    }
}
