//! The guest kernel: Debian's cloud kernel, resolved and downloaded through apt, and cached under
//! `target/vm/kernel/` so that only the first run (or a new kernel version) needs the network.
//!
//! Only `boot/vmlinuz-*` is kept: the cloud kernel has BTF, `CONFIG_BPF_LSM`, io_uring, the
//! serial console and the initramfs unpacker built in, so the guest needs no module.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{cmd, error::Error};

/// The meta package that depends on the current cloud kernel image.
pub const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// A kernel image ready to boot.
#[derive(Debug)]
pub struct Kernel {
    /// e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// The kernel that `apt-cache depends` names today, from the cache or downloaded. Without apt
/// lists (no `apt-get update` yet) a kernel cached earlier is used, and said so.
pub fn ensure(cache: &Path) -> Result<Kernel, Error> {
    let package = match resolve() {
        Ok(package) => package,
        Err(error) => {
            let Some(cached) = any_cached(cache) else {
                return Err(error);
            };
            eprintln!("vm: {error}; using the cached {}", cached.package);
            return Ok(cached);
        }
    };
    let dir = cache.join(&package);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.is_file() {
        return Ok(Kernel { package, vmlinuz });
    }
    eprintln!("vm: downloading {package} (once; cached in {})", dir.display());
    let download = cache.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).map_err(|source| io(&download, source))?;
    cmd::checked(Command::new("apt-get").arg("download").arg(&package).current_dir(&download))?;
    let deb = only_file_ending(&download, ".deb")?;
    let unpacked = download.join("unpacked");
    cmd::checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let image = only_file_starting(&unpacked.join("boot"), "vmlinuz-")?;
    fs::create_dir_all(&dir).map_err(|source| io(&dir, source))?;
    fs::rename(&image, &vmlinuz).map_err(|source| io(&vmlinuz, source))?;
    let _ = fs::remove_dir_all(&download);
    Ok(Kernel { package, vmlinuz })
}

/// The kernel image package `linux-image-cloud-amd64` depends on.
fn resolve() -> Result<String, Error> {
    let mut query = Command::new("apt-cache");
    query.args(["depends", META_PACKAGE]);
    let output = cmd::output(&mut query)?;
    image_package(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
        Error::Vm(format!(
            "`{}` names no kernel image (exit {}): are the apt lists there (`apt-get update`)?",
            cmd::cmdline(&query),
            output.status
        ))
    })
}

/// From `apt-cache depends` output: the first `Depends: linux-image-…` line.
pub fn image_package(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let package = line.trim().strip_prefix("Depends:")?.trim();
        package.starts_with("linux-image-").then(|| package.to_owned())
    })
}

fn any_cached(cache: &Path) -> Option<Kernel> {
    let mut cached: Vec<Kernel> = fs::read_dir(cache)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| Kernel {
            package: entry.file_name().to_string_lossy().into_owned(),
            vmlinuz: entry.path().join("vmlinuz"),
        })
        .filter(|kernel| kernel.vmlinuz.is_file())
        .collect();
    cached.sort_by(|a, b| a.package.cmp(&b.package));
    cached.pop()
}

fn only_file_ending(dir: &Path, suffix: &str) -> Result<PathBuf, Error> {
    only_file(dir, |name| name.ends_with(suffix), suffix)
}

fn only_file_starting(dir: &Path, prefix: &str) -> Result<PathBuf, Error> {
    only_file(dir, |name| name.starts_with(prefix), prefix)
}

fn only_file(dir: &Path, wanted: impl Fn(&str) -> bool, what: &str) -> Result<PathBuf, Error> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|source| io(dir, source))?
        .filter_map(Result::ok)
        .filter(|entry| wanted(&entry.file_name().to_string_lossy()))
        .map(|entry| entry.path())
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(Error::Vm(format!("expected one `{what}` file in {}, found {n}", dir.display()))),
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::File { path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_package_comes_from_the_depends_line() {
        let output = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(image_package(output).as_deref(), Some("linux-image-6.1.0-56-cloud-amd64"));
        assert_eq!(image_package("linux-image-cloud-amd64\n"), None);
        assert_eq!(image_package("x\n  Depends: initramfs-tools\n"), None);
    }
}
