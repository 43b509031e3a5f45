//! `cargo xtask run [-- ARGS…]`: builds in release and runs `credwatch run ARGS…` as root.

use std::{
    ffi::OsString,
    process::{Command, ExitCode},
};

use crate::{build, cmd, error::Error, setup, workspace};

pub fn main(args: &[OsString]) -> Result<ExitCode, Error> {
    // The `cargo xtask` alias already ends in `--`, so a `--` typed by the user arrives here.
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    setup::ensure(setup::Needs::Build)?;
    let built = build::cargo_build(true)?;
    if !built.success() {
        return Ok(cmd::exit_code(built));
    }
    let binary = workspace::target_dir().join("release").join("credwatch");
    let mut daemon = if cmd::is_root() {
        Command::new(&binary)
    } else {
        eprintln!("run: credwatch loads eBPF programs and needs root; running it through sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&binary);
        sudo
    };
    daemon.arg("run").args(args);
    cmd::status(&mut daemon).map(cmd::exit_code)
}
