//! `cargo xtask package [--out DIR]`: the Debian package of credwatch and the OCI image built
//! from it, both with tools from Debian's archive (`dpkg-deb`, `buildah`).
//!
//! The package holds `/usr/bin/credwatch`, the systemd unit, `/etc/credwatch/credwatch.toml` (a
//! conffile), and man pages and bash, zsh and fish completions that the binary generates from its
//! own CLI definition. The image is the package's files on an empty root with the shared libraries
//! the binary links (from this host's Debian packages), named `credwatch:VERSION`, the name
//! `deploy/kubernetes/credwatch.yaml` runs; it is also saved as an OCI archive beside the package.
//! [`verify`] (run by `cargo xtask test`) installs the package with `dpkg -i`, runs `credwatch
//! doctor` from the installed path, purges it, and runs `doctor` inside the image.

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use crate::{build, cmd, error::Error, libraries::shared_libraries, setup, workspace};

/// The image's name; its tag is the package's version.
pub const IMAGE: &str = "credwatch";
const PACKAGE: &str = "credwatch";
const CONFFILE: &str = "/etc/credwatch/credwatch.toml";

/// Podman's defaults raise RLIMIT_NOFILE and NPROC in the container, which a sandboxed host may
/// forbid even to root: the image's test run keeps the host's limits.
const CONTAINERS_CONF: &str = "[containers]\ndefault_ulimits = []\n";

/// What the package holds beside the binary, the unit and the config: (path in the package,
/// `credwatch completions` argument).
const COMPLETIONS: [(&str, &str); 3] = [
    ("usr/share/bash-completion/completions/credwatch", "bash"),
    ("usr/share/zsh/vendor-completions/_credwatch", "zsh"),
    ("usr/share/fish/vendor_completions.d/credwatch.fish", "fish"),
];

pub fn main(args: &[OsString]) -> Result<ExitCode, Error> {
    let mut out = default_out();
    let mut check = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--out") => out = args.next().map(PathBuf::from).ok_or_else(|| Error::Usage("`--out` needs a directory".to_owned()))?,
            Some("--check") => check = true,
            _ => return Err(Error::Usage(format!("`package` takes `--out DIR` and `--check`, not `{}`", arg.to_string_lossy()))),
        }
    }
    setup::ensure(setup::Needs::Package)?;
    let built = build(&out)?;
    eprintln!("package: {}", built.deb.display());
    eprintln!("package: image {} (OCI archive {})", built.image, built.archive.display());
    if check {
        verify(&built)?;
        eprintln!("package: checked: installed, doctor ran from /usr/bin and in the image, purged");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn default_out() -> PathBuf {
    workspace::target_dir().join("package")
}

/// What [`build`] made.
pub struct Built {
    pub deb: PathBuf,
    /// `credwatch:VERSION`, in the host's container storage.
    pub image: String,
    /// The image as an OCI archive.
    pub archive: PathBuf,
    out: PathBuf,
}

/// Builds the release binary, the package and the image into `out`.
pub fn build(out: &Path) -> Result<Built, Error> {
    if !build::cargo_build(true)?.success() {
        return Err(Error::Package("the release build failed".to_owned()));
    }
    let binary = workspace::target_dir().join("release").join("credwatch");
    let version = version(&binary)?;
    let arch = text(Command::new("dpkg").arg("--print-architecture"))?;
    fs::create_dir_all(out).map_err(|source| file_error(out, source))?;
    let root = fresh_dir(&out.join("deb-root"))?;
    stage(&binary, &root)?;
    write_control(&root, &version, &arch, &binary)?;
    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    cmd::checked(Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&root).arg(&deb))?;
    let image = format!("{IMAGE}:{version}");
    let archive = out.join(format!("{IMAGE}_{version}_{arch}.oci.tar"));
    build_image(&deb, &out.join("image-root"), &image, &archive)?;
    Ok(Built { deb, image, archive, out: out.to_owned() })
}

