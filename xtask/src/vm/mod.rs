//! `cargo xtask vm-test [ARGS…]`: the refusal suite (`tests/refusals.rs`) inside a VM whose
//! kernel runs the security-hook tiers, for hosts that refuse them: booted once with `bpf` in the
//! active LSMs (the LSM tier) and once without, so that LSM programs are refused and fmod_ret
//! programs work (the fmod_ret tier).
//!
//! Debian's cloud kernel (through apt, cached in `target/vm/kernel/`) boots under QEMU with an
//! initramfs holding busybox, `credwatch`, the test binary and their libraries; `/init` mounts
//! what the sensors need, runs the suite with `CREDWATCH_VM=1` and prints a verdict that this
//! side reads from the serial console. KVM is used when a probe guest boots with it, TCG
//! otherwise. Nothing here needs root on the host: the guest's init is root in the guest.

mod cpio;
mod initramfs;
mod kernel;
mod qemu;

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use self::qemu::{Accel, Boot, Verdict};
use crate::{cmd, error::Error, setup, workspace};

/// The integration test target that runs in the guest.
const TEST_TARGET: &str = "refusals";
/// Hard limit on one boot, tests included (about 160 s on an idle host, several times that under
/// load: the guest CPU is emulated); `CREDWATCH_VM_TIMEOUT_SECS` overrides it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1200);
/// Guest memory: the initramfs (about 40 MB once unpacked) lives in it, next to the daemons.
const MEMORY_MB: u32 = 1024;

/// What PID 1 of a test or bench guest does first: mount what the sensors need.
const PRELUDE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root TMPDIR=/tmp CREDWATCH_VM=1 CREDWATCH_VM_TIER="$credwatch_tier" RUST_BACKTRACE=1 NO_COLOR=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# No tmpfs over /tmp: the root file system is already in memory and writable, and the programs
# under test sit at their host paths, which may be under /tmp (a checkout there).
ip link set lo up
echo "credwatch-vm: kernel $(uname -r), active LSMs $(cat /sys/kernel/security/lsm), tier $credwatch_tier"
cd /tmp
"#;

/// The rest of PID 1 of the test guest: run the refusal suite on the tier this boot is for
/// (`credwatch_tier=` on the kernel command line), print a verdict, power off. `@TEST@` (the test
/// binary), `@TARGET@` (its name) and `@NONCE@` are filled in; `@ARGS@` are the extra test
/// arguments, shell-quoted.
const TESTS: &str = r#"started=$(cut -d' ' -f1 /proc/uptime)
'@TEST@' --include-ignored --test-threads=1 --show-output @ARGS@
status=$?
echo "credwatch-vm: tests took $(awk "BEGIN { print $(cut -d' ' -f1 /proc/uptime) - $started }")s (uptime $(cut -d' ' -f1 /proc/uptime)s)"
if [ "$status" -eq 0 ]; then
  echo "CREDWATCH-VM-VERDICT @NONCE@ pass"
else
  echo "CREDWATCH-VM-VERDICT @NONCE@ fail (@TARGET@ exited $status)"
fi
poweroff -f
"#;

/// The rest of PID 1 of the bench guest: @ROUNDS@ rounds of an open/close loop of @OPENS@
/// iterations (`@XTASK@ bench-load`, a process in no task) with no monitor, under
/// `@CREDWATCH@ run`, and with no monitor again; one `BENCH_MARKER` line per round with the three
/// CPU times per iteration.
const BENCH: &str = r#"mkdir -p /tmp/bench/home /tmp/bench/state
echo plain > /tmp/bench/plain
printf '[catalogue]\nhomes = ["/tmp/bench/home"]\n' > /tmp/bench/credwatch.toml
load() { echo | '@XTASK@' bench-load open /tmp/bench/plain @OPENS@ | awk '$1 == "ns_per_op" { print $4 }'; }
fail() { echo "CREDWATCH-VM-VERDICT @NONCE@ fail ($1)"; tail -5 /tmp/bench/daemon.log; poweroff -f; }
for round in $(seq 1 @ROUNDS@); do
  before=$(load)
  '@CREDWATCH@' run --config /tmp/bench/credwatch.toml --state-dir /tmp/bench/state --socket /tmp/bench/api.sock 2>/tmp/bench/daemon.log &
  daemon=$!
  waited=0
  until '@CREDWATCH@' status --socket /tmp/bench/api.sock >/dev/null 2>&1; do
    waited=$((waited + 1))
    [ "$waited" -le 120 ] || fail "credwatch run did not answer within 120 s"
    sleep 1
  done
  with=$(load)
  kill -TERM "$daemon"
  wait "$daemon" || fail "credwatch run exited with $? after SIGTERM"
  after=$(load)
  echo "@MARKER@ $credwatch_tier $round $before $with $after"
