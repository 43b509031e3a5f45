//! The secret-looking variables in a process's environment, as names and fingerprints. Values
//! stay inside this module: they are fingerprinted, never copied out, logged or put in an error,
//! and the buffer that held them is zeroed before it is freed.

use std::{fs::File, io::Read};

use zeroize::Zeroizing;

use crate::{
    catalogue::pattern::EnvPatterns,
    event::{EnvScan, EnvSecret},
    fingerprint::FingerprintKey,
};

/// The most of `/proc/PID/environ` read. execve(2) caps arguments and environment together at a
/// quarter of the stack limit (2 MiB with the usual 8 MiB); past this the rest is not scanned.
pub const MAX_ENVIRON_BYTES: usize = 4 << 20;

/// The first read buffer's size; most environments fit.
const INITIAL_BUFFER: usize = 16 << 10;

/// Reads `/proc/PID/environ` and fingerprints the values of the variables whose names match.
pub fn scan_environ(pid: u32, patterns: &EnvPatterns, key: &FingerprintKey) -> EnvScan {
    match read_environ(pid) {
        Ok(environ) => scan_environ_bytes(&environ, patterns, key),
        Err(_) => EnvScan::Unreadable,
    }
}

/// The scan of an environment block: `NAME=VALUE` entries separated by NUL bytes. Entries without
/// `=` and matching variables with an empty value are skipped.
pub fn scan_environ_bytes(environ: &[u8], patterns: &EnvPatterns, key: &FingerprintKey) -> EnvScan {
    let secrets = environ
        .split(|&byte| byte == 0)
        .filter_map(|entry| {
            let equals = entry.iter().position(|&byte| byte == b'=')?;
            let (name, value) = (&entry[..equals], &entry[equals + 1..]);
            (!value.is_empty() && patterns.matches(name)).then(|| EnvSecret {
                name: String::from_utf8_lossy(name).into_owned(),
                fingerprint: key.fingerprint(value),
            })
        })
        .collect();
    EnvScan::Scanned { secrets }
}

/// The environment block of `pid`, at most [`MAX_ENVIRON_BYTES`]; when cut there, the partial
/// last entry is dropped.
fn read_environ(pid: u32) -> std::io::Result<Zeroizing<Vec<u8>>> {
    read_block(pid, "environ")
}

/// `/proc/PID/{block}` (`environ` or `cmdline`), at most [`MAX_ENVIRON_BYTES`]; when cut there,
/// the partial last entry is dropped. Wiped when dropped.
pub fn read_block(pid: u32, block: &str) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut file = File::open(format!("/proc/{pid}/{block}"))?;
    // Grown by hand rather than by Vec's reallocation, which would free the old copy unwiped.
    let mut buffer = Zeroizing::new(vec![0; INITIAL_BUFFER]);
    let mut filled = 0;
    let complete = loop {
        if filled == buffer.len() {
            if buffer.len() >= MAX_ENVIRON_BYTES {
                break false;
            }
            let mut bigger = Zeroizing::new(vec![0; (buffer.len() * 2).min(MAX_ENVIRON_BYTES)]);
            bigger[..filled].copy_from_slice(&buffer[..filled]);
            buffer = bigger;
        }
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break true,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    };
    let end =
        if complete { filled } else { buffer[..filled].iter().rposition(|&byte| byte == 0).map_or(0, |nul| nul + 1) };
    // Truncating keeps the capacity, which Zeroizing wipes in full.
    buffer.truncate(end);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Write},
        process::{Child, Command, Stdio},
    };

    use super::*;
    use crate::{catalogue::pattern::NamePattern, fingerprint::tests::random_key};

    fn patterns(texts: &[&str]) -> EnvPatterns {
        EnvPatterns::new(texts.iter().map(|text| NamePattern::parse(text).unwrap()).collect())
    }

    /// A random value that no test prints.
    fn random_value() -> String {
        random_key().fingerprint(b"test value").to_string()
    }

    #[test]
    fn only_matching_non_empty_variables_are_fingerprinted() {
        let key = random_key();
        let environ = b"PATH=/usr/bin\0GITHUB_TOKEN=one\0EMPTY_TOKEN=\0NOEQUALS\0\0DB_PASSWORD=two=three\0";
        let scan = scan_environ_bytes(environ, &patterns(&["*_TOKEN", "*_PASSWORD"]), &key);
        assert_eq!(
            scan,
            EnvScan::Scanned {
                secrets: vec![
                    EnvSecret { name: "GITHUB_TOKEN".into(), fingerprint: key.fingerprint(b"one") },
                    EnvSecret { name: "DB_PASSWORD".into(), fingerprint: key.fingerprint(b"two=three") },
                ]
            }
        );
    }

    #[test]
    fn a_block_without_a_final_nul_keeps_its_last_entry() {
        let key = random_key();
        let scan = scan_environ_bytes(b"A=1\0GH_TOKEN=x", &patterns(&["GH_TOKEN"]), &key);
        assert_eq!(
            scan,
            EnvScan::Scanned {
                secrets: vec![EnvSecret { name: "GH_TOKEN".into(), fingerprint: key.fingerprint(b"x") }]
            }
        );
    }

    #[test]
    fn a_missing_process_is_unreadable() {
        // Above the kernel's pid limit (2^22), so no process can have it.
        assert_eq!(scan_environ(u32::MAX, &patterns(&["*"]), &random_key()), EnvScan::Unreadable);
    }

    /// A child running `/bin/cat` with exactly `env`, once its exec has completed: the parent of
    /// a spawn can resume while the kernel is still building the new image's environment, so the
    /// child echoes a line first.
    fn spawn_with_env(env: &[(&str, &str)]) -> Child {
        let mut child = Command::new("/bin/cat")
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.as_mut().unwrap().write_all(b"ready\n").unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        child
    }

    fn end(mut child: Child) {
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn a_live_process_environment_is_scanned() {
        let key = random_key();
        let token = random_value();
        let child = spawn_with_env(&[("GITHUB_TOKEN", &token), ("HARMLESS", "not a secret")]);
        let scan = scan_environ(child.id(), &patterns(&["*_TOKEN"]), &key);
        end(child);
        assert_eq!(
            scan,
            EnvScan::Scanned {
                secrets: vec![EnvSecret {
                    name: "GITHUB_TOKEN".into(),
                    fingerprint: key.fingerprint(token.as_bytes())
                }]
            }
        );
    }

    #[test]
    fn a_large_environment_is_read_past_the_first_buffer() {
        let key = random_key();
        let token = random_value();
        let padding = "p".repeat(3 * INITIAL_BUFFER);
        // Command sorts variables by name: the padding comes first, so the token lies past it.
        let child = spawn_with_env(&[("A_PADDING", &padding), ("LATE_TOKEN", &token)]);
        let scan = scan_environ(child.id(), &patterns(&["*_TOKEN"]), &key);
        end(child);
        assert_eq!(
            scan,
            EnvScan::Scanned {
                secrets: vec![EnvSecret { name: "LATE_TOKEN".into(), fingerprint: key.fingerprint(token.as_bytes()) }]
            }
        );
    }
}
