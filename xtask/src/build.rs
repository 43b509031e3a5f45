//! `cargo xtask build [--release]`: the userspace binary, with the eBPF programs built by
//! `monitor/build.rs` and embedded in it.

use std::{
    ffi::OsString,
    process::{ExitCode, ExitStatus},
};

use crate::{cmd, error::Error, setup, workspace};

pub fn main(args: &[OsString]) -> Result<ExitCode, Error> {
    let release = match args {
        [] => false,
        [flag] if flag == "--release" => true,
        _ => return Err(Error::Usage("`build` takes only `--release`".to_owned())),
    };
    setup::ensure(setup::Needs::Build)?;
    cargo_build(release).map(cmd::exit_code)
}

pub fn cargo_build(release: bool) -> Result<ExitStatus, Error> {
    let mut cargo = workspace::cargo();
    cargo.args(["build", "-p", "monitor"]);
    if release {
        cargo.arg("--release");
    }
    cmd::status(&mut cargo)
}
