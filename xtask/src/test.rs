//! `cargo xtask test [ARGS…]`: the whole suite, unit and integration, as root, then the LSM-tier
//! suite in the test VM (`vm-test`), which this host's kernel may not be able to run, then the
//! benchmark's smoke run (`bench --quick`).

use std::{
    ffi::OsString,
    process::ExitCode,
    time::{Duration, Instant},
};

use crate::{bench, cmd, error::Error, leaks, package, setup, vm, workspace};

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
    setup::ensure(setup::Needs::Test)?;
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
        "test: host suite {outcome}, wall time {}",
        wall_time(started.elapsed())
    );
    // The security-hook tiers' suite runs in a VM (this host's kernel may refuse their
    // programs), booted for the LSM tier and for the fmod_ret tier, after a failed host suite
    // too. A VM that cannot start fails the run with its reason, never skips.
    let vm_started = Instant::now();
    let vm_passed = match vm::run(&[]) {
        Ok(runs) => {
            for run in &runs {
                vm::report(run, vm_started.elapsed());
            }
            runs.iter().all(vm::VmRun::passed)
        }
        Err(error) => {
            print_error("the VM suite could not run", &error);
            false
        }
    };
    let bench_passed = bench_smoke_run();
    let package_passed = package_check();
    let verdict = |passed| if passed { "passed" } else { "failed" };
    eprintln!(
        "test: host suite {outcome}, VM suite {}, bench smoke run {}, package {}, wall time {}",
        verdict(vm_passed),
        verdict(bench_passed),
        verdict(package_passed),
        wall_time(started.elapsed())
    );
    let status = if status.success() && !(vm_passed && bench_passed && package_passed) { failure() } else { status };
    Ok(cmd::exit_code(status))
}

/// The benchmark's smoke run, so that it cannot rot; after failed suites too.
fn bench_smoke_run() -> bool {
    let out = workspace::target_dir().join("bench-quick.md");
    match bench::main(&["--quick".into(), "--out".into(), out.into()]) {
        Ok(code) => code == ExitCode::SUCCESS,
        Err(error) => {
            print_error("the benchmark's smoke run failed", &error);
            false
        }
    }
}

/// The Debian package and its image: built, installed with `dpkg -i` (then purged), and
/// `credwatch doctor` run from the installed path and inside the image.
fn package_check() -> bool {
    match package::build(&package::default_out()).and_then(|built| package::verify(&built)) {
        Ok(()) => true,
        Err(error) => {
            print_error("the package check failed", &error);
            false
        }
    }
}

/// `what: error` and the chain of its causes, one per line.
fn print_error(what: &str, error: &dyn std::error::Error) {
    eprintln!("test: {what}: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
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
