//! `cargo xtask setup`: installs what building the eBPF crate needs, each step only when its
//! check fails. `monitor/build.rs` (aya-build) compiles `monitor-ebpf` with the rustup toolchain
//! `debian-bpf`, i.e. Debian's rustc, which ships a prebuilt `core` for bpfel-unknown-none, and
//! links it with bpf-linker, which must use the same LLVM (22) as that rustc.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use crate::{cmd, error::Error, host, workspace};

/// What building and running credwatch need: rustc 1.96 + `core` for the BPF target, LLVM 22 for
/// bpf-linker to build against (and its linker, clang).
const BUILD_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf", "llvm-22-dev", "clang"];
/// What only the tests and the benchmark need: bpftool, QEMU and a static busybox for the
/// LSM-tier test VM, Prometheus and Alertmanager (with promtool and amtool) for the operations
/// tests, bpftrace for the benchmark's peer; Python, curl, wget and openssl for the TLS tests and
/// the HTTPS loop (real clients on OpenSSL and GnuTLS, a certificate made on the spot); Node.js,
/// Go, and Python's grpcio and websockets for the egress tests' clients (tests/data/egress: Node's
/// `https`, Go's net/http, a gRPC call, a WebSocket); procps, psmisc and strace for the process
/// listers' tests (`ps`, `top`, `pgrep`, `pstree`, a traced `ps`).
const TEST_PACKAGES: &[&str] = &[
    "bpftool",
    "qemu-system-x86",
    "busybox-static",
    "prometheus",
    "prometheus-alertmanager",
    "bpftrace",
    "python3",
    "curl",
    "wget",
    "openssl",
    "nodejs",
    "golang-go",
    "python3-grpcio",
    "python3-websockets",
    "procps",
    "psmisc",
    "strace",
];

/// What the package and its image need: `buildah` builds the image; `podman` (with `runc`, which
/// copes with hybrid cgroup hierarchies) runs it in the test.
const PACKAGE_PACKAGES: &[&str] = &["buildah", "podman", "runc"];

/// What a command needs installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// `build`, `run`, `fuzz`: the toolchain only.
    Build,
    /// `package`: the toolchain and the image tools.
    Package,
    /// `test`, `bench`, `vm-test`, `setup`: the toolchain, the test tools and the image tools
    /// (`test` builds and checks the package).
    Test,
}

impl Needs {
    fn packages(self) -> Vec<&'static str> {
        match self {
            Self::Build => BUILD_PACKAGES.to_vec(),
            Self::Package => [BUILD_PACKAGES, PACKAGE_PACKAGES].concat(),
            Self::Test => [BUILD_PACKAGES, TEST_PACKAGES, PACKAGE_PACKAGES].concat(),
        }
    }
}
const LLVM_MAJOR: u32 = 22;
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const TOOLCHAIN: &str = "debian-bpf";
const TOOLCHAIN_DIR: &str = "/usr";

const APT_STEP: &str = "apt packages";
const LINKER_STEP: &str = "bpf-linker";
const TOOLCHAIN_STEP: &str = "rustup toolchain debian-bpf";

const MANUAL_STEPS: &str = "  1. Install rustc and cargo 1.96 with a prebuilt `core` for bpfel-unknown-none, LLVM 22 \
(development files and shared libLLVM), bpftool, clang, QEMU, a static busybox, Prometheus, \
Alertmanager, bpftrace, Python with grpcio and websockets, curl, wget, openssl, Node.js, Go, \
procps, psmisc, strace, buildah, podman and runc. On Debian 12:
       apt-get update
       apt-get install rustc-web cargo-web libstd-rust-web-dev-bpf llvm-22-dev bpftool clang \\
         qemu-system-x86 busybox-static prometheus prometheus-alertmanager bpftrace \\
         python3 curl wget openssl nodejs golang-go python3-grpcio python3-websockets \\
         procps psmisc strace buildah podman runc
  2. Build bpf-linker against that LLVM:
       LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version 0.13.0 --locked --no-default-features --features llvm-22
  3. Register that rustc as the toolchain aya-build uses (the directory whose bin/ holds it):
       rustup toolchain link debian-bpf /usr";

/// `cargo xtask setup`: every step, one status line each.
pub fn main() -> Result<ExitCode, Error> {
    install(Needs::Test)
}