done
echo "CREDWATCH-VM-VERDICT @NONCE@ pass"
poweroff -f
"#;

/// The line of the bench guest that carries one round.
const BENCH_MARKER: &str = "CREDWATCH-VM-BENCH";

/// PID 1 of the KVM probe guest: prove that the guest runs, nothing more.
const PROBE_INIT: &str = "#!/bin/busybox sh\n/bin/busybox echo \"CREDWATCH-VM-VERDICT @NONCE@ pass\"\n/bin/busybox poweroff -f\n";

pub fn main(args: &[OsString]) -> Result<ExitCode, Error> {
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    let started = Instant::now();
    setup::ensure(setup::Needs::Test)?;
    let runs = run(args)?;
    let failed = runs.iter().filter(|run| !run.passed()).count();
    for run in &runs {
        report(run, started.elapsed());
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A configuration of the guest kernel, and the tier doctor must pick in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    /// `bpf` in `lsm=`: BPF LSM programs run.
    Lsm,
    /// The same kernel without `bpf` in `lsm=`: LSM programs are refused, fmod_ret works.
    FmodRet,
}

impl Config {
    pub const ALL: [Self; 2] = [Self::Lsm, Self::FmodRet];

    /// The tier's name, as doctor says it.
    pub const fn tier(self) -> &'static str {
        match self {
            Self::Lsm => "lsm",
            Self::FmodRet => "fmod_ret",
        }
    }

    fn kernel_args(self) -> &'static str {
        match self {
            Self::Lsm => "lsm=lockdown,capability,landlock,bpf credwatch_tier=lsm",
            Self::FmodRet => "lsm=lockdown,capability,landlock credwatch_tier=fmod_ret",
        }
    }
}

/// What a VM run found; `cargo xtask test` reports it next to the host suite.
pub struct VmRun {
    pub config: Config,
    pub verdict: Verdict,
    /// Console lines that held a planted secret value: a failure even if the tests passed.
    pub leaked: usize,
    /// QEMU's run time: boot, tests and power-off.
    pub boot_and_tests: Duration,
    pub console_log: PathBuf,
}

impl VmRun {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass && self.leaked == 0
    }
}

/// Prints the outcome of one boot.
pub fn report(run: &VmRun, wall: Duration) {
    let VmRun { config, verdict, leaked, boot_and_tests, console_log } = run;
    let what = match verdict {
        Verdict::Pass if *leaked > 0 => format!("FAILED: {leaked} console lines held a planted secret value"),
        Verdict::Pass => "passed".to_owned(),
        Verdict::Fail(why) => format!("FAILED: {why}"),
        Verdict::Missing(why) => format!("FAILED, the VM gave no verdict: {why}"),
    };
    eprintln!(
        "vm-test: {} tier {what}; QEMU ran {:.1}s, wall time {:.1}s; console log {}",
        config.tier(),
        boot_and_tests.as_secs_f64(),
        wall.as_secs_f64(),
        console_log.display()
    );
}

/// Builds everything, boots the guest in each configuration, one after the other, and returns
/// what it said each time. Errors are reasons the VM could not start at all (no QEMU, no kernel, a
/// build failure): they fail the run, never skip it.
pub fn run(test_args: &[OsString]) -> Result<Vec<VmRun>, Error> {
    require_qemu()?;
    let test_binary = build_test_binary()?;
    let credwatch = workspace::target_dir().join("debug").join("credwatch");
    let init = format!("{PRELUDE}{TESTS}")
        .replace("@TEST@", &test_binary.to_string_lossy())
        .replace("@ARGS@", &quote_args(test_args))
        .replace("@TARGET@", TEST_TARGET);
    let boots = boot_each("test", &init, &[test_binary, credwatch])?;
    Ok(boots
        .into_iter()
        .map(|(config, outcome, console_log)| VmRun {
            config,
            verdict: outcome.verdict,
            leaked: outcome.leaked,
            boot_and_tests: outcome.elapsed,
            console_log,
        })
        .collect())
}