/// The package's files under `root`.
fn stage(binary: &Path, root: &Path) -> Result<(), Error> {
    let deploy = workspace::root().join("deploy");
    install(binary, &root.join("usr/bin/credwatch"), 0o755)?;
    install(&deploy.join("credwatch.service"), &root.join("lib/systemd/system/credwatch.service"), 0o644)?;
    install(&deploy.join("credwatch.toml"), &root.join(CONFFILE.trim_start_matches('/')), 0o600)?;
    let man = root.join("usr/share/man/man1");
    cmd::checked(Command::new(binary).arg("manpages").arg(&man))?;
    for page in read_dir(&man)? {
        cmd::checked(Command::new("gzip").args(["-9n"]).arg(&page))?;
    }
    for (path, shell) in COMPLETIONS {
        let script = cmd::output(Command::new(binary).args(["completions", shell]))?;
        if !script.status.success() || script.stdout.is_empty() {
            return Err(Error::Package(format!("`credwatch completions {shell}` printed no script")));
        }
        write(&root.join(path), &script.stdout, 0o644)?;
    }
    let copyright = format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: credwatch\n\n\
         Files: *\nLicense: {}\n",
        workspace_license()?
    );
    write(&root.join("usr/share/doc/credwatch/copyright"), copyright.as_bytes(), 0o644)
}