fn install(needs: Needs) -> Result<ExitCode, Error> {
    require_debian()?;
    step(APT_STEP, || apt_packages(needs))?;
    step(LINKER_STEP, bpf_linker)?;
    step(TOOLCHAIN_STEP, toolchain)?;
    Ok(ExitCode::SUCCESS)
}

/// Before build, run and test: the setup of what `needs` asks only if a quick check (no apt-get
/// update, no network) finds something missing; silent otherwise.
pub fn ensure(needs: Needs) -> Result<(), Error> {
    // A check that cannot even run counts as missing: the full setup then says which step it was.
    let linker = linker_state();
    let toolchain = toolchain_state();
    let complete = if host::is_debian_like(&os_release()) {
        missing_packages(needs).is_ok_and(|missing| missing.is_empty())
            && matches!(linker, Ok(Linker::Ready(_)))
            && matches!(toolchain, Ok(Toolchain::Linked))
    } else {
        // Set up by hand (MANUAL_STEPS): accept any linker and link target, apt cannot help.
        matches!(linker, Ok(Linker::Ready(_) | Linker::WrongLlvm { .. }))
            && matches!(toolchain, Ok(Toolchain::Linked | Toolchain::Elsewhere(_)))
    };
    if complete {
        return Ok(());
    }
    eprintln!("setup: something is missing; installing what this command needs");
    install(needs).map(drop)
}

/// bpf-linker is installed to cargo's bin directory, and rustc finds it through PATH, which on a
/// fresh machine or under sudo may lack that directory. Called once at start, before any thread.
pub fn add_cargo_bin_to_path() {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    let Some(bin) = cargo_home.map(|home| home.join("bin")) else {
        return;
    };
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    if !dirs.contains(&bin) {
        dirs.push(bin);
        if let Ok(joined) = env::join_paths(dirs) {
            env::set_var("PATH", joined);
        }
    }
}

fn step(name: &'static str, run: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
    run().map_err(|source| Error::Step {
        step: name,
        source: Box::new(source),
    })
}

fn report(step: &str, what: &str) {
    eprintln!("setup: {step}: {what}");
}

fn os_release() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default()
}

fn require_debian() -> Result<(), Error> {
    let os_release = os_release();
    if host::is_debian_like(&os_release) {
        Ok(())
    } else {
        Err(Error::UnsupportedDistro {
            name: host::os_name(&os_release),
            manual: MANUAL_STEPS,
        })
    }
}

fn apt_packages(needs: Needs) -> Result<(), Error> {
    let missing = missing_packages(needs)?;
    if missing.is_empty() {
        report(APT_STEP, "already present");
        return Ok(());
    }
    let list = missing.join(" ");
    if !cmd::is_root() {
        return Err(Error::NotRoot {
            what: format!("installing {list}"),
            hint: "run `cargo xtask setup` as root, or `apt-get install` them yourself".to_owned(),
        });
    }
    report(APT_STEP, &format!("installing {list} ..."));
    cmd::checked(apt_get().arg("update"))?;
    // Recommends would bring QEMU's and Prometheus's GUI and documentation packages.
    cmd::checked(apt_get().args(["install", "-y", "--no-install-recommends"]).args(&missing))?;
    let still_missing = missing_packages(needs)?;
    if !still_missing.is_empty() {
        return Err(Error::NotFixed(format!(
            "apt-get install succeeded but dpkg still lists {} as not installed",
            still_missing.join(" ")
        )));
    }
    report(APT_STEP, "done");
    Ok(())
}

fn apt_get() -> Command {
    let mut apt_get = Command::new("apt-get");
    apt_get.env("DEBIAN_FRONTEND", "noninteractive");
    apt_get
}

fn missing_packages(needs: Needs) -> Result<Vec<&'static str>, Error> {
    let packages = needs.packages();
    let query = cmd::output(
        Command::new("dpkg-query")
            .arg("-W")
            .arg("-f=${Package}\t${Status}\n")
            .args(&packages),
    )?;
    Ok(host::missing_packages(
        &packages,
        &String::from_utf8_lossy(&query.stdout),
    ))
}

enum Linker {
    Ready(PathBuf),
    Missing,
    /// Found first in PATH, but not linked against libLLVM 22 (`found` is the LLVM it uses, if
    /// any shared one): it could not read the bitcode Debian's rustc emits.
    WrongLlvm {
        path: PathBuf,
        found: Option<u32>,
    },
}

