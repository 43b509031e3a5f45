//! `cargo xtask fuzz [--seconds N]`: each libFuzzer target of `fuzz/` (cargo-fuzz) for N seconds
//! (60 by default) on its committed corpus, a crash kept in `fuzz/regressions/TARGET/`; then the
//! replay of the corpus and the regressions that `cargo test` runs in CI.

use std::{ffi::OsString, fs, path::Path, process::{Command, ExitCode}};

use crate::{cmd, error::Error, setup, workspace};

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// No sanitizer: ASan needs `-Zsanitizer`, so RUSTC_BOOTSTRAP=1 on the stable toolchain, which
/// also makes aya-build compile the eBPF programs with `-Z build-std`, and their toolchain has
/// no sources for that. The parsers are safe Rust; debug assertions (`-a`) catch overflows.
const BUILD_FLAGS: [&str; 3] = ["-s", "none", "-a"];

pub fn main(args: &[OsString]) -> Result<ExitCode, Error> {
    let seconds = match args {
        [] => 60,
        [flag, seconds] if flag == "--seconds" => match seconds.to_string_lossy().parse::<u64>() {
            Ok(value) if value > 0 => value,
            _ => return Err(Error::Usage(format!("--seconds {seconds:?} is not a positive whole number"))),
        },
        _ => return Err(Error::Usage("`fuzz` takes only `--seconds N`".to_owned())),
    };
    // The fuzz crate builds monitor, whose build script compiles the eBPF programs.
    setup::ensure(setup::Needs::Build)?;
    install_cargo_fuzz()?;
    let fuzz_dir = workspace::root().join("fuzz");
    let targets = targets(&fuzz_dir.join("fuzz_targets"))?;
    cmd::checked(cargo_fuzz("build").args(BUILD_FLAGS))?;
    let mut crashed = Vec::new();
    for target in &targets {
        let regressions = fuzz_dir.join("regressions").join(target);
        fs::create_dir_all(&regressions).map_err(|source| Error::File { path: regressions.clone(), source })?;
        let mut run = cargo_fuzz("run");
        run.args(BUILD_FLAGS).arg(target).args([
            "--".to_owned(),
            format!("-max_total_time={seconds}"),
            format!("-artifact_prefix={}/", regressions.display()),
            "-print_final_stats=1".to_owned(),
        ]);
        if !cmd::status(&mut run)?.success() {
            crashed.push(target.as_str());
        }
        // The replay refuses an empty directory: it would check nothing.
        if is_empty(&regressions)? {
            fs::remove_dir(&regressions).map_err(|source| Error::File { path: regressions.clone(), source })?;
        }
    }
    let replayed = cmd::status(workspace::cargo().args(["test", "-p", "monitor", "--lib", "fuzz::"]))?;
    if !crashed.is_empty() {
        eprintln!("fuzz: {} crashed; the inputs are in fuzz/regressions/", crashed.join(", "));
    }
    Ok(if crashed.is_empty() && replayed.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `cargo install`s the pinned cargo-fuzz unless that version is what `cargo fuzz` runs.
fn install_cargo_fuzz() -> Result<(), Error> {
    let version = cmd::output(workspace::cargo().args(["fuzz", "--version"]))?;
    if String::from_utf8_lossy(&version.stdout).trim() == format!("cargo-fuzz {CARGO_FUZZ_VERSION}") {
        return Ok(());
    }
    cmd::checked(workspace::cargo().args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked"]))
}

fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cargo = workspace::cargo();
    cargo.args(["fuzz", subcommand]);
    cargo
}

/// The targets' names: the files of `fuzz/fuzz_targets/`, sorted.
fn targets(dir: &Path) -> Result<Vec<String>, Error> {
    let error = |source| Error::File { path: dir.to_owned(), source };
    let mut targets = Vec::new();
    for entry in fs::read_dir(dir).map_err(error)? {
        let path = entry.map_err(error)?.path();
        if path.extension().is_some_and(|extension| extension == "rs") {
            targets.extend(path.file_stem().map(|stem| stem.to_string_lossy().into_owned()));
        }
    }
    targets.sort();
    Ok(targets)
}

fn is_empty(dir: &Path) -> Result<bool, Error> {
    let mut entries = fs::read_dir(dir).map_err(|source| Error::File { path: dir.to_owned(), source })?;
    Ok(entries.next().is_none())
}