/// `DEBIAN/control` and `DEBIAN/conffiles`; the dependencies are the packages that own the
/// libraries the binary links.
fn write_control(root: &Path, version: &str, arch: &str, binary: &Path) -> Result<(), Error> {
    let mut depends = Vec::new();
    for library in shared_libraries(binary)? {
        let owner = cmd::output(Command::new("dpkg").arg("-S").arg(&library))?;
        let owner = String::from_utf8_lossy(&owner.stdout);
        // `libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6`
        if let Some(package) = owner.lines().next().and_then(|line| line.split(':').next()) {
            if !depends.contains(&package.to_owned()) {
                depends.push(package.to_owned());
            }
        }
    }
    let size = text(Command::new("du").args(["-sk"]).arg(root))?;
    let size = size.split_whitespace().next().unwrap_or("0");
    let control = format!(
        "Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: credwatch developers <credwatch@localhost>\n\
         Installed-Size: {size}\nDepends: {}\nSection: admin\nPriority: optional\n\
         Description: stops AI agents from reusing credentials (eBPF runtime monitor)\n \
         credwatch binds each secret an agent task is granted to that task, watches secret files,\n \
         environments, harvests and destinations in the kernel, and kills or refuses reuse by\n \
         another task, after the task ended or towards an unexpected host. Enable it with\n \
         `systemctl enable --now credwatch` after reviewing /etc/credwatch/credwatch.toml.\n",
        depends.join(", ")
    );
    write(&root.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    write(&root.join("DEBIAN/conffiles"), format!("{CONFFILE}\n").as_bytes(), 0o644)
}

/// The package's files on an empty root, with the binary's shared libraries, committed as
/// `image` and saved to `archive`.
fn build_image(deb: &Path, root: &Path, image: &str, archive: &Path) -> Result<(), Error> {
    let root = fresh_dir(root)?;
    cmd::checked(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    let binary = root.join("usr/bin/credwatch");
    for library in shared_libraries(&binary)? {
        let inside = root.join(library.strip_prefix("/").unwrap_or(&library));
        install(&library, &inside, 0o755)?;
    }
    for dir in ["tmp", "run", "var/lib/credwatch", "var/log/credwatch", "proc", "sys", "dev", "etc"] {
        fs::create_dir_all(root.join(dir)).map_err(|source| file_error(&root.join(dir), source))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).map_err(|source| file_error(&root, source))?;
    write(&root.join("etc/passwd"), b"root:x:0:0:root:/root:/usr/sbin/nologin\n", 0o644)?;
    let container = text(Command::new("buildah").args(["from", "scratch"]))?;
    let configured = cmd::checked(Command::new("buildah").args(["add", &container]).arg(&root).arg("/")).and_then(|()| {
        cmd::checked(Command::new("buildah").args([
            "config",
            "--entrypoint",
            r#"["/usr/bin/credwatch"]"#,
            "--cmd",
            r#"["run", "--config", "/etc/credwatch/credwatch.toml"]"#,
            "--label",
            &format!("org.opencontainers.image.version={}", image.rsplit(':').next().unwrap_or_default()),
            "--label",
            "org.opencontainers.image.title=credwatch",
            &container,
        ]))
    });
    let committed = configured.and_then(|()| cmd::checked(Command::new("buildah").args(["commit", "--rm", &container, image])));
    if committed.is_err() {
        let _ = cmd::output(Command::new("buildah").args(["rm", &container]));
    }
    committed?;
    let _ = fs::remove_file(archive);
    cmd::checked(Command::new("buildah").args(["push", image]).arg(format!("oci-archive:{}:{image}", archive.display())))
}

/// Installs the package with `dpkg -i`, runs `credwatch doctor` from the installed path and
/// purges it; then runs `doctor` inside the image. Refuses to touch a credwatch package this
/// test did not install.
pub fn verify(built: &Built) -> Result<(), Error> {
    let installed = text(Command::new("dpkg-query").args(["-W", "-f", "${Status}", PACKAGE])).unwrap_or_default();
    if installed.contains("installed") && !installed.contains("not-installed") {
        return Err(Error::Package(format!(
            "a {PACKAGE} package is installed on this machine; the package test installs and purges its own: remove it first"
        )));
    }
    cmd::checked(Command::new("dpkg").arg("-i").arg(&built.deb))?;
    let doctor = check_doctor(Command::new("/usr/bin/credwatch").arg("doctor"), "the installed credwatch");
    let listed = text(Command::new("dpkg").args(["-L", PACKAGE]));
    let purged = cmd::checked(Command::new("dpkg").args(["--purge", PACKAGE]));
    doctor?;
    let listed = listed?;
    let expected = [
        "/usr/bin/credwatch",
        "/lib/systemd/system/credwatch.service",
        CONFFILE,
        "/usr/share/man/man1/credwatch.1.gz",
        "/usr/share/man/man1/credwatch-task-exec.1.gz",
    ];
    // Every listed path is absolute; the completions' are relative to the root.
    for path in expected.into_iter().chain(COMPLETIONS.iter().map(|&(path, _)| path)) {
        if !listed.lines().any(|line| line.ends_with(path)) {
            return Err(Error::Package(format!("the installed package has no {path}")));
        }
    }
    purged?;
    let conf = built.out.join("containers.conf");
    write(&conf, CONTAINERS_CONF.as_bytes(), 0o644)?;
    let mut run = Command::new("podman");
    // As the DaemonSet runs it: the host's pids (the kernel's programs see those) and cgroups.
    run.env("CONTAINERS_CONF", &conf).args(["run", "--rm", "--privileged", "--pid=host", "--volume=/sys/fs/cgroup:/sys/fs/cgroup"]);
    // runc copes with hybrid cgroup hierarchies, which crun refuses.
    if text(Command::new("sh").args(["-c", "command -v runc"])).is_ok_and(|path| !path.is_empty()) {
        run.args(["--runtime", "runc"]);
    }
    run.args([&built.image, "doctor"]);
    check_doctor(&mut run, "credwatch in the image")
}

/// Runs a `credwatch doctor`, which must succeed and pick a tier.
fn check_doctor(command: &mut Command, what: &str) -> Result<(), Error> {
    eprintln!("$ {}", cmd::cmdline(command));
    let output = cmd::output(command)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tier = stdout.lines().find(|line| line.starts_with("tier "));
    match (output.status.success(), tier) {
        (true, Some(tier)) => {
            eprintln!("package: {what}: {}", tier.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
            Ok(())
        }
        _ => Err(Error::Package(format!(
            "{what}: `doctor` failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))),
    }
}

/// `credwatch --version` says `credwatch 0.1.0`.
fn version(binary: &Path) -> Result<String, Error> {
    let said = text(Command::new(binary).arg("--version"))?;
    said.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| Error::Package(format!("`credwatch --version` said {said:?}")))
}

/// The workspace's `license` field.
fn workspace_license() -> Result<String, Error> {
    let manifest = workspace::root().join("Cargo.toml");
    let text = fs::read_to_string(&manifest).map_err(|source| file_error(&manifest, source))?;
    text.lines()
        .find_map(|line| line.strip_prefix("license = ").map(|value| value.trim_matches('"').to_owned()))
        .ok_or_else(|| Error::Package(format!("{} has no license", manifest.display())))
}

/// A query's trimmed stdout; an error unless it exits 0.
fn text(command: &mut Command) -> Result<String, Error> {
    let output = cmd::output(command.stderr(Stdio::piped()))?;
    if !output.status.success() {
        return Err(Error::Failed {
            cmdline: cmd::cmdline(command),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn fresh_dir(dir: &Path) -> Result<PathBuf, Error> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|source| file_error(dir, source))?;
    }
    fs::create_dir_all(dir).map_err(|source| file_error(dir, source))?;
    Ok(dir.to_owned())
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = fs::read_dir(dir).map_err(|source| file_error(dir, source))?;
    entries.map(|entry| entry.map(|entry| entry.path()).map_err(|source| file_error(dir, source))).collect()
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<(), Error> {
    let data = fs::read(from).map_err(|source| file_error(from, source))?;
    write(to, &data, mode)
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| file_error(parent, source))?;
    }
    fs::write(path, data).map_err(|source| file_error(path, source))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| file_error(path, source))
}

fn file_error(path: &Path, source: std::io::Error) -> Error {
    Error::File { path: path.to_owned(), source }
}
