//! `cargo xtask test [ARGS…]`: the whole suite, unit and integration, as root.

use std::{
    ffi::OsString,
    process::ExitCode,
    time::{Duration, Instant},
};

use crate::{cmd, error::Error, leaks, setup, workspace};

pub fn main(args: &[OsString]) -> Result<ExitCode, Error> {
    if !cmd::is_root() {
        return Err(Error::NotRoot {
            what: "`cargo xtask test`".to_owned(),
            hint: "the integration tests load eBPF programs and run the daemon; run it as root, \
                   e.g. `sudo -E env PATH=\"$PATH\" cargo xtask test`"
                .to_owned(),
        });
    }
    let started = Instant::now();
    setup::ensure()?;
    // monitor-ebpf builds only for the BPF target; monitor/build.rs builds it for the tests.
    let mut cargo = workspace::cargo();
    cargo
        .args([
            "test",
            "--workspace",
            "--exclude",
            "monitor-ebpf",
            "--no-fail-fast",
        ])
        .args(args)
        // Passing tests' output too, so that the leak scan sees everything the suite printed.
        .args(["--", "--show-output"]);
    let (status, leaked) = leaks::run_scanning(&mut cargo)?;
    let outcome = match (status.success(), leaked) {
        (true, 0) => "passed".to_owned(),
        (_, 0) => format!("failed ({status})"),
        (_, leaked) => format!("failed: {leaked} output lines held a planted secret value ({status})"),
    };
    let status = if leaked > 0 { failure() } else { status };
    eprintln!(
        "test: {outcome}, wall time {}",
        wall_time(started.elapsed())
    );
    Ok(cmd::exit_code(status))
}

/// An exit status that is not success, for a run whose tests passed but leaked.
fn failure() -> std::process::ExitStatus {
    std::os::unix::process::ExitStatusExt::from_raw(1 << 8)
}

fn wall_time(elapsed: Duration) -> String {
    let tenths = elapsed.as_millis() / 100;
    let (minutes, tenths) = (tenths / 600, tenths % 600);
    let seconds = format!("{}.{}s", tenths / 10, tenths % 10);
    if minutes == 0 {
        seconds
    } else {
        format!("{minutes}m {seconds}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times() {
        assert_eq!(wall_time(Duration::from_millis(4_560)), "4.5s");
        assert_eq!(wall_time(Duration::from_millis(83_400)), "1m 23.4s");
        assert_eq!(wall_time(Duration::from_mins(10)), "10m 0.0s");
    }
}