/// One tier's rounds of the open/close loop in the guest: CPU nanoseconds per iteration with no
/// monitor before, under credwatch, and with no monitor after.
pub struct TierBench {
    pub config: Config,
    pub rounds: Vec<[f64; 3]>,
}

/// `cargo xtask bench`'s guest part: the open/close loop on each security-hook tier, `credwatch`
/// being the binary under test. QEMU's CPU is emulated (TCG here): only ratios within one boot
/// mean anything.
pub fn bench(credwatch: &Path, opens: u64, rounds: usize) -> Result<Vec<TierBench>, Error> {
    require_qemu()?;
    let xtask = env::current_exe().map_err(|source| Error::File { path: PathBuf::from("/proc/self/exe"), source })?;
    let init = format!("{PRELUDE}{BENCH}")
        .replace("@XTASK@", &xtask.to_string_lossy())
        .replace("@CREDWATCH@", &credwatch.to_string_lossy())
        .replace("@OPENS@", &opens.to_string())
        .replace("@ROUNDS@", &rounds.to_string())
        .replace("@MARKER@", BENCH_MARKER);
    let boots = boot_each("bench", &init, &[xtask, credwatch.to_owned()])?;
    boots
        .into_iter()
        .map(|(config, outcome, console_log)| {
            if outcome.verdict != Verdict::Pass || outcome.leaked > 0 {
                return Err(Error::Vm(format!(
                    "the {} tier's bench guest failed: {:?}; console log {}",
                    config.tier(),
                    outcome.verdict,
                    console_log.display()
                )));
            }
            let console = std::fs::read_to_string(&console_log).map_err(|source| Error::File { path: console_log.clone(), source })?;
            let measured = bench_rounds(&console);
            if measured.len() != rounds {
                return Err(Error::Vm(format!(
                    "the {} tier's bench guest printed {} of {rounds} rounds; console log {}",
                    config.tier(),
                    measured.len(),
                    console_log.display()
                )));
            }
            Ok(TierBench { config, rounds: measured })
        })
        .collect()
}

/// Packs `init` and `programs` into `target/vm/<name>.cpio` and boots it once per [`Config`]:
/// each boot's outcome and console log.
fn boot_each(name: &str, init: &str, programs: &[PathBuf]) -> Result<Vec<(Config, qemu::Outcome, PathBuf)>, Error> {
    let vm = workspace::target_dir().join("vm");
    std::fs::create_dir_all(&vm).map_err(|source| Error::File { path: vm.clone(), source })?;
    let kernel = kernel::ensure(&vm.join("kernel"))?;
    eprintln!("vm: kernel {} ({})", kernel.package, kernel.vmlinuz.display());
    let nonce = nonce()?;
    let init = init.replace("@NONCE@", &nonce);
    let initramfs = vm.join(format!("{name}.cpio"));
    let scratch = vm.join("scratch");
    let size = initramfs::build(&initramfs, &initramfs::Contents { programs, init: &init, scratch: &scratch })?;
    eprintln!("vm: {} ({:.1} MB)", initramfs.display(), size as f64 / 1e6);
    let accel = choose_accel(&kernel.vmlinuz, &vm, &nonce)?;
    let timeout = timeout()?;
    let mut boots = Vec::new();
    for config in Config::ALL {
        eprintln!("vm: booting for the {} tier", config.tier());
        let console_log = vm.join(format!("{name}-console-{}.log", config.tier()));
        let outcome = qemu::boot(&Boot {
            kernel: &kernel.vmlinuz,
            initramfs: &initramfs,
            accel,
            memory_mb: MEMORY_MB,
            timeout,
            nonce: &nonce,
            console_log: &console_log,
            echo: true,
            kernel_args: config.kernel_args(),
        })?;
        boots.push((config, outcome, console_log));
    }
    Ok(boots)
}

/// The rounds the bench guest printed: `<marker> <tier> <round> <before> <with> <after>`.
fn bench_rounds(console: &str) -> Vec<[f64; 3]> {
    console
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(BENCH_MARKER)?;
            let fields: Vec<f64> = rest.split_whitespace().skip(2).map_while(|field| field.parse().ok()).collect();
            <[f64; 3]>::try_from(fields).ok()
        })
        .collect()
}

