//! The shared libraries a dynamic executable needs, as `ldd` lists them: what the test VM's
//! initramfs and the OCI image carry beside the binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{cmd, error::Error};

/// The libraries and the dynamic loader `ldd` lists for `program`; none for a static binary.
pub fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, Error> {
    let output = cmd::output(Command::new("ldd").arg(program))?;
    Ok(ldd_paths(&String::from_utf8_lossy(&output.stdout)))
}

/// Paths from `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and `/lib64/ld-linux….so.2
/// (0x…)`; the vDSO has no file, and a static binary prints `not a dynamic executable`.
fn ldd_paths(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, resolved)) => resolved.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(ldd),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(ldd_paths("\tnot a dynamic executable\n").is_empty());
    }
}