fn bpf_linker() -> Result<(), Error> {
    let what = match linker_state()? {
        Linker::Ready(path) => {
            let found = format!("already present ({}, LLVM {LLVM_MAJOR})", path.display());
            report(LINKER_STEP, &found);
            return Ok(());
        }
        Linker::Missing => "installing".to_owned(),
        Linker::WrongLlvm { path, found } => {
            let uses = found.map_or("no shared libLLVM".to_owned(), |major| {
                format!("LLVM {major}")
            });
            format!("rebuilding (the one at {} uses {uses})", path.display())
        }
    };
    let target = format!("{BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR}, a few minutes");
    report(LINKER_STEP, &format!("{what}: {target} ..."));
    cmd::checked(
        Command::new(workspace::cargo_program())
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ]),
    )?;
    match linker_state()? {
        Linker::Ready(_) => {
            report(LINKER_STEP, "done");
            Ok(())
        }
        Linker::Missing => Err(Error::NotFixed(
            "`cargo install` succeeded but bpf-linker is not in PATH nor in cargo's bin directory"
                .to_owned(),
        )),
        Linker::WrongLlvm { path, .. } => Err(Error::NotFixed(format!(
            "{} comes first in PATH and is still not linked against LLVM {LLVM_MAJOR}; remove it \
             or put cargo's bin directory before it",
            path.display()
        ))),
    }
}

fn linker_state() -> Result<Linker, Error> {
    let Some(path) = find_in_path("bpf-linker") else {
        return Ok(Linker::Missing);
    };
    let ldd = cmd::output(Command::new("ldd").arg(&path))?;
    Ok(
        match host::linked_llvm_major(&String::from_utf8_lossy(&ldd.stdout)) {
            Some(LLVM_MAJOR) => Linker::Ready(path),
            found => Linker::WrongLlvm { path, found },
        },
    )
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| {
            path.metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

#[derive(Debug, PartialEq, Eq)]
enum Toolchain {
    Linked,
    Missing,
    Elsewhere(PathBuf),
}

fn toolchain() -> Result<(), Error> {
    match toolchain_state()? {
        Toolchain::Linked => {
            report(
                TOOLCHAIN_STEP,
                &format!("already present ({TOOLCHAIN_DIR})"),
            );
            return Ok(());
        }
        Toolchain::Missing => report(TOOLCHAIN_STEP, "installing ..."),
        // `rustup toolchain link` replaces an existing link.
        Toolchain::Elsewhere(dir) => {
            report(
                TOOLCHAIN_STEP,
                &format!("installing (relinking from {}) ...", dir.display()),
            );
        }
    }
    cmd::checked(Command::new("rustup").args(["toolchain", "link", TOOLCHAIN, TOOLCHAIN_DIR]))?;
    if toolchain_state()? != Toolchain::Linked {
        return Err(Error::NotFixed(format!(
            "`rustup toolchain link` succeeded but `rustup toolchain list -v` does not show {TOOLCHAIN} at {TOOLCHAIN_DIR}"
        )));
    }
    report(TOOLCHAIN_STEP, "done");
    Ok(())
}

fn toolchain_state() -> Result<Toolchain, Error> {
    let mut list = Command::new("rustup");
    list.args(["toolchain", "list", "-v"]);
    let output = cmd::output(&mut list)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        return Err(Error::Failed {
            cmdline: cmd::cmdline(&list),
            status: output.status,
            stderr,
        });
    }
    Ok(
        match host::toolchain_dir(&String::from_utf8_lossy(&output.stdout), TOOLCHAIN) {
            Some(dir) if dir == Path::new(TOOLCHAIN_DIR) => Toolchain::Linked,
            Some(dir) => Toolchain::Elsewhere(dir.to_owned()),
            None => Toolchain::Missing,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_needs_none_of_the_test_tools() {
        let (build, test) = (Needs::Build.packages(), Needs::Test.packages());
        for tool in TEST_PACKAGES {
            assert!(!build.contains(tool), "{tool} is installed by build and run");
            assert!(test.contains(tool), "{tool} is missing from test");
        }
        assert!(BUILD_PACKAGES.iter().all(|package| test.contains(package)));
        let package = Needs::Package.packages();
        for tool in PACKAGE_PACKAGES {
            assert!(!build.contains(tool), "{tool} is installed by build and run");
            assert!(package.contains(tool) && test.contains(tool), "{tool} is missing from package or test");
        }
        assert!(TEST_PACKAGES.iter().all(|tool| !package.contains(tool)), "package needs none of the test tools");
    }
}