/// `cargo test --no-run` of the guest's test target; returns its executable. `credwatch` is
/// built with it (integration tests get the binary's path at compile time).
fn build_test_binary() -> Result<PathBuf, Error> {
    let mut cargo = workspace::cargo();
    cargo
        .args(["test", "-p", "monitor", "--test", TEST_TARGET, "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("$ {}", cmd::cmdline(&cargo));
    let output = cargo.output().map_err(|source| Error::Io { cmdline: cmd::cmdline(&cargo), source })?;
    if !output.status.success() {
        return Err(Error::Failed { cmdline: cmd::cmdline(&cargo), status: output.status, stderr: String::new() });
    }
    test_executable(&String::from_utf8_lossy(&output.stdout), TEST_TARGET)
        .ok_or_else(|| Error::Vm(format!("cargo built no executable for test target {TEST_TARGET}")))
}

/// From cargo's JSON messages: the `executable` of the test artifact named `name`.
fn test_executable(messages: &str, name: &str) -> Option<PathBuf> {
    let target_name = format!("\"name\":\"{name}\"");
    messages
        .lines()
        .filter(|line| line.contains("\"reason\":\"compiler-artifact\"") && line.contains(&target_name))
        .filter(|line| line.contains("\"test\":true"))
        .find_map(|line| {
            let (_, rest) = line.split_once("\"executable\":\"")?;
            let (path, _) = rest.split_once('"')?;
            Some(PathBuf::from(path))
        })
}

/// `CREDWATCH_VM_ACCEL=kvm|tcg` forces one; otherwise KVM if a probe guest boots with it.
fn choose_accel(kernel: &Path, vm: &Path, nonce: &str) -> Result<Accel, Error> {
    match env::var("CREDWATCH_VM_ACCEL").unwrap_or_default().as_str() {
        "kvm" => return Ok(Accel::Kvm),
        "tcg" => return Ok(Accel::Tcg),
        "" | "auto" => {}
        other => return Err(Error::Usage(format!("CREDWATCH_VM_ACCEL={other:?}: expected kvm, tcg or auto"))),
    }
    let probe = vm.join("probe.cpio");
    let init = PROBE_INIT.replace("@NONCE@", nonce);
    initramfs::build(&probe, &initramfs::Contents { programs: &[], init: &init, scratch: &vm.join("scratch") })?;
    let (works, why) = qemu::kvm_works(kernel, &probe, nonce, &vm.join("kvm-probe.log"))?;
    let accel = if works { Accel::Kvm } else { Accel::Tcg };
    eprintln!("vm: using {accel}: KVM {} ({why})", if works { "works" } else { "does not work" });
    Ok(accel)
}

fn timeout() -> Result<Duration, Error> {
    match env::var("CREDWATCH_VM_TIMEOUT_SECS") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| Error::Usage(format!("CREDWATCH_VM_TIMEOUT_SECS={text:?} is not a number of seconds"))),
    }
}

/// 16 random bytes in hex, so that no test output can fake the verdict line.
fn nonce() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    let path = Path::new("/dev/urandom");
    std::fs::File::open(path)
        .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut bytes))
        .map_err(|source| Error::File { path: path.to_owned(), source })?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Each argument in single quotes, for the init script.
fn quote_args(args: &[OsString]) -> String {
    args.iter()
        .map(|arg| format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `qemu-system-x86_64` must be installed; `setup` installs it with the other packages.
fn require_qemu() -> Result<(), Error> {
    let found = cmd::output(Command::new(qemu::QEMU).arg("--version"));
    match found {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err(Error::Vm(format!("{} is not installed (`cargo xtask setup` installs qemu-system-x86)", qemu::QEMU))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_executable_comes_from_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"monitor","test":true},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"lsm_tier","test":true},"profile":{},"executable":"/w/target/debug/deps/lsm_tier-0123","fresh":true}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(test_executable(messages, "lsm_tier"), Some(PathBuf::from("/w/target/debug/deps/lsm_tier-0123")));
        assert_eq!(test_executable(messages, "rules"), None);
    }

    #[test]
    fn init_arguments_are_quoted() {
        let args = [OsString::from("denied"), OsString::from("it's")];
        assert_eq!(quote_args(&args), r"'denied' 'it'\''s'");
    }

    #[test]
    fn bench_rounds_come_from_their_marker_lines() {
        let console = "vm| noise\nvm| CREDWATCH-VM-BENCH fmod_ret 1 1000.5 1100 990\nvm| CREDWATCH-VM-BENCH fmod_ret 2 1000 oops 990\n";
        assert_eq!(bench_rounds(console), [[1000.5, 1100.0, 990.0]]);
    }
}
