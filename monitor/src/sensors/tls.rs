//! Where the TLS uprobes (`monitor-ebpf/src/tls.rs`) go: the write functions of the TLS libraries
//! this host has, found in the dynamic linker's directories. A uprobe sits on a file's inode, so
//! every process that maps that file is covered, whatever started it; other copies (a container
//! image's own, a vendored or statically linked library) are not.

use std::path::PathBuf;

use aya::{
    programs::{uprobe::UProbeScope, UProbe},
    Ebpf,
};

use super::loader::SensorGap;

/// The program every write function gets: they all take `(session, buf, len, ...)`.
pub const PROGRAM: &str = "tls_write";

/// A library and its write functions: (file name, gap capability, [(function, hook label)]).
type Library = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// OpenSSL 3 (Python, curl, git, most of Debian) and GnuTLS (wget, libcurl3-gnutls users).
/// `SSL_write` does not call `SSL_write_ex` (both call an internal function), so a request is
/// seen once; `gnutls_record_send2` and `gnutls_record_send_range` are not probed.
pub const LIBRARIES: [Library; 2] = [
    ("libssl.so.3", "tls:openssl", &[("SSL_write", "uprobe/SSL_write"), ("SSL_write_ex", "uprobe/SSL_write_ex")]),
    ("libgnutls.so.30", "tls:gnutls", &[("gnutls_record_send", "uprobe/gnutls_record_send")]),
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

/// Loads the program and attaches it to every library found; returns the attached hooks' labels
/// and a gap for each library that is missing or refused the probe.
pub fn attach(ebpf: &mut Ebpf) -> (Vec<&'static str>, Vec<SensorGap>) {
    let mut hooks = Vec::new();
    let mut gaps = Vec::new();
    let program: Option<&mut UProbe> = ebpf.program_mut(PROGRAM).and_then(|program| program.try_into().ok());
    let Some(program) = program else {
        let reason = format!("the sensors' object has no uprobe program {PROGRAM}");
        gaps.extend(LIBRARIES.iter().map(|&(_, capability, _)| SensorGap { capability, reason: reason.clone() }));
        return (hooks, gaps);
    };
    if let Err(error) = program.load() {
        let reason = format!("the uprobe program does not load: {error}");
        gaps.extend(LIBRARIES.iter().map(|&(_, capability, _)| SensorGap { capability, reason: reason.clone() }));
        return (hooks, gaps);
    }
    for (file, capability, functions) in LIBRARIES {
        let Some(path) = find(file) else {
            let searched: Vec<String> = library_dirs().iter().map(|dir| dir.display().to_string()).collect();
            gaps.push(SensorGap { capability, reason: format!("{file} is not in {}", searched.join(", ")) });
            continue;
        };
        for &(function, label) in functions {
            match program.attach(function, &path, UProbeScope::AllProcesses) {
                Ok(_) => hooks.push(label),
                Err(error) => gaps.push(SensorGap {
                    capability,
                    reason: format!("cannot attach a uprobe to {function} in {}: {error}", path.display()),
                }),
            }
        }
    }
    (hooks, gaps)
}
