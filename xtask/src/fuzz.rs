//! `cargo xtask fuzz [--seconds N]`: the property-based fuzz targets of `monitor/src/fuzz.rs`,
//! each for N seconds (60 by default; the test suite gives each 2).

use std::{ffi::OsString, process::ExitCode};

use crate::{cmd, error::Error, setup, workspace};

pub fn main(args: &[OsString]) -> Result<ExitCode, Error> {
    let seconds = match args {
        [] => "60".to_owned(),
        [flag, seconds] if flag == "--seconds" => {
            let text = seconds.to_string_lossy();
            match text.parse::<f64>() {
                Ok(value) if value > 0.0 => text.into_owned(),
                _ => return Err(Error::Usage(format!("--seconds {text:?} is not a positive number"))),
            }
        }
        _ => return Err(Error::Usage("`fuzz` takes only `--seconds N`".to_owned())),
    };
    setup::ensure(setup::Needs::Build)?;
    let mut cargo = workspace::cargo();
    cargo
        .args(["test", "-p", "monitor", "--lib", "fuzz::", "--", "--nocapture", "--test-threads", "1"])
        .env("CREDWATCH_FUZZ_SECONDS", seconds);
    cmd::status(&mut cargo).map(cmd::exit_code)
}
