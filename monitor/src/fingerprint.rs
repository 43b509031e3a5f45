//! Keyed fingerprints of secret values. The key is per host (`<state_dir>/host.key`, created on
//! first start) or shared by a fleet (`key_file` in the config), readable by its owner only: with
//! it a fingerprint can be checked against a guessed value, so it must stay as private as the
//! secrets.

use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::{ErrorKind, Read, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use zeroize::Zeroizing;

use crate::event::Fingerprint;

/// The key's length in bytes, BLAKE3's key size.
pub const KEY_LEN: usize = blake3::KEY_LEN;

/// The host key's file name in the state directory.
pub const HOST_KEY_FILE: &str = "host.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot create state directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create fingerprint key {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot get random bytes for a new fingerprint key: {0}")]
    Random(#[source] std::io::Error),
    #[error("cannot read fingerprint key {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fingerprint key {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("fingerprint key {} has mode {mode:04o}: group and others must have no access (chmod 600)", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("fingerprint key {} is owned by uid {owner}, not by uid {euid} that runs credwatch", path.display())]
    WrongOwner { path: PathBuf, owner: u32, euid: u32 },
    #[error("fingerprint key {} holds {len} bytes; it must hold exactly {KEY_LEN}", path.display())]
    WrongSize { path: PathBuf, len: u64 },
}

/// The secret key of [`Fingerprint`]s; wiped from memory when dropped.
pub struct FingerprintKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

impl FingerprintKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The fleet key in `key_file`, which must exist, or else the host key in `state_dir`,
    /// created on first start.
    pub fn for_host(state_dir: &Path, key_file: Option<&Path>) -> Result<Self, KeyError> {
        match key_file {
            Some(path) => Self::load(path),
            None => Self::load_or_create(&state_dir.join(HOST_KEY_FILE)),
        }
    }

    /// Reads a key file, refusing one that others could read or change.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read_error = |source| KeyError::Read { path: path.to_owned(), source };
        let mut file = File::open(path).map_err(read_error)?;
        // Checked on the open file, so that the file checked is the file read.
        let metadata = file.metadata().map_err(read_error)?;
        if !metadata.is_file() {
            return Err(KeyError::NotAFile { path: path.to_owned() });
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed { path: path.to_owned(), mode });
        }
        let euid = effective_uid();
        if metadata.uid() != euid {
            return Err(KeyError::WrongOwner { path: path.to_owned(), owner: metadata.uid(), euid });
        }
        if metadata.len() != KEY_LEN as u64 {
            return Err(KeyError::WrongSize { path: path.to_owned(), len: metadata.len() });
        }
        let mut key = Zeroizing::new([0; KEY_LEN]);
        file.read_exact(key.as_mut()).map_err(read_error)?;
        Ok(Self(key))
    }

    /// Reads the key at `path`, or creates it (and its directory, mode 0700) with fresh random
    /// bytes if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        if let Some(dir) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| KeyError::CreateDir { path: dir.to_owned(), source })?;
        }
        let created = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
        let mut file = match created {
            Ok(file) => file,
            // Already there, from an earlier start or another daemon starting at the same time.
            Err(error) if error.kind() == ErrorKind::AlreadyExists => return Self::load(path),
            Err(source) => return Err(KeyError::Create { path: path.to_owned(), source }),
        };
        let mut key = Zeroizing::new([0; KEY_LEN]);
        fill_random(key.as_mut()).map_err(KeyError::Random)?;
        if let Err(source) = file.write_all(key.as_ref()).and_then(|()| file.sync_all()) {
            // A short key file would be refused at every later start.
            let _ = std::fs::remove_file(path);
            return Err(KeyError::Create { path: path.to_owned(), source });
        }
        Ok(Self(key))
    }

    /// Keyed BLAKE3 of `value`, truncated to 128 bits.
    pub fn fingerprint(&self, value: &[u8]) -> Fingerprint {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(value);
        let hash = hasher.finalize();
        // The hasher's buffer holds the last block of the value.
        zeroize::Zeroize::zeroize(&mut hasher);
        let mut fingerprint = [0; 16];
        fingerprint.copy_from_slice(&hash.as_bytes()[..16]);
        Fingerprint(fingerprint)
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Fills `buffer` from the kernel's random pool, waiting for it to be initialised at early boot.
pub fn fill_random(buffer: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        let rest = &mut buffer[filled..];
        // SAFETY: the pointer and length describe `rest`, which is valid for writes.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match got {
            -1 => {
                let error = std::io::Error::last_os_error();
                if error.kind() != ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            got => filled += got as usize,
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh random key for tests.
    pub(crate) fn random_key() -> FingerprintKey {
        let mut bytes = [0; KEY_LEN];
        fill_random(&mut bytes).unwrap();
        FingerprintKey::from_bytes(bytes)
    }

    #[test]
    fn fingerprints_are_keyed_and_deterministic() {
        let key = FingerprintKey::from_bytes([7; KEY_LEN]);
        let other = FingerprintKey::from_bytes([8; KEY_LEN]);
        assert_eq!(key.fingerprint(b"value"), key.fingerprint(b"value"));
        assert_ne!(key.fingerprint(b"value"), key.fingerprint(b"valuf"));
        assert_ne!(key.fingerprint(b"value"), other.fingerprint(b"value"));
        let expected = blake3::keyed_hash(&[7; KEY_LEN], b"value");
        assert_eq!(key.fingerprint(b"value").0, expected.as_bytes()[..16]);
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(format!("{:?}", FingerprintKey::from_bytes([0xab; KEY_LEN])), "FingerprintKey(..)");
    }

    #[test]
    fn the_host_key_is_created_once_private_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let path = state.join(HOST_KEY_FILE);
        let created = FingerprintKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(metadata.len(), KEY_LEN as u64);
        let loaded = FingerprintKey::load_or_create(&path).unwrap();
        assert_eq!(created.fingerprint(b"x"), loaded.fingerprint(b"x"));
        let other = FingerprintKey::load_or_create(&dir.path().join("other").join(HOST_KEY_FILE)).unwrap();
        assert_ne!(created.fingerprint(b"x"), other.fingerprint(b"x"));
    }

    #[test]
    fn an_exposed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HOST_KEY_FILE);
        FingerprintKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = FingerprintKey::load_or_create(&path).unwrap_err();
        assert!(matches!(error, KeyError::Exposed { mode: 0o640, .. }), "{error}");
        assert!(error.to_string().contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn a_key_file_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap().write_all(&[1; 16]).unwrap();
        let error = FingerprintKey::load(&path).unwrap_err();
        assert!(matches!(error, KeyError::WrongSize { len: 16, .. }), "{error}");
        assert_eq!(
            error.to_string(),
            format!("fingerprint key {} holds 16 bytes; it must hold exactly 32", path.display())
        );
    }

    #[test]
    fn a_missing_fleet_key_is_an_error_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let fleet_key = dir.path().join("fleet.key");
        assert!(matches!(FingerprintKey::for_host(dir.path(), Some(&fleet_key)), Err(KeyError::Read { .. })));
        assert!(!dir.path().join("fleet.key").exists());
    }
}
