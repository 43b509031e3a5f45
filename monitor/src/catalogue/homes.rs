//! The home directories that `~` in a file pattern stands for.

use std::path::{Path, PathBuf};

/// Where the default homes are read from.
const PASSWD: &str = "/etc/passwd";

/// The conventional uid of `nobody`, whose home is no one's.
const NOBODY_UID: u32 = 65534;

#[derive(Debug, thiserror::Error)]
#[error("cannot read the users' home directories from {}: {source}", PASSWD)]
pub struct HomesError {
    #[source]
    source: std::io::Error,
}

/// The configured homes, or by default the homes of root and of the ordinary users (uid 1000
/// and above) listed in `/etc/passwd` that exist now. Users that only a directory service knows,
/// or created after start, are not covered: list their homes in `catalogue.homes`.
pub fn resolve(configured: Option<&[PathBuf]>) -> Result<Vec<PathBuf>, HomesError> {
    match configured {
        Some(homes) => Ok(dedup(homes.to_vec())),
        None => {
            let passwd = std::fs::read_to_string(PASSWD).map_err(|source| HomesError { source })?;
            Ok(dedup(homes_in_passwd(&passwd).into_iter().filter(|home| home.is_dir()).collect()))
        }
    }
}

fn dedup(mut homes: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    homes.retain(|home| seen.insert(home.clone()));
    homes
}

/// The homes of root and ordinary users in a passwd(5) file, existing or not.
fn homes_in_passwd(passwd: &str) -> Vec<PathBuf> {
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let [_name, _password, uid, _gid, _gecos, home, _shell] = fields[..] else {
                return None;
            };
            let uid: u32 = uid.parse().ok()?;
            let home = Path::new(home);
            let ordinary = uid == 0 || (uid >= 1000 && uid != NOBODY_UID);
            (ordinary && home.is_absolute() && home != Path::new("/")).then(|| home.to_path_buf())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_gives_root_and_ordinary_users() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                      agent:x:1000:1000:Agent,,,:/home/agent:/bin/bash\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      odd:x:1001:1001::/:/bin/sh\n\
                      broken line\n\
                      relative:x:1002:1002::home/rel:/bin/sh\n";
        assert_eq!(homes_in_passwd(passwd), [PathBuf::from("/root"), PathBuf::from("/home/agent")]);
    }

    #[test]
    fn configured_homes_are_taken_as_given_without_duplicates() {
        let configured = [PathBuf::from("/home/a"), PathBuf::from("/home/b"), PathBuf::from("/home/a")];
        assert_eq!(resolve(Some(&configured)).unwrap(), [PathBuf::from("/home/a"), PathBuf::from("/home/b")]);
    }
}
