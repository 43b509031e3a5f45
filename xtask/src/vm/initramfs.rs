//! The guest's root file system: busybox, the programs under test at the same absolute paths as
//! on the host (test binaries find `credwatch` through a path compiled into them), the shared
//! libraries `ldd` lists for each, and an `/init` script.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::BufWriter,
    path::{Path, PathBuf},
    process::Command,
};

use super::cpio::Archive;
use crate::{cmd, error::Error, libraries::shared_libraries};

/// Where Debian's busybox-static installs it.
pub const BUSYBOX: &str = "/bin/busybox";

/// Directories every guest has, whether or not a file lands in them.
const DIRECTORIES: &[&str] = &["/bin", "/dev", "/etc", "/proc", "/root", "/run", "/sys", "/tmp"];

/// What goes into one initramfs.
pub struct Contents<'a> {
    /// Host executables, placed at the same paths with their shared libraries; debug info is
    /// stripped from the copies (the guest has no use for it and it would triple the size).
    pub programs: &'a [PathBuf],
    /// The `/init` script (PID 1).
    pub init: &'a str,
    /// Where stripped copies are made.
    pub scratch: &'a Path,
}

/// Writes the initramfs to `out` and returns its size in bytes.
pub fn build(out: &Path, contents: &Contents<'_>) -> Result<u64, Error> {
    let Contents { programs, init, scratch } = contents;
    fs::create_dir_all(scratch).map_err(|source| io(scratch, source))?;
    let mut files = BTreeSet::new();
    let busybox = PathBuf::from(BUSYBOX);
    for program in std::iter::once(&busybox).chain(programs.iter()) {
        if !program.is_file() {
            return Err(Error::Vm(format!("{} is missing", program.display())));
        }
        files.insert(program.clone());
        files.extend(shared_libraries(program)?);
    }
    let file = File::create(out).map_err(|source| io(out, source))?;
    let mut archive = Archive::new(BufWriter::new(file));
    let write = |error: std::io::Error| io(out, error);
    let mut directories = BTreeSet::new();
    for dir in DIRECTORIES {
        add_directory(&mut archive, &mut directories, Path::new(dir)).map_err(write)?;
    }
    archive.char_device("/dev/console", 0o600, 5, 1).map_err(write)?;
    archive.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n").map_err(write)?;
    archive.file("/etc/group", 0o644, b"root:x:0:\n").map_err(write)?;
    archive.file("/init", 0o755, init.as_bytes()).map_err(write)?;
    for path in &files {
        if let Some(parent) = path.parent() {
            add_directory(&mut archive, &mut directories, parent).map_err(write)?;
        }
        let is_program = programs.contains(path);
        let data = if is_program { stripped(path, scratch)? } else { read(path)? };
        archive.file(&path.to_string_lossy(), 0o755, &data).map_err(write)?;
    }
    archive.finish().map_err(write)?;
    fs::metadata(out).map(|meta| meta.len()).map_err(|source| io(out, source))
}

/// `path` and every ancestor not yet in the archive, outermost first.
fn add_directory<W: std::io::Write>(
    archive: &mut Archive<W>,
    done: &mut BTreeSet<PathBuf>,
    path: &Path,
) -> std::io::Result<()> {
    let mut missing: Vec<&Path> = path.ancestors().filter(|dir| *dir != Path::new("/") && !done.contains(*dir)).collect();
    missing.reverse();
    for dir in missing {
        archive.directory(&dir.to_string_lossy(), 0o755)?;
        done.insert(dir.to_owned());
    }
    Ok(())
}

/// A copy of `program` without debug sections, read back; the original if `objcopy` fails.
fn stripped(program: &Path, scratch: &Path) -> Result<Vec<u8>, Error> {
    let name = program.file_name().unwrap_or_default();
    let copy = scratch.join(name);
    let status = cmd::output(Command::new("objcopy").arg("--strip-debug").arg(program).arg(&copy))?;
    if !status.status.success() {
        eprintln!(
            "vm: cannot strip {} ({}); packing it whole",
            program.display(),
            String::from_utf8_lossy(&status.stderr).trim()
        );
        return read(program);
    }
    let data = read(&copy)?;
    let _ = fs::remove_file(&copy);
    Ok(data)
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::File { path: path.to_owned(), source }
}
