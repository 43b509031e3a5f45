//! Developer tasks for credwatch, run as `cargo xtask <command>` (alias in .cargo/config.toml).

mod bench;
mod build;
mod cmd;
mod error;
mod fuzz;
mod host;
mod leaks;
mod libraries;
mod mutants;
mod package;
mod run;
mod setup;
mod test;
mod vm;
mod workspace;

use std::{ffi::OsString, process::ExitCode};

use error::Error;

const HELP: &str = "\
Developer tasks for credwatch.

Usage: cargo xtask <command> [args]

Commands:
  setup              Install what building the eBPF programs and the tests need (Debian or
                     Ubuntu; root for apt; no recommended packages): rustc-web, cargo-web,
                     libstd-rust-web-dev-bpf, llvm-22-dev, clang; for the tests and the
                     benchmark bpftool, qemu-system-x86, busybox-static, prometheus,
                     prometheus-alertmanager, bpftrace; for the package's image buildah,
                     podman, runc; bpf-linker 0.13.0 built against LLVM 22; the rustup
                     toolchain `debian-bpf` linked to /usr. Steps already done are skipped.
                     `build`, `run` and `fuzz` install only the first list, `package` the
                     first and the last.
  build [--release]  Set up if anything is missing, then `cargo build -p monitor`.
  run [-- ARGS...]   Set up if needed, build in release, then run `credwatch run ARGS...` as
                     root (through `sudo -E` when not root); exits with its status.
  test [ARGS...]     Set up if needed, then `cargo test --workspace --exclude monitor-ebpf
                     --no-fail-fast ARGS...` (needs root), then `vm-test`, then `bench
                     --quick --out target/bench-quick.md`, then `package` with its checks
                     (dpkg -i, doctor from the installed path, purge; doctor in the image).
                     Fails if any fails. Prints the wall time.
  vm-test [ARGS...]  Boot Debian's cloud kernel under QEMU (KVM if it works, else TCG), once
                     with BPF LSM active and once without (the LSM and fmod_ret tiers), and
                     run the refusal suite (tests/refusals.rs) in it each time, ARGS passed
                     to the test binary; exits with the guests' verdicts. The kernel package is
                     downloaded once with apt-get and cached in target/vm/. Limited to 10
                     minutes (CREDWATCH_VM_TIMEOUT_SECS); CREDWATCH_VM_ACCEL=kvm|tcg forces
                     the accelerator.
  bench [--quick] [--out PATH]
                     Build credwatch in release and measure, as root: syscall overhead against
                     no monitor, empty programs on the same hooks and a bpftrace peer; engine
                     throughput; event-to-decision latency; the daemon's memory and CPU; an
                     event storm's accounting. Writes a Markdown report to docs/PERFORMANCE.md
                     (or PATH). --quick: a scaled-down smoke run on the debug build, under a
                     minute; `test` ends with it.
  package [--out DIR] [--check]
                     Build the Debian package (binary, systemd unit, /etc/credwatch config,
                     man pages, completions) and the OCI image credwatch:VERSION from it with
                     buildah, saved as an OCI archive too, into DIR (default target/package).
                     --check (root): install it with dpkg -i, run doctor from /usr/bin and in
                     the image, purge it; `test` runs this.
  fuzz [--seconds N] Run each libFuzzer target of fuzz/ (ring buffer records, config files,
                     task API bodies and routes, recordings, catalogue patterns; properties in
                     monitor/src/fuzz.rs) for N seconds (default 60), on the stable toolchain
                     without a sanitizer; installs cargo-fuzz 0.13.2 if missing. Then replays
                     the corpus and the regressions, as `cargo test` does. New inputs land in
                     fuzz/corpus/TARGET/: keep them with `cargo fuzz cmin -s none -a TARGET --
                     -use_counters=0` (edges only, which keeps the corpus small) and commit, or
                     drop them with `git clean -f fuzz/corpus`. A crash lands in
                     fuzz/regressions/TARGET/ and fails the replay until it is fixed.
  mutants [NAME]     Break the product on purpose, one way at a time (the table in
                     xtask/src/mutants.rs: skip the file guard's kill, allow every open, match
                     no TLS credential, leave hooks attached, let a full map fail open, keep a
                     partial allow list, never write cgroup.kill), run the tests meant to catch
                     each, restore the source; fails if any survives. A catch counts only if
                     the test fails printing the text the table expects, and every test must
                     pass on the unmutated source first. NAME picks the mutations whose name
                     contains it. Root; the mutated files must have no uncommitted changes.
  help               Print this text.
";

fn main() -> ExitCode {
    setup::add_cargo_bin_to_path();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    };
    let result = match command.to_str().unwrap_or_default() {
        "setup" if rest.is_empty() => setup::main(),
        "setup" => Err(Error::Usage("`setup` takes no arguments".to_owned())),
        "build" => build::main(rest),
        "run" => run::main(rest),
        "test" => test::main(rest),
        "bench" => bench::main(rest),
        "fuzz" => fuzz::main(rest),
        "mutants" => mutants::main(rest),
        // The benchmark's load processes; not for people, so not in the help.
        "bench-load" => Ok(bench::load::main(rest)),
        "vm-test" => vm::main(rest),
        "package" => package::main(rest),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(Error::Usage(format!(
            "unknown command `{}`",
            command.to_string_lossy()
        ))),
    };
    result.unwrap_or_else(|err| {
        eprintln!("xtask: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            eprintln!("  caused by: {cause}");
            source = cause.source();
        }
        if matches!(err, Error::Usage(_)) {
            eprintln!("see `cargo xtask help`");
            ExitCode::from(2)
        } else {
            ExitCode::FAILURE
        }
    })
}
