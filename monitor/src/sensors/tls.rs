//! Where the TLS uprobes (`monitor-ebpf/src/tls.rs`) go: the write functions of the TLS libraries
//! this host has, found in the dynamic linker's directories. A uprobe sits on a file's inode, so
//! every process that maps that file is covered, whatever started it; other copies (a container
//! image's own, a vendored or statically linked library) are not.

use std::path::PathBuf;

use aya::{
    programs::{uprobe::UProbeScope, UProbe},
    Ebpf,
};

use super::loader::{program_mut, SensorError, SensorGap};
use crate::error_chain::ErrorChain;

/// The programs: every write function takes `(session, buf, len, ...)`, `SSL_write`'s `len` an
/// `int`, the others' a `size_t`.
const PROGRAMS: [&str; 2] = ["tls_write_int", "tls_write"];

/// A write function: (symbol, program, hook label).
type Function = (&'static str, &'static str, &'static str);

/// A library and its write functions: (file name, gap capability, functions).
type Library = (&'static str, &'static str, &'static [Function]);

/// OpenSSL 3 (Python, curl, git, most of Debian) and GnuTLS (wget, libcurl3-gnutls users).
/// `SSL_write` does not call `SSL_write_ex` (both call an internal function), so a request is
/// seen once; `gnutls_record_send2` and `gnutls_record_send_range` are not probed.
pub const LIBRARIES: [Library; 2] = [
    (
        "libssl.so.3",
        "tls:openssl",
        &[("SSL_write", "tls_write_int", "uprobe/SSL_write"), ("SSL_write_ex", "tls_write", "uprobe/SSL_write_ex")],
    ),
    ("libgnutls.so.30", "tls:gnutls", &[("gnutls_record_send", "tls_write", "uprobe/gnutls_record_send")]),
];

/// The dynamic linker's directories, multiarch first.
fn library_dirs() -> Vec<PathBuf> {
    let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
    let mut dirs = Vec::new();
    for prefix in ["/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(prefix).join(&multiarch));
    }
    dirs.extend(["/lib64", "/usr/lib64", "/lib", "/usr/lib"].map(PathBuf::from));
    dirs
}

/// The file `name` in the first library directory that has it, symlinks resolved.
pub fn find(name: &str) -> Option<PathBuf> {
    library_dirs().into_iter().find_map(|dir| std::fs::canonicalize(dir.join(name)).ok())
}

/// Loads the programs and attaches them to every library found; returns the attached hooks'
/// labels and a gap for each library that is missing or refused the probe.
pub fn attach(ebpf: &mut Ebpf) -> (Vec<&'static str>, Vec<SensorGap>) {
    let mut hooks = Vec::new();
    let mut gaps = Vec::new();
    for name in PROGRAMS {
        let loaded = program_mut::<UProbe>(ebpf, name)
            .and_then(|program| program.load().map_err(|source| SensorError::Attach { name, source }));
        if let Err(error) = loaded {
            let reason = ErrorChain(&error).to_string();
            gaps.extend(LIBRARIES.iter().map(|&(_, capability, _)| SensorGap { capability, reason: reason.clone() }));
            return (hooks, gaps);
        }
    }
    for (file, capability, functions) in LIBRARIES {
        let Some(path) = find(file) else {
            let searched: Vec<String> = library_dirs().iter().map(|dir| dir.display().to_string()).collect();
            gaps.push(SensorGap { capability, reason: format!("{file} is not in {}", searched.join(", ")) });
            continue;
        };
        for &(function, name, label) in functions {
            let attached = program_mut::<UProbe>(ebpf, name)
                .and_then(|program| program.attach(function, &path, UProbeScope::AllProcesses).map_err(|source| SensorError::Attach { name, source }));
            match attached {
                Ok(_) => hooks.push(label),
                Err(error) => gaps.push(SensorGap {
                    capability,
                    reason: format!("{function} in {}: {}", path.display(), ErrorChain(&error)),
                }),
            }
        }
    }
    (hooks, gaps)
}
